//! A call's production context from its headers: who asked (`x-llmtap-user`),
//! in which conversation (`x-llmtap-session`), under which trace name
//! (`x-llmtap-trace-name`), with which tags (`x-llmtap-tag-<key>: <value>`)
//! and trace metadata (`x-llmtap-metadata-<key>: <value>`). Every
//! `x-llmtap-*` header is llmtap's own and is removed before the request
//! goes upstream. The request-tracking headers the agent already sends
//! (`x-request-id`, W3C `traceparent`) are recorded and left in place.
//!
//! Pure and bounded: at most [`MAX_PAIRS`] tags and as many metadata
//! entries, keys cut at [`MAX_KEY`] bytes and values at [`MAX_VALUE`]
//! (on a character boundary); a value that is not UTF-8 is kept lossily.
//!
//! Next to it: the context a request body states ([`body`]), the W3C
//! `traceparent` a call may join ([`traceparent`]), and the provider's own
//! request id from the response headers ([`provider_request_id`]).

use http::HeaderMap;

pub mod body;
pub mod traceparent;

/// Tags (and, separately, metadata entries) kept per call at most.
pub const MAX_PAIRS: usize = 32;
/// Longest key kept, in bytes.
pub const MAX_KEY: usize = 128;
/// Longest value kept, in bytes (MLflow cuts trace metadata at 250 chars
/// when it shows it; tags are kept whole up to this).
pub const MAX_VALUE: usize = 1024;

const PREFIX: &str = "x-llmtap-";

/// The span attributes that carry a call's trace metadata
/// (`llmtap.metadata.<key>`): the MLflow and Databricks sinks make them
/// trace metadata; OTLP backends keep them as attributes.
pub const METADATA_ATTR: &str = "llmtap.metadata.";

/// What a call's headers said about its context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallContext {
    pub user: Option<String>,
    pub session: Option<String>,
    pub trace_name: Option<String>,
    /// `x-llmtap-tag-<key>`, in header order.
    pub tags: Vec<(String, String)>,
    /// `x-llmtap-metadata-<key>`, in header order.
    pub metadata: Vec<(String, String)>,
    /// The agent's `x-request-id`.
    pub client_request_id: Option<String>,
    /// The W3C `traceparent` the agent sent.
    pub traceparent: Option<String>,
    /// Tags or metadata entries dropped past [`MAX_PAIRS`].
    pub dropped: usize,
    /// A coding agent's own session header (`crate::session::agents`), kept
    /// for the session recogniser; the header itself goes on upstream.
    pub agent_session: Option<String>,
}

impl CallContext {
    pub fn is_empty(&self) -> bool {
        *self == CallContext::default()
    }
}

/// Reads the context headers and removes every `x-llmtap-*` header.
pub fn take(headers: &mut HeaderMap) -> CallContext {
    let mut ctx = CallContext {
        client_request_id: value_of(headers, "x-request-id"),
        traceparent: value_of(headers, "traceparent"),
        ..CallContext::default()
    };
    let ours: Vec<_> = headers
        .keys()
        .filter(|k| k.as_str().starts_with(PREFIX))
        .cloned()
        .collect();
    for name in ours {
        let rest = &name.as_str()[PREFIX.len()..];
        for v in headers.get_all(&name) {
            let v = cut(&String::from_utf8_lossy(v.as_bytes()), MAX_VALUE);
            ctx.add(rest, v);
        }
        headers.remove(&name);
    }
    ctx
}

impl CallContext {
    fn add(&mut self, name: &str, value: String) {
        if let Some(key) = name.strip_prefix("tag-") {
            push(&mut self.tags, &mut self.dropped, key, value);
        } else if let Some(key) = name.strip_prefix("metadata-") {
            push(&mut self.metadata, &mut self.dropped, key, value);
        } else {
            let slot = match name {
                "user" => &mut self.user,
                "session" => &mut self.session,
                "trace-name" => &mut self.trace_name,
                _ => return,
            };
            if !value.is_empty() {
                *slot = Some(value);
            }
        }
    }
}

fn push(list: &mut Vec<(String, String)>, dropped: &mut usize, key: &str, value: String) {
    if key.is_empty() {
        return;
    }
    if list.len() >= MAX_PAIRS {
        *dropped += 1;
        return;
    }
    list.push((cut(key, MAX_KEY), value));
}

