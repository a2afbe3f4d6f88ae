//! Unit tests for the legacy OpenAI Completions parser, driven by the
//! recorded fixtures under `tests/fixtures/openai_completions/`.

use proptest::prelude::*;

use super::*;
use crate::parse::test_support::{
    self, cached_and_reasoning, data_events, facts, parse_any, response, tokens,
};

macro_rules! fixture {
    ($name:literal) => {
        test_support::fixture!("openai_completions", $name)
    };
}

fn choice(o: &Outcome, i: usize) -> &Value {
    &response(o)["choices"][i]
}

#[test]
fn plain_json() {
    let o = parse(fixture!("plain.json"), false);
    assert_eq!(o.model.as_deref(), Some("gpt-3.5-turbo-instruct"));
    assert_eq!(
        o.response_id.as_deref(),
        Some("cmpl-9qT3kZ7vLwXn2bYc8RmD4sHfJ1aQe")
    );
    assert_eq!(o.finish_reasons, ["length"]);
    assert_eq!(tokens(&o), (5, 10, 15));
    assert_eq!(cached_and_reasoning(&o), (None, None));
    assert_eq!(
        choice(&o, 0)["text"],
        "\n\nThis is indeed a test of the emergency broadcast"
    );
    assert!(o.error.is_none() && o.stream.is_none());
}

#[test]
fn error_bodies_and_non_json() {
    let body = br#"{"error":{"message":"The model `gpt-4o` does not work with this endpoint.",
        "type":"invalid_request_error","param":"model","code":"model_not_supported"}}"#;
    let e = parse(body, false).error.expect("error");
    assert_eq!(e.kind.as_deref(), Some("invalid_request_error"));
    assert!(e.message.starts_with("The model `gpt-4o`"));
    let vllm = br#"{"object":"error","message":"bad","type":"BadRequestError","code":400}"#;
    assert_eq!(
        parse_json(vllm).error.and_then(|e| e.kind).as_deref(),
        Some("BadRequestError")
    );
    assert_eq!(parse(b"<html>502</html>", false), Outcome::default());
}

#[test]
fn stream_basic() {
    let o = parse(fixture!("stream.sse"), true);
    let r = response(&o);
    assert_eq!(
        r,
        &json!({"id": "cmpl-9qT4aBcDeFgHiJkLmNoPqRsTuVwXy", "object": "text_completion",
            "created": 1721596500, "model": "gpt-3.5-turbo-instruct",
            "choices": [{"text": "\n\nRoses are red,\nViolets are blue.", "index": 0,
                "logprobs": null, "finish_reason": "stop"}]})
    );
    assert_eq!(o.finish_reasons, ["stop"]);
    assert_eq!(o.usage, None);
    let f = facts(&o);
    assert_eq!((f.chunks, f.saw_end, f.bad_events), (11, true, 0));
    assert_eq!((f.first_token_offset, f.usage_only_chunk), (Some(0), None));
}

#[test]
fn stream_include_usage() {
    let o = parse_stream(fixture!("stream_include_usage.sse"));
    assert_eq!(tokens(&o), (7, 8, 15));
    let r = response(&o);
    assert_eq!(r["usage"]["completion_tokens"], 8);
    assert_eq!(choice(&o, 0)["text"], "\n\nThe capital of France is Paris.");
    assert_eq!(r["choices"].as_array().map(Vec::len), Some(1));
    let f = facts(&o);
    assert_eq!((f.chunks, f.usage_only_chunk), (10, Some((1972, 2184))));
}

#[test]
fn stream_n2_interleaved() {
    let o = parse_stream(fixture!("stream_n2.sse"));
    assert_eq!(choice(&o, 0)["text"], "\n\nRed is warm.");
    assert_eq!(choice(&o, 1)["text"], "\n\nBlue is cool and calm");
    assert_eq!(
        (&choice(&o, 1)["index"], &choice(&o, 1)["finish_reason"]),
        (&json!(1), &json!("length"))
    );
    assert_eq!(o.finish_reasons, ["stop", "length"]);
}

#[test]
fn stream_cut() {
    let o = parse_stream(fixture!("stream_cut.sse"));
    let f = facts(&o);
    assert_eq!((f.saw_end, f.chunks, f.bad_events), (false, 5, 1));
    assert_eq!(choice(&o, 0)["text"], "\n\nOnce upon a time");
    assert_eq!(choice(&o, 0)["finish_reason"], Value::Null);
    assert!(o.finish_reasons.is_empty() && o.usage.is_none());
}

#[test]
fn stream_vllm_usage_logprobs_and_errors() {
    let lp = |t: &str, off: u64| {
        json!({"tokens": [t], "token_logprobs": [-0.5], "top_logprobs": [{t: -0.5}],
            "text_offset": [off]})
    };
    let chunks = [
        json!({"id": "cmpl-v", "model": "meta-llama/Llama-3.1-8B", "choices": [
            {"index": 0, "text": "", "logprobs": null, "finish_reason": null}]}),
        json!({"id": "cmpl-v", "choices": [{"index": 0, "text": "Hi", "logprobs": lp("Hi", 0),
            "finish_reason": null}]}),
        json!({"id": "cmpl-v", "choices": [{"index": 0, "text": "!", "logprobs": lp("!", 2),
            "finish_reason": "stop", "stop_reason": null}],
            "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}}),
        json!({"error": {"message": "late", "type": "server_error"}}),
    ];
    let body = data_events(&chunks);
    let o = parse_stream(body.as_bytes());
    let u = o.usage.expect("usage");
    assert_eq!((u.input_tokens, u.output_tokens), (4, 2));
    let f = facts(&o);
    assert_eq!(f.usage_only_chunk, None);
    // The first chunk's text is empty: the first token is the second event.
    let second = body.match_indices("data: ").nth(1).map(|(i, _)| i);
    assert_eq!(f.first_token_offset, second);
    assert_eq!(
        choice(&o, 0)["logprobs"],
        json!({"tokens": ["Hi", "!"], "token_logprobs": [-0.5, -0.5],
            "top_logprobs": [{"Hi": -0.5}, {"!": -0.5}], "text_offset": [0, 2]})
    );
    assert_eq!(o.error.map(|e| e.message).as_deref(), Some("late"));
    assert_eq!(o.model.as_deref(), Some("meta-llama/Llama-3.1-8B"));
}

const STREAMS: &[&[u8]] = &[
    fixture!("stream.sse"),
    fixture!("stream_include_usage.sse"),
    fixture!("stream_n2.sse"),
    fixture!("stream_cut.sse"),
];

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        parse_any(parse, &bytes);
    }

    #[test]
    fn truncated_streams_yield_prefixes(which in 0..STREAMS.len(), cut in any::<prop::sample::Index>()) {
        let body = STREAMS.get(which).copied().unwrap_or_default();
        let full = parse_stream(body);
        let part = parse_stream(body.get(..cut.index(body.len() + 1)).unwrap_or_default());
        for i in 0..2 {
            let whole = choice(&full, i)["text"].as_str().unwrap_or("");
            let got = part.response.as_ref().and_then(|r| r["choices"][i]["text"].as_str()).unwrap_or("");
            prop_assert!(whole.starts_with(got));
        }
    }
}
