//! OpenAI Embeddings (`POST /v1/embeddings`, JSON only), turned into an
//! [`Outcome`] that does not carry the vectors.
//!
//! A trace has no use for thousands of floats per input, and they would
//! dwarf everything else in it: in the recorded `response`, each
//! `data[i].embedding` is replaced by a short placeholder saying what was
//! there (`"<1536 floats omitted>"`, or `"<base64 vector omitted, 6144
//! bytes>"` for `encoding_format: "base64"`). Usage maps `prompt_tokens` to
//! input and `total_tokens` to total, with no output tokens. Embeddings have
//! no response id and no finish reasons.
//!
//! [`request_summary`] does the same for the request side: token-array
//! inputs (`[1, 2, ...]` or `[[1, 2, ...], ...]`) become `"<N tokens
//! omitted>"`; text inputs are kept, as they are what a reader wants to see.

use serde_json::Value;

use super::outcome::{Outcome, ProviderError};
use super::usage::Usage;

/// Parse a JSON response body.
pub fn parse_json(body: &[u8]) -> Outcome {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let Ok(mut v) = serde_json::from_slice::<Value>(body) else {
        return Outcome::default();
    };
    omit_vectors(&mut v);
    Outcome {
        usage: v.get("usage").and_then(Usage::from_openai),
        model: str_of(v.get("model")),
        response_id: str_of(v.get("id")),
        finish_reasons: Vec::new(),
        error: provider_error(&v),
        stream: None,
        response: Some(v),
    }
}

/// Embeddings never stream, so the body is always parsed as JSON;
/// `is_event_stream` is accepted for symmetry with the other parsers.
pub fn parse(body: &[u8], is_event_stream: bool) -> Outcome {
    let _ = is_event_stream;
    parse_json(body)
}

/// The request body for the trace, with token-array inputs replaced by
/// `"<N tokens omitted>"` (per inner array for a batch of token arrays).
/// Anything else, text inputs included, is kept as is.
pub fn request_summary(req: &Value) -> Value {
    let mut req = req.clone();
    if let Some(input) = req.get_mut("input") {
        if is_token_array(input) {
            *input = tokens_omitted(input);
        } else if let Some(batch) = input.as_array_mut() {
            for item in batch.iter_mut().filter(|i| is_token_array(i)) {
                *item = tokens_omitted(item);
            }
        }
    }
    req
}

/// A non-empty array of numbers.
fn is_token_array(v: &Value) -> bool {
    v.as_array()
        .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_number))
}

fn tokens_omitted(v: &Value) -> Value {
    let n = v.as_array().map_or(0, Vec::len);
    format!("<{n} tokens omitted>").into()
}

/// Replace each `data[i].embedding` with a placeholder.
fn omit_vectors(v: &mut Value) {
    let Some(data) = v.get_mut("data").and_then(Value::as_array_mut) else {
        return;
    };
    for item in data {
        let Some(embedding) = item.get_mut("embedding") else {
            continue;
        };
        let placeholder = match embedding {
            Value::Array(floats) => format!("<{} floats omitted>", floats.len()),
            Value::String(b64) => {
                format!("<base64 vector omitted, {} bytes>", base64_decoded_len(b64))
            }
            _ => continue,
        };
        *embedding = placeholder.into();
    }
}

/// The decoded size of a base64 string, from its length alone.
fn base64_decoded_len(s: &str) -> usize {
    let s = s.trim_end().trim_end_matches('=');
    s.len() / 4 * 3 + (s.len() % 4 * 3 / 4)
}

fn str_of(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_owned)
}

