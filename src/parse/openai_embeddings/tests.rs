//! Unit tests for the OpenAI Embeddings parser, driven by the recorded
//! fixtures under `tests/fixtures/openai_embeddings/`.

use proptest::prelude::*;
use serde_json::json;

use super::*;
use crate::parse::test_support::{self, cached_and_reasoning, parse_any, response, tokens};

macro_rules! fixture {
    ($name:literal) => {
        test_support::fixture!("openai_embeddings", $name)
    };
}

#[test]
fn floats_are_omitted() {
    let o = parse(fixture!("plain.json"), false);
    let r = response(&o);
    assert_eq!(
        r,
        &json!({"object": "list", "data": [
            {"object": "embedding", "index": 0, "embedding": "<12 floats omitted>"},
            {"object": "embedding", "index": 1, "embedding": "<12 floats omitted>"}],
            "model": "text-embedding-3-small",
            "usage": {"prompt_tokens": 13, "total_tokens": 13}})
    );
    assert_eq!(o.model.as_deref(), Some("text-embedding-3-small"));
    assert_eq!(tokens(&o), (13, 0, 13));
    assert_eq!(cached_and_reasoning(&o), (None, None));
    assert!(o.response_id.is_none() && o.finish_reasons.is_empty());
    assert!(o.error.is_none() && o.stream.is_none());
}

#[test]
fn base64_is_omitted_with_its_size() {
    let o = parse_json(fixture!("base64.json"));
    let r = response(&o);
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
    let r = response(&o);
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
        parse_any(parse, &bytes);
    }

    #[test]
    fn truncated_bodies_never_panic(cut in any::<prop::sample::Index>()) {
        let body = fixture!("base64.json");
        let o = parse_json(body.get(..cut.index(body.len() + 1)).unwrap_or_default());
        prop_assert_eq!(o.response.is_some(), cut.index(body.len() + 1) >= body.len() - 1);
    }
}
