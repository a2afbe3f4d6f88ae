//! Unit tests for the OpenAI Responses parser, driven by the recorded-format
//! fixtures under `tests/fixtures/openai_responses/`.

use proptest::prelude::*;
use serde_json::{json, Value};

use super::*;
use crate::parse::sse;
use crate::parse::test_support::{
    self, assert_choice_by_content, assert_not_json, cached_and_reasoning, facts, parse_any,
    response, tokens, typed_events,
};

macro_rules! fixture {
    ($name:literal) => {
        test_support::fixture!("openai_responses", $name)
    };
}

const STREAMS: &[&[u8]] = &[
    fixture!("stream_text.sse"),
    fixture!("stream_function_call.sse"),
    fixture!("stream_reasoning.sse"),
    fixture!("stream_failed.sse"),
    fixture!("stream_incomplete.sse"),
    fixture!("stream_error_event.sse"),
    fixture!("stream_cut.sse"),
];

fn output(o: &Outcome, i: usize) -> &Value {
    &response(o)["output"][i]
}

fn text(o: &Outcome, i: usize) -> &Value {
    &output(o, i)["content"][0]["text"]
}

/// The fixture without the events of the given types (as if never sent).
fn without(body: &[u8], types: &[&str]) -> Vec<u8> {
    let text = std::str::from_utf8(body).expect("utf-8 fixture");
    text.split_inclusive("\n\n")
        .filter(|block| {
            let kind = block.lines().next().and_then(|l| l.strip_prefix("event: "));
            !kind.is_some_and(|k| types.contains(&k))
        })
        .collect::<String>()
        .into_bytes()
}

/// The terminal event's `response` object, straight from the fixture.
fn terminal_response(body: &[u8]) -> Value {
    let last = sse::decode_all(body).pop().expect("events");
    let v: Value = serde_json::from_str(&last.data).expect("json");
    v["response"].clone()
}

const DONE_EVENTS: [&str; 9] = [
    "response.completed",
    "response.output_item.done",
    "response.content_part.done",
    "response.output_text.done",
    "response.function_call_arguments.done",
    "response.reasoning_summary_part.done",
    "response.reasoning_summary_text.done",
    "response.failed",
    "response.incomplete",
];

#[test]
fn plain_json() {
    let o = parse(fixture!("plain.json"), false);
    assert_eq!(o.model.as_deref(), Some("gpt-4o-2024-08-06"));
    assert_eq!(
        o.response_id.as_deref(),
        Some("resp_ed1cc0c8f023d142212a52a4da97868c04f1d2c3b4a59687")
    );
    assert_eq!(o.finish_reasons, ["completed"]);
    assert_eq!(tokens(&o), (1247, 38, 1285));
    assert_eq!(cached_and_reasoning(&o), (Some(1152), Some(0)));
    assert!(text(&o, 0)
        .as_str()
        .is_some_and(|t| t.starts_with("Under a silver moon")));
    assert!(o.error.is_none() && o.stream.is_none());
}

#[test]
fn plain_function_call_with_reasoning() {
    let o = parse_json(fixture!("plain_function_call.json"));
    assert_eq!(o.finish_reasons, ["completed"]);
    assert_eq!(o.usage.expect("usage").reasoning_tokens, Some(64));
    assert_eq!(output(&o, 0)["type"], "reasoning");
    let call = output(&o, 1);
    assert_eq!(
        (&call["name"], &call["call_id"]),
        (
            &json!("get_weather"),
            &json!("call_Wn4Rt7YpB2xQe9LsKd1Fv6Hz")
        )
    );
    assert_eq!(
        call["arguments"],
        "{\"location\":\"Paris, France\",\"unit\":\"celsius\"}"
    );
}

#[test]
fn error_bodies() {
    let o = parse(fixture!("error_400.json"), false);
    let e = o.error.as_ref().expect("error");
    assert_eq!(
        e.message,
        "Unsupported parameter: 'temperature' is not supported with this model."
    );
    assert_eq!(e.kind.as_deref(), Some("invalid_request_error"));
    assert!(o.usage.is_none() && o.finish_reasons.is_empty() && o.response.is_some());
    // A failed response carries `error: {code, message}`.
    let failed = br#"{"id":"resp_1","object":"response","status":"failed",
        "error":{"code":"server_error","message":"boom"},"usage":null}"#;
    let o = parse_json(failed);
    let e = o.error.expect("error");
    assert_eq!(
        (e.message.as_str(), e.kind.as_deref()),
        ("boom", Some("server_error"))
    );
    assert_eq!(o.finish_reasons, ["failed"]);
    assert_eq!(o.usage, None);
    // Failed without an error object, and vLLM's error shape.
    let e = parse_json(br#"{"status":"failed","error":null}"#).error;
    assert_eq!(e.map(|e| e.message).as_deref(), Some("response failed"));
    let vllm = br#"{"object":"error","message":"bad","type":"BadRequestError","code":400}"#;
    let e = parse_json(vllm).error.expect("error");
    assert_eq!(
        (e.message.as_str(), e.kind.as_deref()),
        ("bad", Some("BadRequestError"))
    );
}

