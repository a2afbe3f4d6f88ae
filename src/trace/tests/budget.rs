//! Memory per call: a compression bomb decodes to the capture cap, a body
//! whose `Value`s would pass the parse budget is not parsed, and a call
//! without a capture still gets a span with its facts.

use super::*;
use crate::capture_budget::Shortfall;

fn gzip_bytes(b: &[u8]) -> Vec<u8> {
    gzip(&[Bytes::copy_from_slice(b)]).concat()
}

#[tokio::test]
async fn a_gzip_bomb_decodes_to_the_capture_cap_and_says_so() {
    // 8 MiB of JSON inflated from ~8 KiB on the wire.
    let mut bomb = b"{\"model\":\"m\",\"input\":\"".to_vec();
    bomb.resize(8 << 20, b'a');
    let gz = gzip_bytes(&bomb);
    assert!(gz.len() < 64 << 10);
    let mut ex = exchange(REQ.as_bytes()).await;
    ex.request = Some(whole(&gz, JSON, Some("gzip")).await);
    respond(&mut ex, 200, whole(&gz, JSON, Some("gzip")).await);
    let (span, _) = run(&ex);
    for which in ["request", "response"] {
        assert_eq!(
            span.get(&format!("llmtap.{which}.bytes")),
            Some(&n(gz.len())),
            "wire size"
        );
        assert_eq!(
            span.get(&format!("llmtap.{which}.decoded_bytes")),
            Some(&n(CAP))
        );
        assert_eq!(
            span.get_str(&format!("llmtap.{which}.truncated_reason")),
            Some("decoded_cap")
        );
        assert_eq!(
            span.get(&format!("llmtap.{which}.truncated")),
            Some(&AttrValue::from(true))
        );
    }
    assert_eq!(span.get_str("mlflow.spanInputs").map(str::len), Some(CAP));
    assert_eq!(span.get_str("mlflow.spanOutputs").map(str::len), Some(CAP));
    has!(span; "http.response.status_code" => 200i64);
}

#[tokio::test]
async fn bodies_past_the_parse_budget_are_kept_unparsed_with_the_calls_facts() {
    // ~1 MiB of `0,` is ~500k values: ~32 MiB of `Value`s, past 16 x 1 MiB.
    let zeros = format!(
        "{{\"model\":\"m\",\"input\":[{}0]}}",
        "0,".repeat((CAP - 64) / 2)
    );
    assert!(zeros.len() <= CAP);
    let mut ex = exchange(zeros.as_bytes()).await;
    respond(&mut ex, 200, whole(zeros.as_bytes(), JSON, None).await);
    let (span, _) = run(&ex);
    assert_ok(&span);
    has!(span;
        "llmtap.request.unparsed" => "parse_budget",
        "llmtap.response.unparsed" => "parse_budget",
        "http.response.status_code" => 200i64,
        "llmtap.request.bytes" => n(zeros.len()),
        "llmtap.response.bytes" => n(zeros.len()),
    );
    assert_eq!(span.get_str("mlflow.spanInputs"), Some(zeros.as_str()));
    assert_eq!(span.get_str("mlflow.spanOutputs"), Some(zeros.as_str()));
    lacks!(span; "gen_ai.request.model", "mlflow.llm.model", "llmtap.request.truncated");

    // A stream whose one event is too dear is unparsed, not an incomplete stream.
    let sse = format!("data: [{}0]\n\n", "0,".repeat((CAP - 64) / 2));
    let mut ex = exchange(STREAM_REQ.as_bytes()).await;
    respond(&mut ex, 200, whole(sse.as_bytes(), SSE, None).await);
    let (span, _) = run(&ex);
    assert_ok(&span);
    has!(span; "llmtap.response.unparsed" => "parse_budget", "gen_ai.request.model" => "gpt-4o-mini");
    lacks!(span; "llmtap.request.unparsed");
}

#[tokio::test]
async fn an_ordinary_call_is_parsed_within_the_budget() {
    let mut ex = exchange(REQ.as_bytes()).await;
    respond(
        &mut ex,
        200,
        whole(&fixture("plain.json"), JSON, None).await,
    );
    let (span, _) = run(&ex);
    lacks!(span; "llmtap.request.unparsed", "llmtap.response.unparsed", "llmtap.capture.skipped");
    has!(span; "gen_ai.request.model" => "gpt-4o-mini");
}

#[tokio::test]
async fn a_call_without_a_capture_is_traced_with_its_facts() {
    let sse = fixture("stream_include_usage.sse");
    let skipped = |b: &[u8]| CapturedBody {
        capture: Capture::skip(Shortfall::MemoryBudget).with_body(&Bytes::copy_from_slice(b)),
        end: BodyEnd::Complete,
        content_type: Some(SSE.into()),
        content_encoding: None,
    };
    let mut ex = exchange(STREAM_REQ.as_bytes()).await;
    ex.request = Some(skipped(STREAM_REQ.as_bytes()));
    respond(&mut ex, 200, skipped(&sse));
    let (span, _) = run(&ex);
    assert_ok(&span);
    has!(span;
        "llmtap.capture.skipped" => "memory_budget",
        "llmtap.response.truncated_reason" => "memory_budget",
        "llmtap.request.truncated_reason" => "memory_budget",
        "llmtap.response.bytes" => n(sse.len()),
        "llmtap.request.bytes" => n(STREAM_REQ.len()),
        "http.response.status_code" => 200i64,
    );
    assert!(span.end_unix_nano > span.start_unix_nano);

    // An empty body lost nothing: not truncated, though not captured either.
    let mut ex = exchange(STREAM_REQ.as_bytes()).await;
    ex.request = Some(skipped(b""));
    let (span, _) = run(&ex);
    has!(span; "llmtap.capture.skipped" => "memory_budget", "llmtap.request.bytes" => n(0));
    lacks!(span; "llmtap.request.truncated", "llmtap.request.truncated_reason");
}
