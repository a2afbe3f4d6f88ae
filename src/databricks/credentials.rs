//! [`Credentials`]: the `Authorization` header for calls to one workspace,
//! and its workspace id for `x-databricks-org-id`.
//!
//! - PAT: `Bearer <pat>`, always the same.
//! - OAuth M2M (as `databricks-sdk`'s `oauth_service_principal`): host
//!   metadata `GET /.well-known/databricks-config` gives the OIDC root (else
//!   `<host>/oidc`), its discovery document the token endpoint (both cached
//!   for the life of the value); `POST <token_endpoint>` with
//!   `grant_type=client_credentials&scope=all-apis` and the client id/secret
//!   as HTTP Basic grants a token that is cached. As the SDK's `Refreshable`:
//!   once *stale* — `min(lifetime/2, 20 min)` before expiry — the next caller
//!   fetches a new one; if that fails the stale token is still handed out
//!   (another try 10 s later) until it *expires* for our purposes,
//!   [`token::EXPIRY_MARGIN`] (40 s, the SDK's; a quarter of the lifetime for
//!   tokens under 160 s) before its real expiry — never after. One fetch at a
//!   time: concurrent callers wait for it and share its result, success or
//!   error. [`Credentials::invalidate_token`] after a 401 drops the token the
//!   401 was for, so the next call fetches one new token however many calls
//!   failed with the old one.
//!
//! Every header value is marked sensitive; no error carries a secret.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use http::{header, HeaderValue, Method, Request};
use http_body_util::Full;
use tokio::time::Instant;

use super::config::{AuthConfig, WorkspaceConfig};
use super::token::{self, AuthError, HostMetadata};
use crate::sinks::http::{call, HttpClient};

/// After host metadata could not be fetched, ask again no sooner than this.
const METADATA_RETRY: Duration = Duration::from_secs(30);
/// After a stale token could not be refreshed, try again no sooner than this.
const STALE_RETRY: Duration = Duration::from_secs(10);

/// Cheap to clone; clones share the token cache.
#[derive(Clone)]
pub struct Credentials {
    inner: Arc<Inner>,
}

struct Inner {
    host: String,
    kind: Kind,
    client: HttpClient,
    timeout: Duration,
    state: Mutex<State>,
    /// Held while one caller fetches a token (single flight).
    fetching: tokio::sync::Mutex<()>,
}

enum Kind {
    Pat(HeaderValue),
    OAuth { basic: HeaderValue },
}

#[derive(Default)]
struct State {
    token: Option<Cached>,
    token_endpoint: Option<String>,
    metadata: Option<HostMetadata>,
    metadata_retry_at: Option<Instant>,
    /// Fetch attempts so far, and how the last one ended.
    attempts: u64,
    last_error: Option<AuthError>,
    grants: u64,
}

struct Cached {
    header: HeaderValue,
    /// From here on, the next caller tries to replace it (stale).
    refresh_at: Instant,
    /// Never handed out from here on (expired for our purposes).
    usable_until: Instant,
}

fn sensitive(s: &str, what: &str) -> Result<HeaderValue, String> {
    let mut v = HeaderValue::from_str(s)
        .map_err(|_| format!("{what} contains characters not allowed in an HTTP header"))?;
    v.set_sensitive(true);
    Ok(v)
}

impl Credentials {
    /// Credentials for `cfg`, calling the workspace with `client`, each call
    /// (metadata, discovery, token) limited to `timeout`. Fails only when a
    /// secret cannot be an HTTP header value.
    pub fn new(
        cfg: &WorkspaceConfig,
        client: HttpClient,
        timeout: Duration,
    ) -> Result<Credentials, String> {
        let kind = match &cfg.auth {
            AuthConfig::Pat(pat) => Kind::Pat(sensitive(
                &format!("Bearer {}", pat.expose()),
                "the Databricks token",
            )?),
            AuthConfig::OAuthM2M {
                client_id,
                client_secret,
            } => {
                let pair = format!("{client_id}:{}", client_secret.expose());
                let b64 = base64::engine::general_purpose::STANDARD.encode(pair);
                Kind::OAuth {
                    basic: sensitive(
                        &format!("Basic {b64}"),
                        "the Databricks client id or secret",
                    )?,
                }
            }
        };
        Ok(Credentials {
            inner: Arc::new(Inner {
                host: cfg.host.clone(),
                kind,
                client,
                timeout,
                state: Mutex::new(State::default()),
                fetching: tokio::sync::Mutex::new(()),
            }),
        })
    }