#[test]
fn plain_incomplete_reports_reason_not_error() {
    let body = br#"{"object":"response","status":"incomplete",
        "incomplete_details":{"reason":"content_filter"},"error":null,
        "usage":{"input_tokens":5,"output_tokens":2,"total_tokens":7}}"#;
    let o = parse_json(body);
    assert_eq!(o.finish_reasons, ["content_filter"]);
    assert!(o.error.is_none());
    let no_reason = br#"{"status":"incomplete","incomplete_details":null}"#;
    assert_eq!(parse_json(no_reason).finish_reasons, ["incomplete"]);
}

#[test]
fn not_json_at_all() {
    assert_not_json(parse, parse_json);
}

#[test]
fn stream_text() {
    let body = fixture!("stream_text.sse");
    let o = parse(body, true);
    let r = response(&o);
    // The terminal event's response is the reconstruction, verbatim.
    assert_eq!(r, &terminal_response(body));
    assert_eq!(
        text(&o, 0),
        "The capital of France is Paris. It sits on the Seine."
    );
    assert_eq!(o.finish_reasons, ["completed"]);
    assert_eq!(o.model.as_deref(), Some("gpt-4o-2024-08-06"));
    assert_eq!(
        o.response_id.as_deref(),
        Some("resp_871f149ce31a1d527445bfd5c81a345d0a1b2c3d4e5f6071")
    );
    assert_eq!(tokens(&o), (1310, 14, 1324));
    assert_eq!(cached_and_reasoning(&o).0, Some(1152));
    assert!(o.error.is_none());
    let f = facts(&o);
    assert_eq!((f.chunks, f.saw_end, f.bad_events), (21, true, 0));
    assert_eq!(
        (f.first_token_offset, f.usage_only_chunk),
        (Some(2065), None)
    );
}

#[test]
fn stream_text_rebuilt_from_deltas_alone() {
    let body = without(fixture!("stream_text.sse"), &DONE_EVENTS);
    let o = parse_stream(&body);
    let item = output(&o, 0);
    assert_eq!(item["status"], "in_progress");
    assert_eq!(item["role"], "assistant");
    assert_eq!(
        text(&o, 0),
        "The capital of France is Paris. It sits on the Seine."
    );
    let r = response(&o);
    assert_eq!(
        (&r["status"], &r["usage"]),
        (&json!("in_progress"), &Value::Null)
    );
    assert_eq!(o.usage, None);
    assert!(o.finish_reasons.is_empty());
    assert!(!facts(&o).saw_end);
}

#[test]
fn stream_function_calls() {
    let body = fixture!("stream_function_call.sse");
    let o = parse_stream(body);
    let args = |city: &str| format!("{{\"location\":\"{city}\",\"unit\":\"celsius\"}}");
    assert_eq!(output(&o, 0)["arguments"], args("Paris, France"));
    assert_eq!(output(&o, 1)["arguments"], args("Tokyo, Japan"));
    assert_eq!(output(&o, 1)["call_id"], "call_H9tYw3JmQ6aNf1xKcZ5uB8rD");
    assert_eq!(o.finish_reasons, ["completed"]);
    assert_eq!(facts(&o).first_token_offset, Some(2556));
    assert_eq!(tokens(&o), (312, 58, 370));
    // Arguments merged from the deltas alone equal the final ones.
    let cut = parse_stream(&without(body, &DONE_EVENTS));
    for i in 0..2 {
        assert_eq!(output(&cut, i)["arguments"], output(&o, i)["arguments"]);
        assert_eq!(output(&cut, i)["name"], "get_weather");
        assert_eq!(output(&cut, i)["status"], "in_progress");
    }
    // Finished items alone (no terminal event) equal the final output.
    let items = parse_stream(&without(body, &["response.completed"]));
    assert_eq!(response(&items)["output"], response(&o)["output"]);
}

#[test]
fn stream_reasoning() {
    let body = fixture!("stream_reasoning.sse");
    let o = parse_stream(body);
    assert_eq!(tokens(&o), (42, 219, 261));
    assert_eq!(cached_and_reasoning(&o), (Some(0), Some(192)));
    let summary =
        "**Comparing fractions**\n\nI need to compare 9.11 and 9.9; 9.9 is 9.90, which is larger.";
    assert_eq!(output(&o, 0)["summary"][0]["text"], summary);
    assert_eq!(text(&o, 1), "9.9 is larger than 9.11.");
    // Reasoning summary deltas are not output tokens.
    assert_eq!(facts(&o).first_token_offset, Some(9567));
    // Summary and text assembled from the deltas alone.
    let cut = parse_stream(&without(body, &DONE_EVENTS));
    assert_eq!(
        output(&cut, 0)["summary"],
        json!([{"type": "summary_text", "text": summary}])
    );
    assert_eq!(text(&cut, 1), "9.9 is larger than 9.11.");
    assert_eq!(cut.usage, None);
}

