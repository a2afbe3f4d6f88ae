//! `chunks::attach` on a built span: one `mlflow.chunk.item.N` event per
//! streamed chunk, timed by the chunk's arrival, before the exception event;
//! none for a body that is not a stream or an API autolog records no
//! chunks for.

use super::*;
use crate::trace::chunks;

fn event_value(ev: &SpanEvent) -> Value {
    match &ev.attributes[..] {
        [(k, AttrValue::Str(v))] if k == chunks::VALUE_KEY => serde_json::from_str(v).unwrap(),
        other => panic!("not a chunk event: {other:?}"),
    }
}

#[tokio::test]
async fn each_chunk_becomes_an_event_timed_by_its_arrival() {
    let sse = fixture("stream_basic.sse");
    let mut ex = exchange(br#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#).await;
    let captured = tee(sse_frames(&sse), CAP, 2, Tail::Done).await;
    let arrivals: Vec<u64> = captured
        .0
        .frame_times
        .iter()
        .map(|(_, at)| unix_nanos(&ex, *at))
        .collect();
    respond(&mut ex, 200, body(captured, SSE, None));
    let (mut span, _) = run(&ex);
    assert!(span.events.is_empty(), "off unless attached");
    chunks::attach(&mut span, &ex, CAP);
    assert_eq!(span.events.len(), 11);
    for (i, ev) in span.events.iter().enumerate() {
        assert_eq!(ev.name, format!("mlflow.chunk.item.{i}"));
        // Frame i carries chunk i (the 12th frame is `[DONE]`).
        assert_eq!(ev.time_unix_nano, arrivals[i], "event {i}");
    }
    assert_eq!(
        event_value(&span.events[1])["choices"][0]["delta"]["content"],
        "Hello"
    );
    assert!(arrivals[10] > arrivals[0] + 10_000_000, "{arrivals:?}");
}

#[tokio::test]
async fn chunk_events_come_before_the_exception_of_a_failed_stream() {
    let sse = fixture("stream_error_midstream.sse");
    let mut ex = exchange(br#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#).await;
    let captured = tee(sse_frames(&sse), CAP, 0, Tail::Done).await;
    respond(&mut ex, 200, body(captured, SSE, None));
    let (mut span, _) = build(&ex, CAP);
    assert_eq!(span.events.len(), 1);
    chunks::attach(&mut span, &ex, CAP);
    let last = span.events.last().unwrap();
    assert_eq!(last.name, "exception");
    // Four chunks; the error event is raised by the SDK, not yielded.
    assert_eq!(span.events.len(), 5, "{:?}", span.events);
    assert!(span.events[..span.events.len() - 1]
        .iter()
        .all(|e| e.name.starts_with("mlflow.chunk.item.")));
}

#[tokio::test]
async fn no_events_for_plain_bodies_or_anthropic_streams() {
    let mut ex = exchange(REQ.as_bytes()).await;
    respond(
        &mut ex,
        200,
        whole(&fixture("plain.json"), JSON, None).await,
    );
    let (mut span, _) = run(&ex);
    chunks::attach(&mut span, &ex, CAP);
    assert!(span.events.is_empty());

    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/anthropic/");
    let sse = std::fs::read(format!("{dir}stream_text.sse")).unwrap();
    let mut ex = exchange(br#"{"model":"claude-sonnet-4-5","stream":true,"messages":[]}"#).await;
    ex.api = Api::Messages;
    ex.path = "/v1/messages".into();
    respond(&mut ex, 200, whole(&sse, SSE, None).await);
    let (mut span, _) = build(&ex, CAP);
    chunks::attach(&mut span, &ex, CAP);
    assert!(span.events.is_empty(), "{:?}", span.events);
}

#[tokio::test]
async fn a_gzipped_stream_gets_its_events_at_the_span_end() {
    let sse = fixture("stream_basic.sse");
    let mut ex = exchange(br#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#).await;
    let captured = tee(gzip(&sse_frames(&sse)), CAP, 0, Tail::Done).await;
    respond(&mut ex, 200, body(captured, SSE, Some("gzip")));
    let (mut span, _) = build(&ex, CAP);
    chunks::attach(&mut span, &ex, CAP);
    assert_eq!(span.events.len(), 11);
    assert!(span
        .events
        .iter()
        .all(|e| e.time_unix_nano == span.end_unix_nano));
}

/// A stream of `n` content chunks and a finish chunk, as OpenAI sends it.
fn stream_of(n: usize) -> Vec<u8> {
    let head = r#""id":"chatcmpl-9nSyNtHeTiC000000000000000","object":"chat.completion.chunk","created":1721596428,"model":"gpt-4o-mini-2024-07-18","system_fingerprint":"fp_0ba0d124f1""#;
    let mut out = String::new();
    for i in 0..=n {
        let (delta, finish) = match i {
            0 => (
                r#"{"role":"assistant","content":"","refusal":null}"#.to_string(),
                "null",
            ),
            i if i == n => ("{}".to_string(), "\"stop\""),
            _ => (format!(r#"{{"content":" word{i}"}}"#), "null"),
        };
        out += &format!("data: {{{head},\"choices\":[{{\"index\":0,\"delta\":{delta},\"logprobs\":null,\"finish_reason\":{finish}}}]}}\n\n");
    }
    (out + "data: [DONE]\n\n").into_bytes()
}

/// The OTLP span's encoded size without and with chunk events, and the
/// number of events, for an `n`-chunk stream.
async fn otlp_sizes(n: usize) -> (usize, usize, usize) {
    use prost::Message;
    let sse = stream_of(n);
    let mut ex = exchange(br#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#).await;
    respond(&mut ex, 200, whole(&sse, SSE, None).await);
    let (mut span, _) = build(&ex, CAP);
    let without = crate::otlp::to_span(&span).encoded_len();
    chunks::attach(&mut span, &ex, CAP);
    let with = crate::otlp::to_span(&span).encoded_len();
    (without, with, span.events.len())
}

#[tokio::test]
async fn chunk_events_cost_about_340_bytes_each_in_otlp_and_stop_at_the_cap() {
    for n in [20, 500] {
        let (without, with, events) = otlp_sizes(n).await;
        assert_eq!(events, n + 1);
        let per_event = (with - without) / events;
        // Measured numbers for docs/autolog-fidelity.md (`--nocapture`).
        eprintln!("{n}-chunk stream: OTLP span {without} bytes, {with} with chunk events ({per_event} per event)");
        assert!(
            (250..600).contains(&per_event),
            "{per_event} bytes per event"
        );
    }
    let (_, _, events) = otlp_sizes(chunks::MAX_EVENTS + 500).await;
    assert_eq!(events, chunks::MAX_EVENTS, "capped");
}