/// `{"error": {...}}` / `{"error": "text"}`, or vLLM's `{"object": "error", ...}`.
fn provider_error(v: &Value) -> Option<ProviderError> {
    let err = match v.get("error") {
        Some(Value::Null) | None if v.get("object").and_then(Value::as_str) == Some("error") => v,
        Some(Value::Null) | None => return None,
        Some(e) => e,
    };
    if let Some(text) = err.as_str() {
        return Some(ProviderError {
            message: text.to_owned(),
            kind: None,
        });
    }
    let kind = ["type", "code"].iter().find_map(|k| match err.get(*k) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    });
    let message = str_of(err.get("message")).unwrap_or_else(|| err.to_string());
    Some(ProviderError { message, kind })
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    macro_rules! fixture {
        ($name:literal) => {
            include_bytes!(concat!("../../tests/fixtures/openai_embeddings/", $name)).as_slice()
        };
    }

    #[test]
    fn floats_are_omitted() {
        let o = parse(fixture!("plain.json"), false);
        let r = o.response.as_ref().expect("response");
        assert_eq!(
            r,
            &json!({"object": "list", "data": [
                {"object": "embedding", "index": 0, "embedding": "<12 floats omitted>"},
                {"object": "embedding", "index": 1, "embedding": "<12 floats omitted>"}],
                "model": "text-embedding-3-small",
                "usage": {"prompt_tokens": 13, "total_tokens": 13}})
        );
        assert_eq!(o.model.as_deref(), Some("text-embedding-3-small"));
        let u = o.usage.expect("usage");
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.total_tokens),
            (13, 0, 13)
        );
        assert_eq!(
            (u.cache_read_input_tokens, u.reasoning_tokens),
            (None, None)
        );
        assert!(o.response_id.is_none() && o.finish_reasons.is_empty());
        assert!(o.error.is_none() && o.stream.is_none());
    }

    #[test]
    fn base64_is_omitted_with_its_size() {
        let o = parse_json(fixture!("base64.json"));
        let r = o.response.as_ref().expect("response");
        // 256 float32 dimensions.
        assert_eq!(
            r["data"][0]["embedding"],
            "<base64 vector omitted, 1024 bytes>"
        );
        assert_eq!(o.usage.map(|u| u.input_tokens), Some(9));
        assert!(serde_json::to_string(r).is_ok_and(|s| s.len() < 300));
        for (b64, n) in [
            ("", 0),
            ("AAAA", 3),
            ("AAAAAA==", 4),
            ("AAAAAAA=", 5),
            ("AAAAAA", 4),
        ] {
            assert_eq!(base64_decoded_len(b64), n, "{b64}");
        }
    }

    #[test]
    fn error_bodies() {
        let o = parse(fixture!("error_400.json"), false);
        let e = o.error.as_ref().expect("error");
        assert!(e
            .message
            .starts_with("This model's maximum context length is 8192 tokens"));
        assert_eq!(e.kind.as_deref(), Some("invalid_request_error"));
        assert!(o.usage.is_none() && o.response.is_some());
        assert_eq!(parse(b"upstream timeout", false), Outcome::default());
    }

    #[test]
    fn odd_shapes_are_left_alone() {
        let o = parse_json(br#"{"data":[{"embedding":null},{"index":1},7],"usage":{}}"#);
        let r = o.response.as_ref().expect("response");
        assert_eq!(r["data"], json!([{"embedding": null}, {"index": 1}, 7]));
        assert_eq!(o.usage, None);
        // An SSE content type does not make it a stream.
        assert!(parse(fixture!("plain.json"), true).stream.is_none());
    }

    #[test]
    fn request_token_arrays_are_summarised() {
        let text = json!({"model": "text-embedding-3-small", "input": ["a", "b"]});
        assert_eq!(request_summary(&text), text);
        let single = json!({"model": "m", "input": [1, 2, 3], "dimensions": 256});
        assert_eq!(
            request_summary(&single),
            json!({"model": "m", "input": "<3 tokens omitted>", "dimensions": 256})
        );
        let batch = json!({"input": [[1, 2], [3], "text", []]});
        assert_eq!(
            request_summary(&batch),
            json!({"input": ["<2 tokens omitted>", "<1 tokens omitted>", "text", []]})
        );
        assert_eq!(request_summary(&json!("x")), json!("x"));
    }

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..400)) {
            let _ = parse(&bytes, false);
        }

        #[test]
        fn truncated_bodies_never_panic(cut in any::<prop::sample::Index>()) {
            let body = fixture!("base64.json");
            let o = parse_json(body.get(..cut.index(body.len() + 1)).unwrap_or_default());
            prop_assert_eq!(o.response.is_some(), cut.index(body.len() + 1) >= body.len() - 1);
        }
    }
}