#[test]
fn stream_failed() {
    let o = parse_stream(fixture!("stream_failed.sse"));
    let e = o.error.as_ref().expect("error");
    assert!(e.message.starts_with("An error occurred while processing"));
    assert_eq!(e.kind.as_deref(), Some("server_error"));
    assert_eq!(o.finish_reasons, ["failed"]);
    assert_eq!(o.usage, None);
    let r = response(&o);
    assert_eq!(r["status"], "failed");
    // The failed response's empty output is filled with what was streamed.
    assert_eq!(text(&o, 0), "Once upon a time");
    let f = facts(&o);
    assert_eq!((f.saw_end, f.chunks), (true, 9));
}

#[test]
fn stream_incomplete() {
    let o = parse_stream(fixture!("stream_incomplete.sse"));
    assert_eq!(o.finish_reasons, ["max_output_tokens"]);
    assert!(o.error.is_none());
    assert_eq!(tokens(&o), (25, 16, 41));
    assert_eq!(output(&o, 0)["status"], "incomplete");
    assert!(text(&o, 0)
        .as_str()
        .is_some_and(|t| t.ends_with("three hearts, and")));
    assert!(facts(&o).saw_end);
}

#[test]
fn stream_error_event() {
    let o = parse_stream(fixture!("stream_error_event.sse"));
    let e = o.error.as_ref().expect("error");
    assert!(e.message.starts_with("The server had an error"));
    assert_eq!(e.kind.as_deref(), Some("server_error"));
    assert_eq!(text(&o, 0), "Sure, here");
    assert_eq!(o.model.as_deref(), Some("gpt-4o-2024-08-06"));
    assert!(o.response_id.is_some());
    assert!(o.finish_reasons.is_empty() && o.usage.is_none());
    let f = facts(&o);
    assert_eq!((f.chunks, f.saw_end, f.bad_events), (7, false, 0));
}

#[test]
fn stream_cut_mid_event() {
    let o = parse_stream(fixture!("stream_cut.sse"));
    let f = facts(&o);
    assert_eq!((f.saw_end, f.chunks, f.bad_events), (false, 11, 1));
    assert_eq!(f.first_token_offset, Some(2499));
    assert_eq!(output(&o, 0)["type"], "reasoning");
    assert_eq!(text(&o, 1), "Photosynthesis converts light energy");
    let r = response(&o);
    assert_eq!(
        (&r["status"], &r["usage"]),
        (&json!("in_progress"), &Value::Null)
    );
    assert_eq!(o.model.as_deref(), Some("o4-mini-2025-04-16"));
    assert!(o.usage.is_none() && o.finish_reasons.is_empty() && o.error.is_none());
}

#[test]
fn stream_error_shapes() {
    // Nested error object (as some servers send it), then a bare error payload.
    let nested = b"event: error\ndata: {\"type\":\"error\",\"sequence_number\":2,\
        \"error\":{\"type\":\"invalid_request_error\",\"code\":\"bad\",\"message\":\"nope\"}}\n\n";
    let e = parse_stream(nested).error.expect("error");
    assert_eq!(
        (e.message.as_str(), e.kind.as_deref()),
        ("nope", Some("invalid_request_error"))
    );
    let bare = b"data: {\"error\":{\"message\":\"overloaded\",\"code\":\"overloaded\"}}\n\n";
    let o = parse_stream(bare);
    let e = o.error.clone().expect("error");
    assert_eq!(
        (e.message.as_str(), e.kind.as_deref()),
        ("overloaded", Some("overloaded"))
    );
    assert_eq!((facts(&o).chunks, o.response), (0, None));
    // A flat error event without a code; the SSE event name stands in for `type`.
    let flat = b"event: error\ndata: {\"message\":\"m\",\"param\":null}\n\n";
    let e = parse_stream(flat).error.expect("error");
    assert_eq!((e.message.as_str(), e.kind), ("m", None));
}

