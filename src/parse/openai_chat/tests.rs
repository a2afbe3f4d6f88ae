//! Unit tests for the OpenAI Chat Completions parser, driven by the recorded
//! fixtures under `tests/fixtures/openai_chat/`.

use serde_json::{json, Value};

use super::*;
use crate::parse::test_support::{
    self, assert_choice_by_content, assert_not_json, cached_and_reasoning, data_events, facts,
    response, tokens,
};

macro_rules! fixture {
    ($name:literal) => {
        test_support::fixture!("openai_chat", $name)
    };
}

fn message(o: &Outcome, choice: usize) -> &Value {
    &response(o)["choices"][choice]["message"]
}

#[test]
fn plain_json() {
    let o = parse(fixture!("plain.json"), false);
    assert_eq!(o.model.as_deref(), Some("gpt-4o-mini-2024-07-18"));
    assert_eq!(
        o.response_id.as_deref(),
        Some("chatcmpl-9nR6pLaInJsOnReSpOnSe00000abc")
    );
    assert_eq!(o.finish_reasons, ["stop"]);
    assert_eq!(tokens(&o), (19, 9, 28));
    assert_eq!(cached_and_reasoning(&o), (Some(0), Some(0)));
    assert_eq!(
        message(&o, 0)["content"],
        "Hello! How can I assist you today?"
    );
    assert!(o.error.is_none() && o.stream.is_none());
}

#[test]
fn plain_json_with_tools() {
    let o = parse_json(fixture!("plain_tools.json"));
    assert_eq!(o.finish_reasons, ["tool_calls"]);
    assert_eq!(
        message(&o, 0)["tool_calls"][1]["id"],
        "call_Zk4Hn9PqRt2VwXy6LmBc0DfG"
    );
}

