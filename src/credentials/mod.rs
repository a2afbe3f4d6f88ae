//! Upstream credentials added by llmtap, so the agent holds no provider key
//! (`credential = ...` on the default upstream and on each route; settings in
//! [`crate::config::credential`], design in `docs/upstream-credentials.md`).
//!
//! On each call to an upstream that has one, in the *upstream request* phase
//! of [`crate::forward`]: the key comes from its [`Source`], the header from
//! the setting or the call's provider ([`apply::default_header`]), and
//! [`apply::apply`] adds it — unless the agent sent a credential of its own
//! and `credential_override` is off. After the response head, a 401 to a call
//! that carried llmtap's key is reported to the source, which may drop a
//! cached token (Databricks OAuth) so the next call fetches a fresh one.
//!
//! The key is a sensitive `HeaderValue`; it is never logged, traced (a trace
//! records bodies and facts, never request headers), put in an error or shown
//! by `Debug`.

pub mod apply;
pub mod file;

use std::sync::Arc;
use std::time::Duration;

use http::header::HeaderMap;
use http::Uri;

use crate::config::credential::{CredentialConfig, CredentialHeader, CredentialSource, Secret};
use crate::config::Config;
use crate::databricks::Credentials as Databricks;
use crate::route::Api;
use crate::sinks::http::HttpClient;
pub use apply::Outcome;
use file::FileKey;

/// The longest a call waits for each Databricks auth request (host
/// metadata, OIDC discovery, token) when a token must be fetched.
pub const DATABRICKS_AUTH_TIMEOUT: Duration = Duration::from_secs(30);

/// Where a credential's key comes from at call time.
enum Source {
    /// `env:`: fixed at start.
    Static(Secret),
    /// `file:`: the file's latest good value.
    File(Arc<FileKey>),
    /// `databricks`: a PAT, or an OAuth token cached and refreshed.
    Databricks(Databricks),
    /// A source that could not be built (every call gets a 502 saying why).
    Unavailable(String),
}

impl Source {
    async fn key(&self) -> Result<Secret, String> {
        match self {
            Source::Static(key) => Ok(key.clone()),
            Source::File(file) => Ok(file.key()),
            Source::Databricks(d) => {
                let value = d.authorization().await.map_err(|e| e.to_string())?;
                Secret::from_authorization(&value).map_err(|e| format!("the Databricks token {e}"))
            }
            Source::Unavailable(why) => Err(why.clone()),
        }
    }

    /// The upstream answered 401 to a call that carried `key`: a Databricks
    /// OAuth token is dropped (once, however many calls failed with it), so
    /// the next call fetches a new one.
    fn rejected(&self, key: &Secret) {
        if let Source::Databricks(d) = self {
            d.invalidate_token(&key.value(&CredentialHeader::Bearer));
        }
    }
}

/// What adding a credential did to one call.
pub struct Applied {
    pub outcome: Outcome,
    /// llmtap's key, when it went in.
    key: Option<Secret>,
}

/// The credential of one upstream (the default one or a route's).
pub struct UpstreamCredential {
    source: Source,
    header: Option<CredentialHeader>,
    override_agent: bool,
    /// `env:NAME`, `file:PATH`, `databricks`: for logs.
    described: String,
}

impl UpstreamCredential {
    /// The runtime side of a validated credential; a `file:` one starts
    /// being watched for rotation, a `databricks` one calls the workspace
    /// with `client` when it needs a token.
    pub fn new(cfg: &CredentialConfig, client: impl FnOnce() -> HttpClient) -> UpstreamCredential {
        let source = match &cfg.source {
            CredentialSource::Env { key, .. } => Source::Static(key.clone()),
            CredentialSource::File { path, key } => {
                let file = FileKey::new(path.clone(), key.clone());
                file.watch(cfg.check_interval);
                Source::File(file)
            }
            CredentialSource::Databricks { workspace, .. } => {
                match Databricks::new(workspace, client(), DATABRICKS_AUTH_TIMEOUT) {
                    Ok(d) => Source::Databricks(d),
                    Err(e) => {
                        tracing::error!(error = %e, "the Databricks upstream credential is unusable: calls get a 502");
                        Source::Unavailable(e)
                    }
                }
            }
        };
        // A workspace token is always a bearer token.
        let header = match (&cfg.header, &cfg.source) {
            (None, CredentialSource::Databricks { .. }) => Some(CredentialHeader::Bearer),
            (h, _) => h.clone(),
        };
        UpstreamCredential {
            source,
            header,
            override_agent: cfg.override_agent,
            described: cfg.source.describe(),
        }
    }