#[test]
fn stream_deltas_without_announced_items() {
    let events = [
        json!({"type": "response.refusal.delta", "item_id": "msg_1", "output_index": 0,
            "content_index": 0, "delta": "I can't"}),
        json!({"type": "response.refusal.delta", "item_id": "msg_1", "output_index": 0,
            "content_index": 0, "delta": " help."}),
        json!({"type": "response.function_call_arguments.delta", "item_id": "fc_1",
            "delta": "{\"a\":"}),
        json!({"type": "response.function_call_arguments.delta", "item_id": "fc_1",
            "delta": "1}"}),
        json!({"type": "response.output_text.delta", "item_id": "msg_2", "output_index": 2,
            "content_index": 1, "delta": "x"}),
        json!({"type": "response.output_text.delta", "output_index": 2, "content_index": 1,
            "delta": 7}),
    ];
    let body = typed_events(&events);
    let o = parse_stream(body.as_bytes());
    let r = response(&o);
    assert_eq!(
        r["output"],
        json!([
            {"id": "msg_1", "type": "message", "status": "in_progress", "role": "assistant",
                "content": [{"type": "refusal", "refusal": "I can't help."}]},
            {"id": "fc_1", "type": "function_call", "status": "in_progress", "arguments": "{\"a\":1}"},
            {"id": "msg_2", "type": "message", "status": "in_progress", "role": "assistant",
                "content": [{"type": "output_text", "annotations": [], "text": "x"}]},
        ])
    );
    assert_eq!(r["object"], "response");
    assert_eq!(facts(&o).first_token_offset, Some(0));
    assert_eq!((o.model, o.response_id), (None, None));
}

#[test]
fn stream_odd_inputs() {
    // Bad JSON and non-objects are counted; `[DONE]` and pings are not.
    let o =
        parse_stream(b"data: {nope\n\ndata: 42\n\n: keep-alive\n\nevent: ping\n\ndata: [DONE]\n\n");
    let f = facts(&o);
    assert_eq!((f.chunks, f.bad_events, f.saw_end), (0, 2, false));
    assert_eq!(o.response, None);
    // Content-based choice in both directions.
    let (json, sse) = (fixture!("error_400.json"), fixture!("stream_text.sse"));
    assert_choice_by_content(parse, json, sse);
    // A terminal event without a response object still ends the stream.
    let o = parse_stream(b"data: {\"type\":\"response.completed\",\"response\":null}\n\n");
    assert_eq!((facts(&o).saw_end, o.response), (true, None));
}

#[test]
fn cut_at_every_event_boundary_yields_a_prefix() {
    let body = fixture!("stream_text.sse");
    let full = "The capital of France is Paris. It sits on the Seine.";
    for ev in sse::decode_all(body) {
        let o = parse_stream(body.get(..ev.end).unwrap_or_default());
        let got = o
            .response
            .as_ref()
            .and_then(|r| r["output"][0]["content"][0]["text"].as_str())
            .unwrap_or("");
        assert!(full.starts_with(got), "cut at {}: {got:?}", ev.end);
        assert_eq!(o.usage.is_some(), ev.end == body.len());
    }
}

/// One event of a random, loosely typed Responses stream.
fn event() -> impl Strategy<Value = String> {
    let kind = prop::sample::select(vec![
        "response.created",
        "response.completed",
        "response.failed",
        "response.output_item.added",
        "response.output_item.done",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.refusal.delta",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.reasoning_summary_part.added",
        "response.reasoning_summary_text.delta",
        "response.reasoning_text.done",
        "error",
        "something.else",
    ]);
    let any_value = || {
        prop::sample::select(vec![
            json!(null),
            json!(0),
            json!(1),
            json!(u64::MAX),
            json!(-1),
            json!("x"),
            json!([]),
            json!({}),
            json!({"type": "message", "id": "m"}),
            json!({"output": 3, "usage": {"input_tokens": 1}, "status": "failed"}),
        ])
    };
    (kind, any_value(), any_value(), any_value(), any_value()).prop_map(|(k, idx, delta, item, resp)| {
        let v = json!({"type": k, "output_index": idx, "content_index": idx, "summary_index": idx,
            "item_id": "i", "delta": delta, "text": delta, "arguments": delta, "item": item,
            "part": item, "response": resp, "error": resp});
        format!("event: {k}\ndata: {v}\n\n")
    })
}

proptest! {
    #[test]
    fn random_event_sequences_never_panic(events in prop::collection::vec(event(), 0..24)) {
        let body = events.concat();
        let o = parse_stream(body.as_bytes());
        let f = o.stream.unwrap_or_default();
        prop_assert_eq!(f.chunks + f.bad_events <= events.len(), true);
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        parse_any(parse, &bytes);
    }

    #[test]
    fn truncated_fixtures_never_panic(which in 0..STREAMS.len(), cut in any::<prop::sample::Index>()) {
        let body = STREAMS.get(which).copied().unwrap_or_default();
        let o = parse(body.get(..cut.index(body.len() + 1)).unwrap_or_default(), true);
        let f = o.stream.unwrap_or_default();
        if let Some(t) = f.first_token_offset {
            prop_assert!(t < body.len());
        }
    }
}
