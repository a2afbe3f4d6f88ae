//! Unit tests for the Anthropic Messages parser, driven by the recorded
//! fixtures under `tests/fixtures/anthropic/`.

use proptest::prelude::*;

use super::*;
use crate::parse::test_support::{
    self, assert_choice_by_content, assert_not_json, facts, parse_any, response, typed_events,
};

macro_rules! fixture {
    ($name:literal) => {
        test_support::fixture!("anthropic", $name)
    };
}

fn content(o: &Outcome, block: usize) -> &Value {
    &response(o)["content"][block]
}

fn usage(o: &Outcome) -> (u64, u64, u64, Option<u64>, Option<u64>) {
    let u = o.usage.expect("usage");
    (
        u.input_tokens,
        u.output_tokens,
        u.total_tokens,
        u.cache_read_input_tokens,
        u.cache_creation_input_tokens,
    )
}

#[test]
fn plain_json() {
    let o = parse(fixture!("plain.json"), false);
    assert_eq!(o.model.as_deref(), Some("claude-sonnet-4-5-20250929"));
    assert_eq!(
        o.response_id.as_deref(),
        Some("msg_01XFDUDYJgAACzvnptvVoYEL")
    );
    assert_eq!(o.finish_reasons, ["end_turn"]);
    assert_eq!(usage(&o), (12, 12, 24, Some(0), Some(0)));
    assert_eq!(
        o.usage.expect("usage").to_mlflow_json(),
        json!({"input_tokens": 12, "output_tokens": 12, "total_tokens": 24,
            "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0,
            "cache_creation_input_tokens_above_1hr": 0})
    );
    assert_eq!(content(&o, 0)["text"], "Hello! How can I help you today?");
    assert!(o.error.is_none() && o.stream.is_none());
}

#[test]
fn plain_tool_use() {
    let o = parse_json(fixture!("plain_tool_use.json"));
    assert_eq!(o.finish_reasons, ["tool_use"]);
    let tool = content(&o, 1);
    assert_eq!(tool["type"], "tool_use");
    assert_eq!(tool["name"], "get_weather");
    assert_eq!(
        tool["input"],
        json!({"location": "San Francisco, CA", "unit": "celsius"})
    );
    assert_eq!(usage(&o), (384, 89, 473, Some(0), Some(0)));
}

#[test]
fn plain_with_cache_tokens_and_thinking() {
    let o = parse(fixture!("plain_cache.json"), false);
    // MLflow folds cache reads and writes into input: 3 + 1812 + 248.
    assert_eq!(usage(&o), (2063, 96, 2159, Some(1812), Some(248)));
    assert_eq!(content(&o, 0)["type"], "thinking");
    assert!(content(&o, 0)["thinking"]
        .as_str()
        .is_some_and(|t| t.contains("Clause 4")));
    assert!(content(&o, 1)["text"]
        .as_str()
        .is_some_and(|t| t.starts_with("The contract renews")));
}