#[test]
fn error_bodies() {
    let o = parse(fixture!("error_401.json"), false);
    let e = o.error.expect("error");
    assert!(e.message.starts_with("Incorrect API key provided"));
    assert_eq!(e.kind.as_deref(), Some("invalid_request_error"));
    assert!(o.usage.is_none() && o.response.is_some());
    let e = parse_json(fixture!("error_429.json")).error.expect("error");
    assert!(e.message.starts_with("Rate limit reached"));
    assert_eq!(e.kind.as_deref(), Some("tokens"));
    // Fallbacks: code as kind, JSON text as message, string errors, vLLM shape.
    let e = parse_json(br#"{"error":{"code":"boom"}}"#)
        .error
        .expect("error");
    assert_eq!(
        (e.message.as_str(), e.kind.as_deref()),
        (r#"{"code":"boom"}"#, Some("boom"))
    );
    let e = parse_json(br#"{"error":"nope"}"#).error.expect("error");
    assert_eq!((e.message.as_str(), e.kind), ("nope", None));
    let vllm = br#"{"object":"error","message":"bad","type":"BadRequestError","code":400}"#;
    let e = parse_json(vllm).error.expect("error");
    assert_eq!(
        (e.message.as_str(), e.kind.as_deref()),
        ("bad", Some("BadRequestError"))
    );
    assert!(parse_json(br#"{"error":null,"choices":[]}"#)
        .error
        .is_none());
}

#[test]
fn not_json_at_all() {
    assert_not_json(parse, parse_json);
}

#[test]
fn stream_basic() {
    let o = parse(fixture!("stream_basic.sse"), true);
    let r = response(&o);
    assert_eq!(r["object"], "chat.completion");
    assert_eq!(r["system_fingerprint"], "fp_0ba0d124f1");
    assert_eq!(r["created"], 1721596428);
    let m = message(&o, 0);
    assert_eq!(m["role"], "assistant");
    assert_eq!(m["content"], "Hello! How can I assist you today?");
    assert!(m.get("refusal").is_none() && m.get("tool_calls").is_none());
    assert_eq!(r["choices"][0]["logprobs"], Value::Null);
    assert!(r.get("usage").is_none());
    assert_eq!(o.usage, None);
    assert_eq!(o.finish_reasons, ["stop"]);
    assert_eq!(
        o.response_id.as_deref(),
        Some("chatcmpl-9nQz8Xw1k2VbR0xG6L3fY7aTqP4sM")
    );
    let f = facts(&o);
    assert_eq!((f.chunks, f.saw_end, f.bad_events), (11, true, 0));
    assert_eq!(
        (f.first_token_offset, f.usage_only_chunk),
        (Some(297), None)
    );
}

#[test]
fn stream_crlf_matches_lf() {
    let crlf = parse_stream(fixture!("stream_crlf.sse"));
    let lf = parse_stream(fixture!("stream_basic.sse"));
    assert_eq!(crlf.response, lf.response);
    assert_eq!(facts(&crlf).first_token_offset, Some(299));
}

#[test]
fn stream_include_usage() {
    let o = parse(fixture!("stream_include_usage.sse"), true);
    assert_eq!(tokens(&o), (1342, 8, 1350));
    assert_eq!(cached_and_reasoning(&o).0, Some(1280));
    let r = response(&o);
    assert_eq!(r["usage"]["prompt_tokens_details"]["cached_tokens"], 1280);
    assert_eq!(r["service_tier"], "default");
    assert_eq!(message(&o, 0)["content"], "The capital of France is Paris.");
    assert_eq!(facts(&o).usage_only_chunk, Some((2764, 3248)));
    assert_eq!(facts(&o).chunks, 10);
}

#[test]
fn stream_usage_in_last_choice_chunk() {
    let o = parse_stream(fixture!("stream_usage_in_last_choice_chunk.sse"));
    assert_eq!(tokens(&o), (25, 6, 31));
    assert_eq!(cached_and_reasoning(&o).0, None);
    assert_eq!(o.finish_reasons, ["length"]);
    assert_eq!(o.model.as_deref(), Some("meta-llama/Llama-3.1-8B-Instruct"));
    assert_eq!(message(&o, 0)["content"], "Sure, here it is.");
    assert_eq!(facts(&o).usage_only_chunk, None);
}

#[test]
fn stream_parallel_tool_calls() {
    let o = parse_stream(fixture!("stream_tool_calls_parallel.sse"));
    let m = message(&o, 0);
    assert_eq!(m["content"], Value::Null);
    let want = json!([
        {"id": "call_7QmX2bYp0vLk3NcR8sTdW1aE", "type": "function", "function": {"name": "get_weather",
            "arguments": "{\"location\": \"San Francisco, CA\", \"unit\": \"celsius\"}"}},
        {"id": "call_Zk4Hn9PqRt2VwXy6LmBc0DfG", "type": "function", "function": {"name": "get_weather",
            "arguments": "{\"location\": \"Tokyo, JP\", \"unit\": \"celsius\"}"}},
    ]);
    assert_eq!(m["tool_calls"], want);
    assert_eq!(o.finish_reasons, ["tool_calls"]);
    assert_eq!(facts(&o).first_token_offset, Some(299));
    // Reconstruction equals OpenAI's own non-stream shape for the same calls.
    let plain = parse_json(fixture!("plain_tools.json"));
    assert_eq!(m["tool_calls"], message(&plain, 0)["tool_calls"]);
}

#[test]
fn stream_n2_interleaved() {
    let o = parse_stream(fixture!("stream_n2.sse"));
    let choices = response(&o)["choices"].as_array().expect("choices");
    assert_eq!(choices.len(), 2);
    assert_eq!(
        (&choices[0]["index"], &choices[1]["index"]),
        (&json!(0), &json!(1))
    );
    assert_eq!(message(&o, 0)["content"], "Red is warm.");
    assert_eq!(message(&o, 1)["content"], "Blue is cool and calm.");
    assert_eq!(o.finish_reasons, ["stop", "length"]);
    assert_eq!(facts(&o).first_token_offset, Some(596));
}

#[test]
fn stream_refusal() {
    let o = parse_stream(fixture!("stream_refusal.sse"));
    let m = message(&o, 0);
    assert_eq!(m["refusal"], "I'm sorry, I can't help with that.");
    assert_eq!(m["content"], Value::Null);
    assert_eq!(facts(&o).first_token_offset, Some(298));
}

#[test]
fn stream_error_midstream() {
    let o = parse_stream(fixture!("stream_error_midstream.sse"));
    let e = o.error.as_ref().expect("error");
    assert!(e.message.starts_with("The server had an error"));
    assert_eq!(e.kind.as_deref(), Some("server_error"));
    assert_eq!(message(&o, 0)["content"], "Once upon a");
    let f = facts(&o);
    assert_eq!((f.chunks, f.saw_end), (4, false));
    assert!(o.finish_reasons.is_empty() && o.usage.is_none());
}

#[test]
fn stream_cut_without_done() {
    let o = parse_stream(fixture!("stream_cut_no_done.sse"));
    let f = facts(&o);
    assert_eq!((f.saw_end, f.chunks, f.bad_events), (false, 6, 1));
    assert_eq!(message(&o, 0)["content"], "Hello! How can I");
    assert!(o.finish_reasons.is_empty());
    assert_eq!(response(&o)["choices"][0]["finish_reason"], Value::Null);
}

#[test]
fn stream_odd_inputs() {
    // Bad JSON is counted and skipped; non-object JSON counts as bad too.
    let o =
        parse_stream(b"data: {nope\n\ndata: 42\n\n: keep-alive\n\nevent: ping\n\ndata: [DONE]\n\n");
    let f = facts(&o);
    assert_eq!((f.chunks, f.bad_events, f.saw_end), (0, 2, true));
    assert_eq!(o.response, None);
    // Content-based choice: a JSON error body under an event-stream type, SSE
    // under a non-stream content type.
    let (json, sse) = (fixture!("error_429.json"), fixture!("stream_basic.sse"));
    assert_choice_by_content(parse, json, sse);
}

#[test]
fn stream_logprobs_and_legacy_function_call() {
    let lp = |t: &str| json!({"token": t, "logprob": -0.1, "bytes": [], "top_logprobs": []});
    let chunks = [
        json!({"id": "c1", "choices": [{"index": 0, "delta": {"content": "a"},
            "logprobs": {"content": [lp("a")], "refusal": null}}]}),
        json!({"id": "c1", "choices": [{"index": 0, "delta": {"content": "b"},
            "logprobs": {"content": [lp("b")], "refusal": null}, "finish_reason": "stop"}]}),
        json!({"id": "c1", "choices": [{"index": 1, "delta": {"role": "assistant",
            "function_call": {"name": "f", "arguments": "{\"x\""}}}]}),
        json!({"id": "c1", "choices": [{"index": 1, "delta": {"function_call": {"arguments": ":1}"}}}]}),
    ];
    let body = data_events(&chunks);
    let o = parse_stream(body.as_bytes());
    let r = response(&o);
    assert_eq!(
        r["choices"][0]["logprobs"],
        json!({"content": [lp("a"), lp("b")], "refusal": null})
    );
    assert_eq!(
        message(&o, 1)["function_call"],
        json!({"name": "f", "arguments": "{\"x\":1}"})
    );
    assert_eq!(o.finish_reasons, ["stop"]);
}
