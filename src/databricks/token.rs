//! Pure parts of the OAuth flow: the host-metadata, OIDC-discovery and
//! token replies, how long a token may be used, and [`AuthError`], which
//! classifies every failure once: transient (retry later) or not (fix the
//! configuration). No message carries a secret or a server's free text.

use std::time::Duration;

use serde::Deserialize;

/// The SDK refreshes a token 40 s before it expires (`oauth.py::Token.expired`:
/// "Azure Databricks rejects tokens that expire in 30 seconds or less").
pub const EXPIRY_MARGIN: Duration = Duration::from_secs(40);

/// What went wrong getting a credential.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    /// No answer (connect error, reset, timeout).
    #[error("no answer from the Databricks {what}: {detail} (transient: will be retried)")]
    Unreachable { what: &'static str, detail: String },
    /// 429 or 5xx.
    #[error("the Databricks {what} answered {status} (transient: will be retried)")]
    Unavailable { what: &'static str, status: u16 },
    /// A 4xx other than 429: wrong credentials, scope or grant, or no OAuth
    /// on this host.
    #[error("the Databricks {what} answered {status} {code} (not retryable: check DATABRICKS_HOST and the service principal's DATABRICKS_CLIENT_ID / DATABRICKS_CLIENT_SECRET)")]
    Rejected {
        what: &'static str,
        status: u16,
        code: String,
    },
    /// A reply that is not what the protocol says (wrong host, a proxy page).
    #[error("unexpected reply from the Databricks {what}: {detail} (not retryable: check DATABRICKS_HOST)")]
    BadReply { what: &'static str, detail: String },
}

impl AuthError {
    /// Whether trying again later may succeed.
    pub fn is_transient(&self) -> bool {
        matches!(
            self,
            AuthError::Unreachable { .. } | AuthError::Unavailable { .. }
        )
    }
}

/// The endpoints' names in messages.
pub const TOKEN_ENDPOINT: &str = "token endpoint";
pub const DISCOVERY: &str = "OIDC discovery endpoint";
pub const HOST_METADATA: &str = "host metadata endpoint";

/// `GET /.well-known/databricks-config`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
pub struct HostMetadata {
    #[serde(default)]
    pub oidc_endpoint: Option<String>,
    #[serde(default, deserialize_with = "string_or_number")]
    pub workspace_id: Option<String>,
}

fn string_or_number<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    Ok(match Option::<serde_json::Value>::deserialize(d)? {
        Some(serde_json::Value::String(s)) if !s.is_empty() => Some(s),
        Some(serde_json::Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}

pub fn host_metadata(body: &[u8]) -> Result<HostMetadata, AuthError> {
    serde_json::from_slice(body).map_err(|_| AuthError::BadReply {
        what: HOST_METADATA,
        detail: "not a JSON object".into(),
    })
}

/// The discovery document URL: `<oidc_endpoint>/.well-known/oauth-authorization-server`
/// from host metadata, else `<host>/oidc/.well-known/oauth-authorization-server`
/// (`config.py::_resolve_host_metadata`, `oauth.py::get_workspace_endpoints`).
pub fn discovery_url(host: &str, meta: Option<&HostMetadata>) -> String {
    match meta
        .and_then(|m| m.oidc_endpoint.as_deref())
        .filter(|s| !s.is_empty())
    {
        Some(oidc) => format!(
            "{}/.well-known/oauth-authorization-server",
            oidc.trim_end_matches('/')
        ),
        None => format!("{host}/oidc/.well-known/oauth-authorization-server"),
    }
}

/// `token_endpoint` from the discovery document.
pub fn token_endpoint(body: &[u8]) -> Result<String, AuthError> {
    #[derive(Deserialize)]
    struct Discovery {
        token_endpoint: String,
    }
    serde_json::from_slice::<Discovery>(body)
        .map(|d| d.token_endpoint)
        .map_err(|_| AuthError::BadReply {
            what: DISCOVERY,
            detail: "no token_endpoint in the discovery document".into(),
        })
}

/// A granted token.
#[derive(Clone, PartialEq, Eq)]
pub struct Granted {
    pub access_token: String,
    pub token_type: String,
    pub expires_in: Duration,
}

impl std::fmt::Debug for Granted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Granted")
            .field("access_token", &"<redacted>")
            .field("token_type", &self.token_type)
            .field("expires_in", &self.expires_in)
            .finish()
    }
}

/// The token endpoint's 2xx reply.
pub fn granted(body: &[u8]) -> Result<Granted, AuthError> {
    #[derive(Deserialize)]
    struct Reply {
        access_token: String,
        #[serde(default)]
        token_type: Option<String>,
        expires_in: serde_json::Value,
    }
    let bad = |detail: &str| AuthError::BadReply {
        what: TOKEN_ENDPOINT,
        detail: detail.into(),
    };
    let r: Reply = serde_json::from_slice(body)
        .map_err(|_| bad("no access_token / expires_in in the reply"))?;
    let secs = match &r.expires_in {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.parse().ok(),
        _ => None,
    }
    .ok_or_else(|| bad("expires_in is not a number of seconds"))?;
    if r.access_token.is_empty() {
        return Err(bad("empty access_token"));
    }
    Ok(Granted {
        access_token: r.access_token,
        token_type: r
            .token_type
            .filter(|t| !t.is_empty())
            .unwrap_or_else(|| "Bearer".into()),
        expires_in: Duration::from_secs(secs),
    })
}

/// A non-2xx answer from one of the auth endpoints.
pub fn refused(what: &'static str, status: u16, body: &[u8]) -> AuthError {
    if status == 429 || status >= 500 {
        return AuthError::Unavailable { what, status };
    }
    // Only the OAuth error code, and only if it looks like one: the
    // description is free text and is not repeated.
    let code = serde_json::from_slice::<serde_json::Value>(body)
        .ok()
        .and_then(|v| {
            v.get("error")
                .or_else(|| v.get("errorCode"))
                .and_then(|e| e.as_str())
                .map(str::to_string)
        })
        .filter(|c| c.len() <= 64 && c.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
        .unwrap_or_default();
    AuthError::Rejected { what, status, code }
}

/// The SDK's cap on the stale window (`Refreshable._MAX_STALE_DURATION`).
pub const MAX_STALE: Duration = Duration::from_secs(20 * 60);

/// How long a token granted for `expires_in` may be handed out: until
/// [`EXPIRY_MARGIN`] before it expires, or a quarter of its lifetime before
/// for tokens shorter than 160 s (so a short-lived token is used at all).
pub fn usable_for(expires_in: Duration) -> Duration {
    expires_in - EXPIRY_MARGIN.min(expires_in / 4)
}

/// When a token becomes stale and the next caller should replace it:
/// `min(lifetime/2, 20 min)` before it expires (`Refreshable._update_token`).
pub fn refresh_after(expires_in: Duration) -> Duration {
    expires_in - MAX_STALE.min(expires_in / 2)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_reply_and_lifetime() {
        let g = granted(br#"{"access_token":"eyJ.x","token_type":"Bearer","expires_in":3600,"scope":"all-apis"}"#).unwrap();
        assert_eq!(g.expires_in, Duration::from_secs(3600));
        assert_eq!(usable_for(g.expires_in), Duration::from_secs(3560));
        assert_eq!(refresh_after(g.expires_in), Duration::from_secs(2400));
        assert_eq!(usable_for(Duration::from_secs(4)), Duration::from_secs(3));
        assert_eq!(
            refresh_after(Duration::from_secs(4)),
            Duration::from_secs(2)
        );
        for s in [1, 2, 60, 100, 300, 3600, 86_400] {
            let t = Duration::from_secs(s);
            assert!(
                refresh_after(t) <= usable_for(t) && usable_for(t) < t,
                "{s}"
            );
        }
        assert!(!format!("{g:?}").contains("eyJ.x"));
        assert!(granted(br#"{"access_token":"a","expires_in":"60"}"#).is_ok());
        assert!(matches!(
            granted(b"<html>"),
            Err(AuthError::BadReply { .. })
        ));
    }

    #[test]
    fn refusals_are_classified() {
        let e = refused(
            TOKEN_ENDPOINT,
            401,
            br#"{"error":"invalid_client","error_description":"secret abc is wrong"}"#,
        );
        assert!(!e.is_transient());
        assert!(
            e.to_string().contains("invalid_client") && !e.to_string().contains("abc"),
            "{e}"
        );
        assert!(refused(TOKEN_ENDPOINT, 503, b"").is_transient());
        assert!(refused(TOKEN_ENDPOINT, 429, b"").is_transient());
        let e = refused(TOKEN_ENDPOINT, 400, br#"{"error":"a b c <script>"}"#);
        assert!(!e.to_string().contains("script"), "{e}");
    }

    #[test]
    fn discovery_follows_host_metadata() {
        let m =
            host_metadata(br#"{"oidc_endpoint":"https://h/oidc/","workspace_id":123}"#).unwrap();
        assert_eq!(m.workspace_id.as_deref(), Some("123"));
        assert_eq!(
            discovery_url("https://h", Some(&m)),
            "https://h/oidc/.well-known/oauth-authorization-server"
        );
        assert_eq!(
            discovery_url("https://h", None),
            "https://h/oidc/.well-known/oauth-authorization-server"
        );
        assert_eq!(
            token_endpoint(br#"{"token_endpoint":"https://h/oidc/v1/token"}"#).unwrap(),
            "https://h/oidc/v1/token"
        );
    }
}