#[test]
fn error_bodies() {
    let o = parse(fixture!("error_overloaded.json"), false);
    let e = o.error.as_ref().expect("error");
    assert_eq!(
        (e.message.as_str(), e.kind.as_deref()),
        ("Overloaded", Some("overloaded_error"))
    );
    assert!(o.usage.is_none() && o.model.is_none() && o.finish_reasons.is_empty());
    assert_eq!(response(&o)["request_id"], "req_011CUJ4bJkWzyuPiCsmSXqYM");
    // An error body under an event-stream content type is still JSON.
    let o = parse(fixture!("error_invalid_request.json"), true);
    assert!(o.stream.is_none());
    let e = o.error.expect("error");
    assert!(e.message.starts_with("prompt is too long"));
    assert_eq!(e.kind.as_deref(), Some("invalid_request_error"));
    // Fallbacks: no message, string error, bare error type, no error at all.
    let e = parse_json(br#"{"type":"error","error":{"type":"api_error"}}"#)
        .error
        .expect("error");
    assert_eq!(
        (e.message.as_str(), e.kind.as_deref()),
        (r#"{"type":"api_error"}"#, Some("api_error"))
    );
    let e = parse_json(br#"{"error":"upstream gone"}"#)
        .error
        .expect("error");
    assert_eq!((e.message.as_str(), e.kind), ("upstream gone", None));
    let e = parse_json(br#"{"type":"error"}"#).error.expect("error");
    assert_eq!(e.message, r#"{"type":"error"}"#);
    assert!(parse_json(fixture!("plain.json")).error.is_none());
}

#[test]
fn not_json_at_all() {
    assert_not_json(parse, parse_json);
}

#[test]
fn stream_text_reconstructs_the_plain_message() {
    let o = parse(fixture!("stream_text.sse"), true);
    let plain = parse_json(fixture!("plain.json"));
    assert_eq!(o.response, plain.response);
    assert_eq!(o.usage, plain.usage);
    assert_eq!(o.finish_reasons, ["end_turn"]);
    assert_eq!(o.model, plain.model);
    assert_eq!(o.response_id, plain.response_id);
    assert!(o.error.is_none());
    let f = facts(&o);
    assert_eq!((f.chunks, f.saw_end, f.bad_events), (9, true, 0));
    assert_eq!(
        (f.first_token_offset, f.usage_only_chunk),
        (Some(598), None)
    );
}

#[test]
fn stream_tool_use_merges_and_parses_input() {
    let o = parse(fixture!("stream_tool_use.sse"), false);
    let tool = content(&o, 1);
    assert_eq!(
        tool["input"],
        json!({"location": "San Francisco, CA", "unit": "celsius"})
    );
    assert_eq!(tool["id"], "toolu_01A09q90qw90lq917835lq9");
    assert_eq!(
        content(&o, 0)["text"],
        "I'll check the current weather in San Francisco for you."
    );
    assert_eq!(o.finish_reasons, ["tool_use"]);
    assert_eq!(usage(&o), (384, 89, 473, Some(0), Some(0)));
    // Reconstruction equals Anthropic's own non-stream shape for the same call.
    let plain = parse_json(fixture!("plain_tool_use.json"));
    assert_eq!(o.response, plain.response);
    let f = facts(&o);
    assert_eq!(
        (f.chunks, f.saw_end, f.first_token_offset),
        (18, true, Some(596))
    );
}

#[test]
fn stream_thinking() {
    let o = parse_stream(fixture!("stream_thinking.sse"));
    let thinking = content(&o, 0);
    assert_eq!(thinking["type"], "thinking");
    assert_eq!(
        thinking["thinking"],
        "Let me solve this step by step:\n\n1. First break down 27 * 453\n2. 453 = 400 + 50 + 3\n\
         3. 27 * 400 = 10,800\n4. 27 * 50 = 1,350\n5. 27 * 3 = 81\n6. 10,800 + 1,350 + 81 = 12,231"
    );
    assert!(thinking["signature"]
        .as_str()
        .is_some_and(|s| s.starts_with("EqQBCgIYAhIM")));
    let redacted = content(&o, 1);
    assert_eq!(redacted["type"], "redacted_thinking");
    assert!(redacted["data"]
        .as_str()
        .is_some_and(|d| d.starts_with("EmwK")));
    assert_eq!(
        content(&o, 2),
        &json!({"type": "text", "text": "27 * 453 = 12,231."})
    );
    // message_delta carried only output_tokens: input and cache come from
    // message_start, output from the delta.
    assert_eq!(usage(&o), (1070, 147, 1217, Some(1024), Some(0)));
    assert_eq!(response(&o)["usage"]["output_tokens"], 147);
    assert_eq!(response(&o)["usage"]["service_tier"], "standard");
    let f = facts(&o);
    assert_eq!(
        (f.chunks, f.saw_end, f.first_token_offset),
        (17, true, Some(617))
    );
}

#[test]
fn stream_error_midstream() {
    let o = parse_stream(fixture!("stream_error_midstream.sse"));
    let e = o.error.as_ref().expect("error");
    assert_eq!(
        (e.message.as_str(), e.kind.as_deref()),
        ("Overloaded", Some("overloaded_error"))
    );
    assert_eq!(content(&o, 0)["text"], "Once upon a time");
    assert!(o.finish_reasons.is_empty());
    assert_eq!(response(&o)["stop_reason"], Value::Null);
    // Usage so far is message_start's: input counted, output_tokens 1.
    assert_eq!(usage(&o), (21, 1, 22, Some(0), Some(0)));
    let f = facts(&o);
    assert_eq!((f.chunks, f.saw_end, f.bad_events), (5, false, 0));
    assert_eq!(f.first_token_offset, Some(594));
}

#[test]
fn stream_cut_keeps_raw_tool_input() {
    let o = parse(fixture!("stream_cut.sse"), true);
    let f = facts(&o);
    assert_eq!((f.saw_end, f.chunks, f.bad_events), (false, 6, 1));
    assert_eq!(f.first_token_offset, Some(658));
    let tool = content(&o, 0);
    assert_eq!(tool["name"], "get_weather");
    assert_eq!(tool["input"], "{\"location\": \"Paris, Fr");
    assert!(o.finish_reasons.is_empty());
    assert_eq!(
        o.response_id.as_deref(),
        Some("msg_01Wn5TqYbE8kR2sVzLhC4mJx")
    );
}

#[test]
fn stream_without_usage_has_none() {
    let body = typed_events(&[
        json!({"type": "message_start", "message": {"id": "msg_1",
            "type": "message", "role": "assistant", "model": "m", "content": [],
            "stop_reason": null, "stop_sequence": null}}),
        json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "text_delta", "text": "hi"}}),
        json!({"type": "message_delta",
            "delta": {"stop_reason": "max_tokens", "stop_sequence": null}}),
        json!({"type": "message_stop"}),
    ]);
    let o = parse_stream(body.as_bytes());
    assert_eq!(o.usage, None);
    assert!(response(&o).get("usage").is_none());
    assert_eq!(o.finish_reasons, ["max_tokens"]);
    // A delta whose block never started still lands, typed by its delta.
    assert_eq!(content(&o, 0), &json!({"type": "text", "text": "hi"}));
}

#[test]
fn stream_message_delta_usage_overrides_start() {
    // Newer API versions repeat (and may revise) input and cache counts in
    // message_delta; the last value of each field wins.
    let body = typed_events(&[
        json!({"type": "message_start", "message": {"id": "msg_2",
            "model": "m", "role": "assistant", "content": [], "usage": {"input_tokens": 5,
            "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0, "output_tokens": 1}}}),
        json!({"type": "message_delta",
            "delta": {"stop_reason": "pause_turn", "stop_sequence": null,
                "container": {"id": "container_1"}},
            "context_management": {"applied_edits": []},
            "usage": {"input_tokens": 6, "cache_read_input_tokens": 41203,
                "cache_creation_input_tokens": null, "output_tokens": 21,
                "server_tool_use": {"web_search_requests": 1}}}),
    ]);
    let o = parse_stream(body.as_bytes());
    assert_eq!(usage(&o), (41209, 21, 41230, Some(41203), Some(0)));
    let r = response(&o);
    assert_eq!(r["usage"]["server_tool_use"]["web_search_requests"], 1);
    assert_eq!(r["container"]["id"], "container_1");
    assert_eq!(r["context_management"], json!({"applied_edits": []}));
    assert_eq!(r["stop_reason"], "pause_turn");
    assert_eq!(o.finish_reasons, ["pause_turn"]);
    assert!(!facts(&o).saw_end);
    assert_eq!(facts(&o).first_token_offset, None);
}

#[test]
fn stream_citations_and_server_tools() {
    let cite = |t: &str| {
        json!({"type": "char_location", "cited_text": t,
        "document_index": 0, "document_title": "Doc", "start_char_index": 0, "end_char_index": 3})
    };
    let body = typed_events(&[
        json!({"type": "message_start", "message": {"id": "msg_3",
            "model": "m", "role": "assistant", "content": [], "stop_reason": null,
            "usage": {"input_tokens": 9, "output_tokens": 1}}}),
        json!({"type": "content_block_start", "index": 0,
            "content_block": {"type": "server_tool_use", "id": "srvtoolu_1",
                "name": "web_search", "input": {}}}),
        json!({"type": "content_block_delta", "index": 0,
            "delta": {"type": "input_json_delta", "partial_json": "{\"query\": \"rust\"}"}}),
        json!({"type": "content_block_start", "index": 1,
            "content_block": {"type": "web_search_tool_result", "tool_use_id": "srvtoolu_1",
                "content": [{"type": "web_search_result", "url": "https://example.org"}]}}),
        json!({"type": "content_block_start", "index": 2,
            "content_block": {"type": "text", "text": "", "citations": null}}),
        json!({"type": "content_block_delta", "index": 2,
            "delta": {"type": "citations_delta", "citation": cite("abc")}}),
        json!({"type": "content_block_delta", "index": 2,
            "delta": {"type": "text_delta", "text": "It says abc"}}),
        json!({"type": "content_block_delta", "index": 2,
            "delta": {"type": "citations_delta", "citation": cite("def")}}),
        json!({"type": "content_block_start", "index": 3,
            "content_block": {"type": "tool_use", "id": "toolu_2", "name": "noop", "input": {}}}),
        json!({"type": "content_block_delta", "index": 3,
            "delta": {"type": "input_json_delta", "partial_json": ""}}),
    ]);
    let o = parse_stream(body.as_bytes());
    assert_eq!(content(&o, 0)["input"], json!({"query": "rust"}));
    assert_eq!(content(&o, 1)["content"][0]["url"], "https://example.org");
    assert_eq!(content(&o, 2)["text"], "It says abc");
    assert_eq!(
        content(&o, 2)["citations"],
        json!([cite("abc"), cite("def")])
    );
    // Empty partial JSON leaves the start's `input: {}`.
    assert_eq!(content(&o, 3)["input"], json!({}));
    assert_eq!(usage(&o), (9, 1, 10, None, None));
}

#[test]
fn stream_odd_inputs() {
    // Bad JSON and non-object JSON are counted and skipped; pings are chunks
    // but make no response.
    let o = parse_stream(
        b"event: ping\ndata: {\"type\": \"ping\"}\n\ndata: {nope\n\ndata: 42\n\n: keep-alive\n\nevent: ping\n\n",
    );
    let f = facts(&o);
    assert_eq!((f.chunks, f.bad_events, f.saw_end), (1, 2, false));
    assert_eq!(o.response, None);
    // An error event known only by its SSE name, without a `type` field.
    let o = parse_stream(b"event: error\ndata: {\"message\":\"boom\"}\n\n");
    assert_eq!(o.error.expect("error").message, r#"{"message":"boom"}"#);
    // CRLF framing parses the same as LF.
    let crlf = String::from_utf8_lossy(fixture!("stream_text.sse")).replace('\n', "\r\n");
    let lf = parse_stream(fixture!("stream_text.sse"));
    assert_eq!(parse_stream(crlf.as_bytes()).response, lf.response);
    // Content-based choice: SSE under a non-stream content type is still
    // parsed as a stream (and a JSON body under an event-stream type as JSON).
    let (json, sse) = (
        fixture!("error_invalid_request.json"),
        fixture!("stream_text.sse"),
    );
    assert_choice_by_content(parse, json, sse);
    // A delta before any start, with no index, and a start with no index.
    let body = typed_events(&[
        json!({"type": "content_block_delta",
            "delta": {"type": "thinking_delta", "thinking": "hm"}}),
        json!({"type": "content_block_start",
            "content_block": {"type": "text", "text": "x"}}),
        json!({"type": "content_block_delta",
            "delta": {"type": "text_delta", "text": "y"}}),
        json!({"type": "message_stop"}),
    ]);
    let o = parse_stream(body.as_bytes());
    assert_eq!(
        response(&o)["content"],
        json!([{"type": "thinking", "thinking": "hm"}, {"type": "text", "text": "xy"}])
    );
    assert_eq!(response(&o)["id"], Value::Null);
    assert!(o.usage.is_none() && o.model.is_none());
}

/// Bytes drawn mostly from the Anthropic stream vocabulary.
fn anthropic_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        prop::sample::select(
            b"event: data: {}[]\":,\n\r message_start content_block_delta index 0 1 text_delta \
              input_json_delta partial_json usage error type"
                .to_vec()
        ),
        any::<u8>(),
    ]
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(anthropic_byte(), 0..600)) {
        parse_any(parse, &bytes);
        let _ = parse_json(&bytes);
        let _ = parse_stream(&bytes);
    }

    #[test]
    fn any_prefix_of_a_fixture_never_panics(cut in 0usize..3000, which in 0usize..5) {
        let all = [
            fixture!("stream_text.sse"),
            fixture!("stream_tool_use.sse"),
            fixture!("stream_thinking.sse"),
            fixture!("stream_error_midstream.sse"),
            fixture!("stream_cut.sse"),
        ];
        let body = all.get(which).copied().unwrap_or_default();
        let prefix = body.get(..cut.min(body.len())).unwrap_or_default();
        let o = parse_stream(prefix);
        let saw_end = o.stream.as_ref().is_some_and(|f| f.saw_end);
        let has_stop = prefix.windows(12).any(|w| w == b"message_stop");
        prop_assert!(!saw_end || has_stop);
    }
}