    /// The workspace URL, e.g. `https://adb-1.azuredatabricks.net` (no trailing slash).
    pub fn host(&self) -> &str {
        &self.inner.host
    }

    /// Whether a 401 can be cured by a new token (OAuth), or not (a PAT).
    pub fn is_refreshable(&self) -> bool {
        matches!(self.inner.kind, Kind::OAuth { .. })
    }

    /// How many tokens the token endpoint granted to this value (for metrics and tests).
    pub fn grants(&self) -> u64 {
        self.state().grants
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The `Authorization` header value for the next call.
    pub async fn authorization(&self) -> Result<HeaderValue, AuthError> {
        if let Kind::Pat(h) = &self.inner.kind {
            return Ok(h.clone());
        }
        let seen = {
            let st = self.state();
            if let Some(h) = usable(&st) {
                return Ok(h);
            }
            st.attempts
        };
        let _one = match self.inner.fetching.try_lock() {
            Ok(guard) => guard,
            Err(_) => {
                // Another caller is refreshing: a stale but valid token will do meanwhile.
                if let Some(h) = still_valid(&self.state()) {
                    return Ok(h);
                }
                self.inner.fetching.lock().await
            }
        };
        {
            let st = self.state();
            if let Some(h) = usable(&st) {
                return Ok(h);
            }
            // A fetch ran while this caller waited and failed: share its error.
            if st.attempts != seen {
                if let Some(e) = &st.last_error {
                    return Err(e.clone());
                }
            }
        }
        let result = self.fetch_token().await;
        let mut st = self.state();
        st.attempts += 1;
        match result {
            Ok(cached) => {
                let h = cached.header.clone();
                st.token = Some(cached);
                st.last_error = None;
                st.grants += 1;
                Ok(h)
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot refresh the Databricks OAuth token");
                st.last_error = Some(e.clone());
                keep_stale(&mut st).ok_or(e)
            }
        }
    }

    /// Drops the cached token: the next [`Credentials::authorization`]
    /// fetches a new one. Prefer [`Credentials::invalidate_token`].
    pub fn invalidate(&self) {
        self.state().token = None;
    }

    /// After a 401 for a request sent with `sent`: drops the cached token if
    /// it is still that one (so many 401s for one token cause one refresh).
    pub fn invalidate_token(&self, sent: &HeaderValue) {
        let mut st = self.state();
        if st.token.as_ref().is_some_and(|c| c.header == *sent) {
            st.token = None;
        }
    }

    /// The workspace id from host metadata, as the `x-databricks-org-id`
    /// header value the MLflow client sends; `None` if the workspace does not
    /// announce one or host metadata is unavailable (asked again after 30 s).
    pub async fn org_id(&self) -> Option<HeaderValue> {
        let meta = self.metadata().await?;
        HeaderValue::from_str(meta.workspace_id.as_deref()?).ok()
    }

    /// Host metadata, fetched once (a failure is retried after [`METADATA_RETRY`]).
    async fn metadata(&self) -> Option<HostMetadata> {
        {
            let st = self.state();
            if st.metadata.is_some() {
                return st.metadata.clone();
            }
            if st.metadata_retry_at.is_some_and(|t| Instant::now() < t) {
                return None;
            }
        }
        let url = format!("{}/.well-known/databricks-config", self.inner.host);
        let got = self
            .get_json(&url, token::HOST_METADATA)
            .await
            .and_then(|b| token::host_metadata(&b));
        let mut st = self.state();
        match got {
            Ok(m) => {
                st.metadata = Some(m.clone());
                Some(m)
            }
            Err(e) => {
                tracing::debug!(error = %e, "Databricks host metadata unavailable");
                st.metadata_retry_at = Some(Instant::now() + METADATA_RETRY);
                None
            }
        }
    }

    async fn token_endpoint(&self) -> Result<String, AuthError> {
        if let Some(e) = self.state().token_endpoint.clone() {
            return Ok(e);
        }
        let meta = self.metadata().await;
        let url = token::discovery_url(&self.inner.host, meta.as_ref());
        let body = self.get_json(&url, token::DISCOVERY).await?;
        let endpoint = token::token_endpoint(&body)?;
        self.check_endpoint_scheme(&endpoint)?;
        self.state().token_endpoint = Some(endpoint.clone());
        Ok(endpoint)
    }

    /// The client secret goes to the token endpoint: https only, unless the
    /// workspace itself is a loopback `http://` stand-in.
    fn check_endpoint_scheme(&self, endpoint: &str) -> Result<(), AuthError> {
        let ok = endpoint.starts_with("https://")
            || (self.inner.host.starts_with("http://") && endpoint.starts_with("http://"));
        if ok {
            return Ok(());
        }
        Err(AuthError::BadReply {
            what: token::DISCOVERY,
            detail: "the token endpoint is not an https:// URL".into(),
        })
    }

    async fn fetch_token(&self) -> Result<Cached, AuthError> {
        let Kind::OAuth { basic } = &self.inner.kind else {
            unreachable!("only OAuth credentials fetch tokens")
        };
        let endpoint = self.token_endpoint().await?;
        let req = Request::builder()
            .method(Method::POST)
            .uri(&endpoint)
            .header(header::AUTHORIZATION, basic.clone())
            .header(header::CONTENT_TYPE, "application/x-www-form-urlencoded")
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::from_static(
                b"grant_type=client_credentials&scope=all-apis",
            )))
            .map_err(|_| AuthError::BadReply {
                what: token::DISCOVERY,
                detail: "the token endpoint is not a valid URL".into(),
            })?;
        let started = Instant::now();
        let answer = call(&self.inner.client, req, self.inner.timeout)
            .await
            .map_err(|detail| AuthError::Unreachable {
                what: token::TOKEN_ENDPOINT,
                detail,
            })?;
        if !answer.status.is_success() {
            return Err(token::refused(
                token::TOKEN_ENDPOINT,
                answer.status.as_u16(),
                &answer.body,
            ));
        }
        let g = token::granted(&answer.body)?;
        let header = sensitive(
            &format!("{} {}", g.token_type, g.access_token),
            "the granted token",
        )
        .map_err(|_| AuthError::BadReply {
            what: token::TOKEN_ENDPOINT,
            detail: "the token is not a valid header value".into(),
        })?;
        Ok(Cached {
            header,
            refresh_at: started + token::refresh_after(g.expires_in),
            usable_until: started + token::usable_for(g.expires_in),
        })
    }

    async fn get_json(&self, url: &str, what: &'static str) -> Result<Bytes, AuthError> {
        let req = Request::get(url)
            .header(header::ACCEPT, "application/json")
            .body(Full::new(Bytes::new()))
            .map_err(|_| AuthError::BadReply {
                what,
                detail: "not a valid URL".into(),
            })?;
        let answer = call(&self.inner.client, req, self.inner.timeout)
            .await
            .map_err(|detail| AuthError::Unreachable { what, detail })?;
        if !answer.status.is_success() {
            return Err(token::refused(what, answer.status.as_u16(), &answer.body));
        }
        Ok(answer.body)
    }
}