    /// One per upstream of `cfg`, in [`crate::forward::Proxy`]'s order: the
    /// default upstream first, then each route. Each one set is logged (its
    /// source, never its key).
    pub fn for_config(cfg: &Config) -> Vec<Option<UpstreamCredential>> {
        let upstreams = std::iter::once((&cfg.upstream, &cfg.upstream_credential))
            .chain(cfg.routes.iter().map(|r| (&r.upstream, &r.credential)));
        let client = || crate::client::client(cfg.connect_timeout, &cfg.upstream_ca.certs);
        let built: Vec<_> = upstreams
            .map(|(upstream, credential)| {
                let c = credential.as_ref()?;
                announce(upstream, c);
                Some(UpstreamCredential::new(c, client))
            })
            .collect();
        if built.iter().any(Option::is_some) && !cfg.listen.ip().is_loopback() {
            tracing::warn!(
                listen = %cfg.listen,
                "llmtap adds a provider credential and listens beyond loopback: whoever reaches this port calls the provider with that credential"
            );
        }
        built
    }

    /// Adds the credential to a call's headers (or keeps the agent's). `host`
    /// and `path`: the upstream's host and the path sent to it, for the
    /// default header. An error (no key could be had) is for a 502 and holds
    /// no secret.
    pub async fn apply(
        &self,
        headers: &mut HeaderMap,
        host: &str,
        path: &str,
        api: Option<Api>,
    ) -> Result<Applied, String> {
        let header = match &self.header {
            Some(h) => h.clone(),
            None => apply::default_header(host, path, api),
        };
        let name = header.name();
        if !self.override_agent && apply::agent_has_credential(headers, &name) {
            return Ok(Applied {
                outcome: Outcome::AgentKept,
                key: None,
            });
        }
        let key = self.source.key().await.map_err(|e| {
            format!(
                "llmtap could not get the upstream credential ({}): {e}",
                self.described
            )
        })?;
        let outcome = apply::apply(headers, name, key.value(&header), self.override_agent);
        Ok(Applied {
            outcome,
            key: Some(key),
        })
    }

    /// The upstream answered a call with `status`: a 401 to llmtap's own
    /// key is logged and reported to the source (and true is returned).
    pub fn answered(&self, applied: &Applied, status: u16) -> bool {
        let Some(key) = applied.key.as_ref().filter(|_| status == 401) else {
            return false;
        };
        tracing::warn!(
            credential = %self.described,
            "the upstream refused llmtap's credential (401)"
        );
        self.source.rejected(key);
        true
    }
}

/// Logs an upstream's credential at start; warns when it would cross the
/// network in clear text.
fn announce(upstream: &Uri, c: &CredentialConfig) {
    let shown = crate::redact::uri(upstream);
    let header = match &c.header {
        None => "by provider".to_string(),
        Some(CredentialHeader::Bearer) => "authorization: Bearer".to_string(),
        Some(CredentialHeader::Raw(n)) => n.to_string(),
    };
    tracing::info!(
        upstream = %shown,
        credential = %c.source.describe(),
        header = %header,
        override_agent = c.override_agent,
        "llmtap adds the upstream credential"
    );
    let host = upstream.host().unwrap_or("");
    let loopback = host == "localhost"
        || host
            .trim_matches(['[', ']'])
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback());
    if upstream.scheme_str() == Some("http") && !loopback {
        tracing::warn!(upstream = %shown, "the upstream credential goes over plain http");
    }
}
