//! The usage-hiding filter through the proxy: it streams (a huge event or a
//! huge non-stream reply reaches the client while the provider is still
//! sending), it holds at most one bounded event, and it touches only 2xx
//! event streams.

#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/tap.rs"]
mod tap;

use std::time::Duration;

use bytes::Bytes;
use fake_provider::{FakeProvider, Reply, Step};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;
use tap::{get, post, post_streaming, Tap};

const CHAT: &str = "/v1/chat/completions";
const USAGE_ONLY: &str = "data: {\"id\":\"c\",\"choices\":[],\"usage\":{\"prompt_tokens\":5,\"completion_tokens\":1,\"total_tokens\":6}}\n\n";
const DONE: &str = "data: [DONE]\n\n";

/// A stream request without `include_usage`: llmtap injects it.
fn stream_request() -> Vec<u8> {
    serde_json::to_vec(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": true})).unwrap()
}

/// `body` as frames of 64 KiB.
fn frames(body: &Bytes) -> Vec<Step> {
    (0..body.len())
        .step_by(64 << 10)
        .map(|at| Step::Send(body.slice(at..body.len().min(at + (64 << 10)))))
        .collect()
}

/// Reads until `n` bytes have arrived (the provider still gated), or fails
/// after 60 s.
async fn read_at_least(body: &mut Incoming, n: usize) -> Vec<u8> {
    let mut got = Vec::new();
    let read = async {
        while got.len() < n {
            match body.frame().await {
                Some(Ok(f)) => got.extend_from_slice(f.data_ref().map_or(&[][..], |d| d)),
                other => panic!("the body ended early after {} bytes: {other:?}", got.len()),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), read)
        .await
        .unwrap_or_else(|_| panic!("only part of the first {n} bytes reached the client"));
    got
}

async fn read_rest(body: Incoming) -> Bytes {
    tokio::time::timeout(Duration::from_secs(60), body.collect())
        .await
        .expect("the body ends")
        .expect("body")
        .to_bytes()
}

async fn metric(tap: &Tap, name: &str) -> String {
    let text = String::from_utf8(get(&tap.admin_url("/metrics")).await.body.to_vec()).unwrap();
    text.lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("{name} missing from /metrics"))
        .to_string()
}

#[tokio::test]
async fn an_8_mib_event_streams_through_untouched_and_the_trace_says_usage_was_not_hidden() {
    let mut line = b"data: {\"choices\":[{\"delta\":{\"content\":\"".to_vec();
    line.resize(8 << 20, b'x');
    line.extend_from_slice(b"\"}}],\"usage\":null}");
    let line = Bytes::from(line);
    let (l, tail) = (line.clone(), format!("\n\n{USAGE_ONLY}{DONE}"));
    let provider = FakeProvider::start(move |_| {
        let mut reply = Reply::sse(b"");
        reply.steps = frames(&l);
        reply.steps.push(Step::Gate);
        reply.steps.push(Step::Send(Bytes::from(tail.clone())));
        reply
    })
    .await;
    let tap = Tap::start(&provider.url(), &[]).await;
    let (trace, mut body) = post_streaming(&tap.url(CHAT), stream_request()).await;

    let first = read_at_least(&mut body, line.len()).await;
    assert_eq!(
        first, line,
        "the whole event reached the client before the provider finished it"
    );
    provider.release();
    let rest = read_rest(body).await;
    assert_eq!(
        &rest[..],
        format!("\n\n{DONE}").as_bytes(),
        "the event went through untouched; the usage chunk after it was still hidden"
    );

    let span = tap.span(&trace).await;
    let reason = span.str("llmtap.usage_hiding.failed").expect("attribute");
    assert!(reason.contains("longer than 1048576 bytes"), "{reason}");
    assert_eq!(
        metric(&tap, "llmtap_usage_hiding_failures_total").await,
        "llmtap_usage_hiding_failures_total 1"
    );
}

#[tokio::test]
async fn a_64_mib_json_reply_to_an_injected_request_streams_untouched() {
    let reply: Bytes = {
        let mut v = b"{\"choices\":[],\"usage\":null,\"pad\":\"".to_vec();
        v.resize((64 << 20) - 2, b'y');
        v.extend_from_slice(b"\"}");
        v.into()
    };
    let r = reply.clone();
    let provider = FakeProvider::start(move |_| {
        let mut reply = Reply::json(200, r.clone());
        let mut steps = frames(&r);
        let last = steps.pop().unwrap();
        steps.extend([Step::Gate, last]);
        reply.steps = steps;
        reply
    })
    .await;
    let tap = Tap::start(&provider.url(), &[]).await;
    let (trace, mut body) = post_streaming(&tap.url(CHAT), stream_request()).await;
    assert!(
        serde_json::from_slice::<serde_json::Value>(&provider.seen()[0].body).unwrap()
            ["stream_options"]["include_usage"]
            == true,
        "usage was injected"
    );
    // Everything but the gated last frame reaches the client first.
    let mut got = read_at_least(&mut body, reply.len() - (64 << 10)).await;
    provider.release();
    got.extend_from_slice(&read_rest(body).await);
    assert!(got == reply, "the reply, byte for byte");
    let span = tap.span(&trace).await;
    assert!(span.attr("llmtap.usage_hiding.failed").is_none());
}

#[tokio::test]
async fn an_injected_requests_error_answer_is_never_filtered() {
    // An error in SSE shape that the filter would change if it ran.
    let error = format!("data: {{\"choices\":[{{}}],\"usage\":null}}\n\n{USAGE_ONLY}");
    let e = error.clone();
    let provider = FakeProvider::start(move |_| {
        let mut reply = Reply::sse(e.as_bytes());
        reply.status = 429;
        reply
    })
    .await;
    let json_error = r#"{"error":{"message":"bad","type":"invalid_request_error"},"usage":null}"#;
    let json_provider = FakeProvider::start(move |_| Reply::json(400, json_error)).await;

    let tap = Tap::start(&provider.url(), &[]).await;
    let got = post(&tap.url(CHAT), &stream_request(), &[]).await;
    assert_eq!(got.status, 429);
    assert_eq!(got.body, error.as_bytes(), "a 4xx event stream untouched");

    let tap = Tap::start(&json_provider.url(), &[]).await;
    let got = post(&tap.url(CHAT), &stream_request(), &[]).await;
    assert_eq!(got.status, 400);
    assert_eq!(got.body, json_error.as_bytes());
    assert_eq!(
        got.headers["content-length"],
        json_error.len().to_string().as_str(),
        "an unfiltered answer keeps its length"
    );
}