/// The cached token, if it is fresh (not yet due for a refresh).
fn usable(st: &State) -> Option<HeaderValue> {
    st.token
        .as_ref()
        .filter(|c| Instant::now() < c.refresh_at.min(c.usable_until))
        .map(|c| c.header.clone())
}

/// The cached token if it may still be sent, stale or not.
fn still_valid(st: &State) -> Option<HeaderValue> {
    st.token
        .as_ref()
        .filter(|c| Instant::now() < c.usable_until)
        .map(|c| c.header.clone())
}

/// After a failed refresh: the stale token while it may still be used, with
/// the next refresh attempt [`STALE_RETRY`] later (as the SDK backs off
/// after a failed background refresh).
fn keep_stale(st: &mut State) -> Option<HeaderValue> {
    let now = Instant::now();
    let c = st.token.as_mut().filter(|c| now < c.usable_until)?;
    c.refresh_at = (now + STALE_RETRY).min(c.usable_until);
    Some(c.header.clone())
}

impl std::fmt::Debug for Credentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.inner.kind {
            Kind::Pat(_) => "pat",
            Kind::OAuth { .. } => "oauth-m2m",
        };
        f.debug_struct("Credentials")
            .field("host", &self.inner.host)
            .field("auth", &kind)
            .finish()
    }
}
