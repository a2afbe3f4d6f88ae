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

use http::header::HeaderMap;
use http::Uri;

use crate::config::credential::{CredentialConfig, CredentialHeader, CredentialSource, Secret};
use crate::config::Config;
use crate::route::Api;
pub use apply::Outcome;
use file::FileKey;

/// Where a credential's key comes from at call time.
enum Source {
    /// `env:`: fixed at start.
    Static(Secret),
    /// `file:`: the file's latest good value.
    File(Arc<FileKey>),
    /// A source this build cannot serve (every call gets a 502 saying why).
    Unavailable(&'static str),
}

impl Source {
    async fn key(&self) -> Result<Secret, String> {
        match self {
            Source::Static(key) => Ok(key.clone()),
            Source::File(file) => Ok(file.key()),
            Source::Unavailable(why) => Err(why.to_string()),
        }
    }

    /// The upstream answered 401 to a call carrying this source's key.
    fn rejected(&self) {}
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
    /// being watched for rotation.
    pub fn new(cfg: &CredentialConfig) -> UpstreamCredential {
        let source = match &cfg.source {
            CredentialSource::Env { key, .. } => Source::Static(key.clone()),
            CredentialSource::File { path, key } => {
                let file = FileKey::new(path.clone(), key.clone());
                file.watch(cfg.check_interval);
                Source::File(file)
            }
            CredentialSource::Databricks { .. } => {
                Source::Unavailable("the Databricks auth is not wired in yet")
            }
        };
        UpstreamCredential {
            source,
            header: cfg.header.clone(),
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
        upstreams
            .map(|(upstream, credential)| {
                let c = credential.as_ref()?;
                announce(upstream, c);
                Some(UpstreamCredential::new(c))
            })
            .collect()
    }

    /// Adds the credential to a call's headers (or keeps the agent's). `host`
    /// and `path` are the upstream's and the forwarded path, for the default
    /// header. An error (no key could be had) is for a 502 and holds no secret.
    pub async fn apply(
        &self,
        headers: &mut HeaderMap,
        host: &str,
        path: &str,
        api: Option<Api>,
    ) -> Result<Outcome, String> {
        let header = match &self.header {
            Some(h) => h.clone(),
            None => apply::default_header(host, path, api),
        };
        let name = header.name();
        if !self.override_agent && apply::agent_has_credential(headers, &name) {
            return Ok(Outcome::AgentKept);
        }
        let key = self.source.key().await.map_err(|e| {
            format!(
                "llmtap could not get the upstream credential ({}): {e}",
                self.described
            )
        })?;
        Ok(apply::apply(
            headers,
            name,
            key.value(&header),
            self.override_agent,
        ))
    }

    /// The upstream answered a call with `status`: a 401 to llmtap's own
    /// key is logged and reported to the source.
    pub fn answered(&self, outcome: Outcome, status: u16) {
        if status != 401 || outcome == Outcome::AgentKept {
            return;
        }
        tracing::warn!(
            credential = %self.described,
            "the upstream refused llmtap's credential (401)"
        );
        self.source.rejected();
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