/// Response headers that carry the provider's request id, in the order
/// they are tried: OpenAI and Databricks (`x-request-id`), Anthropic
/// (`request-id`), Azure API Management (`apim-request-id`), Azure
/// (`x-ms-request-id`).
const PROVIDER_REQUEST_ID: [&str; 4] = [
    "x-request-id",
    "request-id",
    "apim-request-id",
    "x-ms-request-id",
];

/// The provider's id for the call, from its response headers (bounded).
pub fn provider_request_id(headers: &HeaderMap) -> Option<String> {
    PROVIDER_REQUEST_ID
        .iter()
        .find_map(|name| value_of(headers, name))
}

fn value_of(headers: &HeaderMap, name: &str) -> Option<String> {
    let v = headers.get(name)?;
    let v = cut(&String::from_utf8_lossy(v.as_bytes()), MAX_VALUE);
    (!v.is_empty()).then_some(v)
}

/// `s` cut to at most `max` bytes on a character boundary.
pub(crate) fn cut(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&str, &[u8])]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_bytes(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn reads_the_context_and_removes_every_llmtap_header() {
        let mut h = headers(&[
            ("x-llmtap-user", b"alice"),
            ("X-LLMTAP-Session", b"sess-42"),
            ("x-llmtap-trace-name", b"triage"),
            ("x-llmtap-tag-env", b"prod"),
            ("x-llmtap-tag-team", b"search"),
            ("x-llmtap-metadata-ticket", b"T-1"),
            ("x-llmtap-unknown", b"x"),
            ("x-request-id", b"req-7"),
            (
                "traceparent",
                b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            ),
            ("authorization", b"Bearer sk-x"),
        ]);
        let c = take(&mut h);
        assert_eq!(c.user.as_deref(), Some("alice"));
        assert_eq!(c.session.as_deref(), Some("sess-42"));
        assert_eq!(c.trace_name.as_deref(), Some("triage"));
        assert_eq!(
            c.tags,
            [
                ("env".into(), "prod".into()),
                ("team".into(), "search".into())
            ]
        );
        assert_eq!(c.metadata, [("ticket".to_string(), "T-1".to_string())]);
        assert_eq!(c.client_request_id.as_deref(), Some("req-7"));
        assert!(c.traceparent.unwrap().starts_with("00-0af7"));
        let mut left: Vec<_> = h.keys().map(|k| k.as_str().to_string()).collect();
        left.sort();
        assert_eq!(left, ["authorization", "traceparent", "x-request-id"]);
    }

    #[test]
    fn bounded_whatever_is_sent() {
        let mut pairs = Vec::new();
        let names: Vec<String> = (0..40).map(|i| format!("x-llmtap-tag-k{i}")).collect();
        let long = vec![b'v'; 5000];
        for n in &names {
            pairs.push((n.as_str(), long.as_slice()));
        }
        let mut h = headers(&pairs);
        let c = take(&mut h);
        assert_eq!(c.tags.len(), MAX_PAIRS);
        assert_eq!(c.dropped, 8);
        assert!(c.tags.iter().all(|(_, v)| v.len() == MAX_VALUE));
        assert!(h.is_empty());
    }

    #[test]
    fn values_that_are_not_utf8_or_empty() {
        let mut h = headers(&[
            ("x-llmtap-user", b""),
            ("x-llmtap-tag-bin", b"caf\xe9"),
            ("x-llmtap-tag-", b"no key"),
        ]);
        let c = take(&mut h);
        assert_eq!(c.user, None);
        assert_eq!(c.tags, [("bin".to_string(), "caf\u{fffd}".to_string())]);
        assert_eq!(cut("é", 1), "");
    }

    #[test]
    fn the_providers_request_id() {
        let id = |pairs: &[(&str, &[u8])]| provider_request_id(&headers(pairs));
        assert_eq!(
            id(&[("x-request-id", b"req_openai")]).as_deref(),
            Some("req_openai")
        );
        assert_eq!(
            id(&[("request-id", b"req_ant")]).as_deref(),
            Some("req_ant")
        );
        assert_eq!(
            id(&[("x-ms-request-id", b"ms"), ("apim-request-id", b"apim")]).as_deref(),
            Some("apim")
        );
        assert_eq!(id(&[("x-request-id", b"")]), None);
        assert_eq!(id(&[("content-type", b"json")]), None);
        let long = vec![b'a'; 5000];
        assert_eq!(id(&[("request-id", &long)]).unwrap().len(), MAX_VALUE);
    }
}
