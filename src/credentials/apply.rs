//! Pure header logic: which header carries llmtap's key on a call when none
//! is configured (by provider), and whether the agent's own credential
//! stays (`credential_override = false`) or is replaced.

use http::header::{HeaderMap, HeaderName, HeaderValue};

use crate::config::credential::CredentialHeader;
use crate::route::{self, Api};

/// Headers an agent puts its own credential in: OpenAI-compatible and
/// Databricks (`Authorization`), Anthropic (`x-api-key`), Azure OpenAI (`api-key`).
pub const AGENT_CREDENTIAL_HEADERS: [&str; 3] = ["authorization", "x-api-key", "api-key"];

/// What a call's credential headers became.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The agent sent none: llmtap's was added.
    Added,
    /// The agent sent its own and it was kept (no override).
    AgentKept,
    /// The agent sent its own and llmtap's replaced it (override).
    Replaced,
}

/// The header the provider of a call expects: `x-api-key` for Anthropic,
/// `api-key` for Azure OpenAI, `Authorization: Bearer` for OpenAI-compatible
/// servers and Databricks. The provider is the one llmtap names in traces
/// ([`route::provider`]); a path it does not trace counts as an Anthropic
/// one under `/v1/messages`, else as OpenAI's.
pub fn default_header(host: &str, path: &str, api: Option<Api>) -> CredentialHeader {
    let api = api.unwrap_or(if path.contains("/v1/messages") {
        Api::Messages
    } else {
        Api::ChatCompletions
    });
    match route::provider(host, path, api) {
        "anthropic" => CredentialHeader::Raw(HeaderName::from_static("x-api-key")),
        "azure.ai.openai" => CredentialHeader::Raw(HeaderName::from_static("api-key")),
        _ => CredentialHeader::Bearer,
    }
}

/// True when the agent sent a credential of its own: a value in any of
/// [`AGENT_CREDENTIAL_HEADERS`] or in `header`. An empty value (or a bare
/// `Bearer`, what an SDK sends for an empty key) does not count.
pub fn agent_has_credential(headers: &HeaderMap, header: &HeaderName) -> bool {
    let given = |v: &HeaderValue| {
        let v = v.as_bytes().trim_ascii();
        !v.is_empty() && !v.eq_ignore_ascii_case(b"bearer")
    };
    AGENT_CREDENTIAL_HEADERS
        .iter()
        .map(|n| HeaderName::from_static(n))
        .chain(std::iter::once(header.clone()))
        .any(|n| headers.get_all(n).iter().any(given))
}

/// Sets `name: value` unless the agent has its own credential and
/// `override_agent` is off. When llmtap's goes in, every agent credential
/// header goes out first, so the provider never sees two.
pub fn apply(
    headers: &mut HeaderMap,
    name: HeaderName,
    value: HeaderValue,
    override_agent: bool,
) -> Outcome {
    let outcome = match (agent_has_credential(headers, &name), override_agent) {
        (false, _) => Outcome::Added,
        (true, false) => return Outcome::AgentKept,
        (true, true) => Outcome::Replaced,
    };
    for n in AGENT_CREDENTIAL_HEADERS {
        headers.remove(n);
    }
    headers.remove(&name);
    headers.insert(name, value);
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::header::AUTHORIZATION;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        h
    }

    fn ours() -> HeaderValue {
        let mut v = HeaderValue::from_static("Bearer sk-llmtap");
        v.set_sensitive(true);
        v
    }

    #[test]
    fn added_when_the_agent_has_none() {
        let mut h = headers(&[("content-type", "application/json")]);
        assert_eq!(apply(&mut h, AUTHORIZATION, ours(), false), Outcome::Added);
        assert_eq!(h["authorization"], "Bearer sk-llmtap");
        assert!(h["authorization"].is_sensitive());
        assert_eq!(h["content-type"], "application/json");
    }

    #[test]
    fn an_empty_agent_key_counts_as_none() {
        for empty in ["", "Bearer", "Bearer ", "  "] {
            let mut h = HeaderMap::new();
            h.insert(AUTHORIZATION, HeaderValue::from_str(empty).unwrap());
            assert_eq!(
                apply(&mut h, AUTHORIZATION, ours(), false),
                Outcome::Added,
                "{empty:?}"
            );
            assert_eq!(h.get_all(AUTHORIZATION).iter().count(), 1);
            assert_eq!(h["authorization"], "Bearer sk-llmtap");
        }
    }

    #[test]
    fn the_agent_wins_unless_overridden() {
        let x_api_key = HeaderName::from_static("x-api-key");
        for (agent, name) in [
            ("authorization", AUTHORIZATION),
            ("x-api-key", AUTHORIZATION),
            ("authorization", x_api_key.clone()),
            ("api-key", x_api_key.clone()),
        ] {
            let mut h = HeaderMap::new();
            h.insert(
                HeaderName::from_static(agent),
                HeaderValue::from_static("agent-key"),
            );
            let before = h.clone();
            assert_eq!(
                apply(&mut h, name.clone(), ours(), false),
                Outcome::AgentKept
            );
            assert_eq!(h, before, "untouched");

            assert_eq!(apply(&mut h, name.clone(), ours(), true), Outcome::Replaced);
            assert_eq!(h.len(), 1, "only llmtap's credential is left: {h:?}");
            assert_eq!(h[&name], "Bearer sk-llmtap");
        }
    }

    #[test]
    fn a_custom_header_counts_as_the_agents_credential() {
        let name = HeaderName::from_static("x-goog-api-key");
        let mut h = headers(&[("x-goog-api-key", "agent")]);
        assert!(agent_has_credential(&h, &name));
        assert_eq!(apply(&mut h, name, ours(), false), Outcome::AgentKept);
    }

    #[test]
    fn default_headers_by_provider() {
        let x_api_key = CredentialHeader::Raw(HeaderName::from_static("x-api-key"));
        let api_key = CredentialHeader::Raw(HeaderName::from_static("api-key"));
        let chat = Some(Api::ChatCompletions);
        for (host, path, api, want) in [
            (
                "api.openai.com",
                "/v1/chat/completions",
                chat,
                CredentialHeader::Bearer,
            ),
            (
                "api.openai.com",
                "/v1/models",
                None,
                CredentialHeader::Bearer,
            ),
            (
                "127.0.0.1",
                "/v1/embeddings",
                Some(Api::Embeddings),
                CredentialHeader::Bearer,
            ),
            ("api.anthropic.com", "/v1/models", None, x_api_key.clone()),
            (
                "127.0.0.1",
                "/v1/messages",
                Some(Api::Messages),
                x_api_key.clone(),
            ),
            (
                "127.0.0.1",
                "/v1/messages/count_tokens",
                None,
                x_api_key.clone(),
            ),
            (
                "res.openai.azure.com",
                "/openai/models",
                None,
                api_key.clone(),
            ),
            (
                "127.0.0.1",
                "/openai/deployments/d/chat/completions",
                chat,
                api_key,
            ),
            (
                "adb-1.azuredatabricks.net",
                "/serving-endpoints/e/invocations",
                Some(Api::Invocations),
                CredentialHeader::Bearer,
            ),
        ] {
            assert_eq!(default_header(host, path, api), want, "{host}{path}");
        }
    }
}
