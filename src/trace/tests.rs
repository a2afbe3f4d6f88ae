//! `build` maps one exchange onto what a user checks in MLflow (mlflow-wire.md §4).

use super::*;
use crate::exchange::ResponseHead;
use crate::route::Api;
use crate::tee::{Capture, Tee};
use bytes::Bytes;
use futures_util::StreamExt;
use http_body::Frame;
use http_body_util::{BodyExt, StreamBody};
use serde_json::json;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime, UNIX_EPOCH};

const CAP: usize = 1 << 20;
const WALL_SECS: u64 = 1_764_000_000;
const REQ: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}],"temperature":0.2,"max_tokens":100}"#;
const STREAM_REQ: &str = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[]}"#;
const SSE: &str = "text/event-stream";
const JSON: &str = "application/json";

fn fixture(name: &str) -> Vec<u8> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/openai_chat/");
    std::fs::read(format!("{dir}{name}")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// One frame per SSE event (split after each blank line).
fn sse_frames(body: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 0..body.len() {
        if body[i..].starts_with(b"\n\n") {
            out.push(Bytes::copy_from_slice(&body[start..i + 2]));
            start = i + 2;
        }
    }
    if start < body.len() {
        out.push(Bytes::copy_from_slice(&body[start..]));
    }
    out
}

fn gzip(frames: &[Bytes]) -> Vec<Bytes> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut out = Vec::new();
    for f in frames {
        enc.write_all(f).unwrap();
        enc.flush().unwrap();
        out.push(Bytes::from(std::mem::take(enc.get_mut())));
    }
    out.push(Bytes::from(enc.finish().unwrap()));
    out
}

/// How the teed body ends.
enum Tail {
    Done,
    Fail(&'static str),
    /// The reader drops the body after this many frames.
    DropAfter(usize),
}

/// Drives a real [`Tee`] over `frames` (each after `gap`) and returns what it reported.
async fn tee(frames: Vec<Bytes>, cap: usize, gap: u64, tail: Tail) -> (Capture, BodyEnd) {
    let mut items: Vec<Result<Bytes, String>> = frames.into_iter().map(Ok).collect();
    if let Tail::Fail(e) = tail {
        items.push(Err(e.to_string()));
    }
    let stream = futures_util::stream::iter(items).then(move |item| async move {
        tokio::time::sleep(Duration::from_millis(gap)).await;
        item.map(Frame::data)
    });
    let slot = Arc::new(Mutex::new(None));
    let sink = slot.clone();
    let mut body = Tee::new(StreamBody::new(stream.boxed()), cap, move |c, end| {
        *sink.lock().unwrap() = Some((c, end));
        None
    });
    match tail {
        Tail::DropAfter(n) => {
            for _ in 0..n {
                body.frame().await.unwrap().unwrap();
            }
            drop(body);
        }
        _ => drop(body.collect().await),
    }
    let reported = slot.lock().unwrap().take();
    reported.expect("the tee reported its end")
}

fn body((capture, end): (Capture, BodyEnd), ctype: &str, enc: Option<&str>) -> CapturedBody {
    let content_type = Some(ctype.to_string());
    let content_encoding = enc.map(str::to_string);
    CapturedBody {
        capture,
        end,
        content_type,
        content_encoding,
    }
}

async fn whole(bytes: &[u8], ctype: &str, enc: Option<&str>) -> CapturedBody {
    let frames = vec![Bytes::copy_from_slice(bytes)];
    body(tee(frames, CAP, 0, Tail::Done).await, ctype, enc)
}

/// An exchange with the given request body and no response yet; it starts now.
async fn exchange(request: &[u8]) -> Exchange {
    let started = Instant::now();
    Exchange {
        trace_id: [0x5b; 16],
        span_id: [0x05; 8],
        api: Api::ChatCompletions,
        provider: "openai",
        deployment: None,
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        started_wall: UNIX_EPOCH + Duration::from_secs(WALL_SECS),
        started,
        ended: started + Duration::from_millis(1250),
        request: Some(whole(request, JSON, None).await),
        response_head: None,
        response: None,
        proxy_error: None,
        proxy_status: None,
        usage_hiding_failed: None,
        context: Default::default(),
        privacy: Default::default(),
    }
}

fn respond(ex: &mut Exchange, status: u16, response: CapturedBody) {
    let (content_type, content_encoding) = (
        response.content_type.clone(),
        response.content_encoding.clone(),
    );
    ex.response_head = Some(ResponseHead {
        status,
        content_type,
        content_encoding,
        at: ex.started,
        request_id: None,
    });
    ex.response = Some(response);
}

fn n(v: usize) -> AttrValue {
    AttrValue::Int(v as i64)
}

fn strs(v: &[&str]) -> AttrValue {
    AttrValue::StrArray(v.iter().map(|s| s.to_string()).collect())
}

/// `has!(span; "key" => value, ...)`: each attribute is present with that value.
macro_rules! has {
    ($span:expr; $($key:literal => $value:expr),* $(,)?) => {$(
        assert_eq!($span.get($key), Some(&AttrValue::from($value)), "attribute {}", $key);
    )*};
}

/// `lacks!(span; "key", ...)`: none of these attributes is present.
macro_rules! lacks {
    ($span:expr; $($key:literal),* $(,)?) => {$(
        assert_eq!($span.get($key), None, "attribute {} should be absent", $key);
    )*};
}

/// Builds the span and checks what must hold for every span.
fn run(ex: &Exchange) -> (SpanRecord, Built) {
    let (span, built) = build(ex, CAP);
    let mut keys: Vec<&str> = span.attributes.iter().map(|(k, _)| k.as_str()).collect();
    keys.sort_unstable();
    let count = keys.len();
    keys.dedup();
    assert_eq!(keys.len(), count, "duplicate keys: {:?}", span.attributes);
    assert_eq!(span.name, "Completions");
    assert_eq!((span.trace_id, span.span_id), (ex.trace_id, ex.span_id));
    assert_eq!(span.parent_span_id, None);
    has!(span;
        "mlflow.spanType" => "CHAT_MODEL",
        "mlflow.traceTag.mlflow.traceName" => "Completions",
        "mlflow.message.format" => "openai",
        "mlflow.llm.provider" => "openai",
        "gen_ai.operation.name" => "chat",
        "gen_ai.provider.name" => "openai",
        "http.request.method" => "POST",
        "url.path" => "/v1/chat/completions",
    );
    (span, built)
}

fn json_attr(span: &SpanRecord, key: &str) -> Value {
    let text = span.get_str(key).unwrap_or_else(|| panic!("no {key}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{key} is not JSON: {e}"))
}

fn content(span: &SpanRecord) -> Value {
    json_attr(span, "mlflow.spanOutputs")["choices"][0]["message"]["content"].clone()
}

/// Asserts an error status ("<kind>: <message>", as Anthropic's autologging
/// words it) mirrored by exactly one `exception` event, at log level ERROR;
/// returns the message.
fn error(span: &SpanRecord, kind: &str) -> String {
    let SpanStatus::Error(status) = &span.status else {
        panic!("expected an error status: {span:?}");
    };
    let msg = status
        .strip_prefix(&format!("{kind}: "))
        .unwrap_or_else(|| panic!("status {status:?} does not start with {kind:?}"))
        .to_string();
    let [ev] = &span.events[..] else {
        panic!("expected one event: {:?}", span.events);
    };
    assert_eq!(
        (ev.name.as_str(), ev.time_unix_nano),
        ("exception", span.end_unix_nano)
    );
    let exception = vec![
        ("exception.type".to_string(), AttrValue::from(kind)),
        (
            "exception.message".to_string(),
            AttrValue::from(msg.as_str()),
        ),
    ];
    assert_eq!(ev.attributes, exception);
    has!(span; "llmtap.error.type" => kind, "mlflow.spanLogLevel" => n(40));
    msg
}

/// A JSON body as `json.dumps` writes it (`trace::pyjson` has the literal cases).
fn dumped(body: &[u8]) -> String {
    super::pyjson::dumps(std::str::from_utf8(body).unwrap()).unwrap()
}

fn assert_ok(span: &SpanRecord) {
    assert_eq!(span.status, SpanStatus::Ok);
    assert!(span.events.is_empty(), "{:?}", span.events);
    lacks!(span; "llmtap.error.type");
    has!(span; "mlflow.spanLogLevel" => n(20));
}

#[tokio::test]
async fn plain_chat_call_looks_like_mlflow_autolog() {
    let resp = fixture("plain.json");
    let mut ex = exchange(REQ.as_bytes()).await;
    respond(&mut ex, 200, whole(&resp, JSON, None).await);
    let (span, built) = run(&ex);
    assert_ok(&span);
    let usage = json!({"input_tokens": 19, "output_tokens": 9, "total_tokens": 28,
        "cache_read_input_tokens": 0});
    assert_eq!(json_attr(&span, "mlflow.chat.tokenUsage"), usage);
    has!(span;
        // json.dumps style, as the MLflow client writes autologged inputs.
        "mlflow.spanInputs" => r#"{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Hi"}], "temperature": 0.2, "max_tokens": 100}"#,
        // The request's parameters as plain attributes (OpenAI autologging).
        "model" => "gpt-4o-mini",
        "temperature" => AttrValue::Double(0.2),
        "max_tokens" => n(100),
        "mlflow.spanLogLevel" => n(20),
        "mlflow.spanOutputs" => dumped(&resp),
        "mlflow.llm.model" => "gpt-4o-mini-2024-07-18",
        "gen_ai.request.model" => "gpt-4o-mini",
        "gen_ai.response.model" => "gpt-4o-mini-2024-07-18",
        "gen_ai.response.id" => "chatcmpl-9nR6pLaInJsOnReSpOnSe00000abc",
        "gen_ai.response.finish_reasons" => strs(&["stop"]),
        "gen_ai.usage.input_tokens" => n(19),
        "gen_ai.usage.output_tokens" => n(9),
        "gen_ai.request.temperature" => 0.2,
        "gen_ai.request.max_tokens" => n(100),
        "http.response.status_code" => n(200),
        "llmtap.stream" => false,
        "llmtap.response.bytes" => n(resp.len()),
        "llmtap.request.bytes" => n(REQ.len()),
    );
    lacks!(span; "llmtap.response.truncated", "llmtap.request.truncated",
        "llmtap.time_to_first_token_ms", "mlflow.chat.tools", "user.id");
    assert_eq!(built.time_to_first_token, None);
}

#[tokio::test]
async fn timestamps_come_from_the_wall_clock_start_and_the_duration() {
    let mut ex = exchange(REQ.as_bytes()).await;
    let (span, _) = run(&ex);
    let start = WALL_SECS * 1_000_000_000;
    assert_eq!(
        (span.start_unix_nano, span.end_unix_nano),
        (start, start + 1_250_000_000)
    );

    // A wall clock before the epoch degrades to 0 instead of panicking.
    ex.started_wall = SystemTime::UNIX_EPOCH - Duration::from_secs(10);
    assert_eq!(run(&ex).0.start_unix_nano, 0);
}

#[tokio::test]
async fn request_tools_and_user_are_recorded() {
    let req = json!({"model": "gpt-4o", "user": "alice", "messages": [],
        "tools": [{"type": "function", "function": {"name": "get_weather"}}]});
    let mut ex = exchange(req.to_string().as_bytes()).await;
    let resp = fixture("plain_tools.json");
    respond(&mut ex, 200, whole(&resp, JSON, None).await);
    let (span, _) = run(&ex);
    assert_ok(&span);
    assert_eq!(json_attr(&span, "mlflow.chat.tools"), req["tools"]);
    has!(span; "user.id" => "alice", "gen_ai.response.finish_reasons" => strs(&["tool_calls"]));

    // An empty tools list is not worth an attribute.
    let ex = exchange(br#"{"model":"gpt-4o","tools":[],"messages":[]}"#).await;
    lacks!(run(&ex).0; "mlflow.chat.tools", "user.id");
}

#[tokio::test]
async fn body_context_under_the_headers_and_the_joined_parent() {
    let req = json!({"model": "gpt-4o", "safety_identifier": "sid-1", "messages": [],
        "prompt_cache_key": "pk", "metadata": {"ticket": "body", "order": "O-9", "n": 1}});
    let mut ex = exchange(req.to_string().as_bytes()).await;
    ex.context.metadata = vec![("ticket".into(), "header".into())];
    let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
    ex.context.traceparent = Some(tp.into());
    let (span, _) = run(&ex);
    has!(span; "user.id" => "sid-1", "llmtap.metadata.ticket" => "header",
        "llmtap.metadata.order" => "O-9", "mlflow.traceTag.llmtap.prompt_cache_key" => "pk",
        "llmtap.context.body_dropped" => 1i64);
    assert_eq!(
        span.attributes
            .iter()
            .filter(|(k, _)| k == "llmtap.metadata.ticket")
            .count(),
        1,
        "the header's value only"
    );
    assert_eq!(span.parent_span_id, None, "not joined: a trace of its own");
    let parent = crate::context::traceparent::parse(tp).unwrap();
    ex.trace_id = parent.trace_id;
    ex.context.user = Some("alice".into());
    // `run` checks a root span; this one is a child.
    let (span, _) = build(&ex, CAP);
    assert_eq!(span.parent_span_id, Some(parent.span_id));
    has!(span; "user.id" => "alice");
}

#[tokio::test]
async fn streamed_call_is_reconstructed_with_usage_and_ttft() {
    let sse = fixture("stream_include_usage.sse");
    let frames = sse_frames(&sse);
    assert_eq!(frames.len(), 11);
    let mut ex = exchange(STREAM_REQ.as_bytes()).await;
    let captured = tee(frames, CAP, 3, Tail::Done).await;
    // The first token ("The") is in the second event, hence the second frame.
    let ttft = captured.0.frame_times[1].1.duration_since(ex.started);
    respond(
        &mut ex,
        200,
        body(captured, "text/event-stream; charset=utf-8", None),
    );
    let (span, built) = run(&ex);
    assert_ok(&span);

    let out = json_attr(&span, "mlflow.spanOutputs");
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(out["id"], "chatcmpl-9nR0aBcDeFgHiJkLmNoPqRsTuVwXy");
    assert_eq!(out["choices"][0]["message"]["role"], "assistant");
    assert_eq!(content(&span), "The capital of France is Paris.");
    assert_eq!(out["choices"][0]["finish_reason"], "stop");
    assert_eq!(out["usage"]["total_tokens"], 1350);
    let usage = json!({"input_tokens": 1342, "output_tokens": 8, "total_tokens": 1350,
        "cache_read_input_tokens": 1280});
    assert_eq!(json_attr(&span, "mlflow.chat.tokenUsage"), usage);
    has!(span;
        "mlflow.spanInputs" => dumped(STREAM_REQ.as_bytes()),
        "mlflow.llm.model" => "gpt-4o-mini-2024-07-18",
        "gen_ai.response.finish_reasons" => strs(&["stop"]),
        "gen_ai.usage.input_tokens" => n(1342),
        "gen_ai.usage.output_tokens" => n(8),
        "llmtap.stream" => true,
        "llmtap.response.bytes" => n(sse.len()),
        "llmtap.time_to_first_token_ms" => ttft.as_secs_f64() * 1000.0,
    );
    assert!(ttft >= Duration::from_millis(6), "{ttft:?}");
    assert_eq!(built.time_to_first_token, Some(ttft));
}

#[tokio::test]
async fn stream_without_usage_reports_no_token_counts() {
    let sse = fixture("stream_basic.sse");
    let mut ex = exchange(br#"{"model":"gpt-4o-mini","stream":true,"messages":[]}"#).await;
    let captured = tee(sse_frames(&sse), CAP, 0, Tail::Done).await;
    respond(&mut ex, 200, body(captured, SSE, None));
    let (span, built) = run(&ex);
    assert_ok(&span);
    assert_eq!(content(&span), "Hello! How can I assist you today?");
    assert!(json_attr(&span, "mlflow.spanOutputs")
        .get("usage")
        .is_none());
    lacks!(span; "mlflow.chat.tokenUsage", "gen_ai.usage.input_tokens",
        "gen_ai.usage.output_tokens");
    assert!(built.time_to_first_token.is_some());
}

#[tokio::test]
async fn provider_429_is_an_error_worded_as_the_sdk_words_it() {
    let resp = fixture("error_429.json");
    let mut ex = exchange(REQ.as_bytes()).await;
    respond(&mut ex, 429, whole(&resp, JSON, None).await);
    let (span, _) = run(&ex);
    // openai's RateLimitError, str() as tests/fixtures/autolog/ recorded it.
    let msg = error(&span, "RateLimitError");
    assert!(
        msg.starts_with("Error code: 429 - Rate limit reached for gpt-4o-mini"),
        "{msg}"
    );
    has!(span;
        "http.response.status_code" => n(429),
        "mlflow.spanOutputs" => dumped(&resp),
        // No model in the response: fall back to the requested one.
        "mlflow.llm.model" => "gpt-4o-mini",
    );
    lacks!(span; "mlflow.chat.tokenUsage", "gen_ai.response.model");

    // An error status without a JSON error body still fails, and says so.
    let mut ex = exchange(REQ.as_bytes()).await;
    respond(&mut ex, 503, whole(b"overloaded", "text/plain", None).await);
    let (span, _) = run(&ex);
    let msg = error(&span, "InternalServerError");
    assert_eq!(msg, "Error code: 503");
    has!(span; "mlflow.spanOutputs" => "overloaded");
}

#[tokio::test]
async fn anthropic_span_and_error_are_named_as_its_autologging_names_them() {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/anthropic/");
    let resp = std::fs::read(format!("{dir}error_invalid_request.json")).unwrap();
    let req = br#"{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[]}"#;
    let mut ex = exchange(req).await;
    (ex.api, ex.provider, ex.path) = (Api::Messages, "anthropic", "/v1/messages".into());
    respond(&mut ex, 400, whole(&resp, JSON, None).await);
    let (span, _) = build(&ex, CAP); // not run(): that one expects OpenAI chat
    assert_eq!(span.name, "Messages.create");
    has!(span; "mlflow.traceTag.mlflow.traceName" => "Messages.create");
    // anthropic's BadRequestError: "Error code: 400 - " + repr(body), and the
    // span status "<class>: <message>" (tests/fixtures/autolog/).
    let msg = error(&span, "BadRequestError");
    assert_eq!(
        msg,
        "Error code: 400 - {'type': 'error', 'error': {'type': 'invalid_request_error', \
         'message': 'prompt is too long: 208310 tokens > 200000 maximum'}, \
         'request_id': 'req_011CUJ5Kq9tLwYvB3mNcX8dE'}"
    );

    // A success: the model is the one asked for, as Anthropic's autologging
    // records it (the response's dated id stays in gen_ai.response.model).
    let resp = std::fs::read(format!("{dir}plain.json")).unwrap();
    let mut ex = exchange(req).await;
    (ex.api, ex.provider, ex.path) = (Api::Messages, "anthropic", "/v1/messages".into());
    respond(&mut ex, 200, whole(&resp, JSON, None).await);
    let (span, _) = build(&ex, CAP);
    has!(span;
        "mlflow.llm.model" => "claude-sonnet-4-5",
        "gen_ai.response.model" => "claude-sonnet-4-5-20250929",
        "mlflow.spanLogLevel" => n(20),
    );
    // Anthropic's autologging records no request parameters as attributes.
    lacks!(span; "model", "max_tokens");
}

#[tokio::test]
async fn stream_cut_without_done_is_an_error_keeping_partial_output() {
    let sse = fixture("stream_cut_no_done.sse");
    let mut ex = exchange(STREAM_REQ.as_bytes()).await;
    let captured = tee(sse_frames(&sse), CAP, 0, Tail::Done).await;
    respond(&mut ex, 200, body(captured, SSE, None));
    let (span, _) = run(&ex);
    assert_eq!(
        error(&span, "IncompleteStream"),
        "stream ended without [DONE]"
    );
    assert_eq!(content(&span), "Hello! How can I");
    lacks!(span; "llmtap.response.truncated");
}

#[tokio::test]
async fn stream_truncated_at_the_cap_is_not_blamed_for_missing_done() {
    let sse = fixture("stream_basic.sse");
    let cap = sse.len() / 2;
    let mut ex = exchange(STREAM_REQ.as_bytes()).await;
    let captured = tee(sse_frames(&sse), cap, 0, Tail::Done).await;
    assert_eq!((captured.0.kept(), captured.0.truncated()), (cap, true));
    respond(&mut ex, 200, body(captured, SSE, None));
    let (span, _) = run(&ex);
    assert_ok(&span);
    has!(span; "llmtap.response.truncated" => true, "llmtap.response.bytes" => n(sse.len()));
    let partial = content(&span);
    let partial = partial.as_str().expect("partial content");
    assert!(partial.starts_with("Hello!"), "{partial}");
    assert!(
        "Hello! How can I assist you today?".starts_with(partial),
        "{partial}"
    );
}

#[tokio::test]
async fn client_disconnect_is_an_error_keeping_partial_output() {
    let sse = fixture("stream_basic.sse");
    let mut ex = exchange(STREAM_REQ.as_bytes()).await;
    let captured = tee(sse_frames(&sse), CAP, 0, Tail::DropAfter(4)).await;
    assert_eq!(captured.1, BodyEnd::Cancelled);
    respond(&mut ex, 200, body(captured, SSE, None));
    let (span, _) = run(&ex);
    let msg = error(&span, "ClientDisconnected");
    assert!(msg.contains("client disconnected"), "{msg}");
    assert_eq!(content(&span), "Hello! How");
}

#[tokio::test]
async fn upstream_body_failure_is_an_error() {
    let frames = sse_frames(&fixture("stream_basic.sse"))[..3].to_vec();
    let mut ex = exchange(STREAM_REQ.as_bytes()).await;
    let captured = tee(frames, CAP, 0, Tail::Fail("connection reset")).await;
    assert_eq!(captured.1, BodyEnd::Error("connection reset".into()));
    respond(&mut ex, 200, body(captured, SSE, None));
    let (span, _) = run(&ex);
    let msg = error(&span, "UpstreamError");
    assert!(msg.contains("connection reset"), "{msg}");
    assert_eq!(content(&span), "Hello!");
}

#[tokio::test]
async fn proxy_error_without_any_response() {
    let mut ex = exchange(REQ.as_bytes()).await;
    ex.proxy_error = Some("upstream unreachable: connection refused".into());
    ex.proxy_status = Some(502);
    let (span, built) = run(&ex);
    let msg = error(&span, "UpstreamError");
    assert_eq!(msg, "upstream unreachable: connection refused");
    has!(span;
        "http.response.status_code" => n(502),
        "mlflow.spanInputs" => dumped(REQ.as_bytes()),
        "gen_ai.request.model" => "gpt-4o-mini",
        "mlflow.llm.model" => "gpt-4o-mini",
    );
    lacks!(span; "mlflow.spanOutputs", "llmtap.response.bytes", "mlflow.chat.tokenUsage");
    assert_eq!(built.time_to_first_token, None);
}

#[tokio::test]
async fn gzip_response_is_decoded() {
    let plain = fixture("plain.json");
    let gz: Vec<u8> = gzip(&[Bytes::from(plain.clone())]).concat();
    let mut ex = exchange(REQ.as_bytes()).await;
    respond(&mut ex, 200, whole(&gz, JSON, Some("gzip")).await);
    let (span, _) = run(&ex);
    assert_ok(&span);
    assert_eq!(
        json_attr(&span, "mlflow.chat.tokenUsage")["total_tokens"],
        28
    );
    has!(span;
        "mlflow.spanOutputs" => dumped(&plain),
        "mlflow.llm.model" => "gpt-4o-mini-2024-07-18",
        // Bytes on the wire, not decoded bytes.
        "llmtap.response.bytes" => n(gz.len()),
    );
    lacks!(span; "llmtap.response.decode_error");

    // A body that does not decode is kept raw, with a note.
    let mut ex = exchange(REQ.as_bytes()).await;
    respond(&mut ex, 200, whole(b"not gzip", JSON, Some("gzip")).await);
    let (span, _) = run(&ex);
    has!(span; "mlflow.spanOutputs" => "not gzip");
    assert!(span.get_str("llmtap.response.decode_error").is_some());
    lacks!(span; "mlflow.chat.tokenUsage");
}

#[tokio::test]
async fn gzip_stream_does_not_misreport_ttft() {
    let sse = fixture("stream_include_usage.sse");
    let mut ex = exchange(STREAM_REQ.as_bytes()).await;
    let captured = tee(gzip(&sse_frames(&sse)), CAP, 20, Tail::Done).await;
    let token_at = captured.0.frame_times[1].1.duration_since(ex.started);
    respond(&mut ex, 200, body(captured, SSE, Some("gzip")));
    let (span, built) = run(&ex);
    assert_eq!(content(&span), "The capital of France is Paris.");
    // Either the true arrival of the first token, or no claim at all.
    let ttft = built.time_to_first_token;
    assert!(
        ttft.is_none() || ttft == Some(token_at),
        "{ttft:?} vs {token_at:?}"
    );
}

#[tokio::test]
async fn non_json_and_invalid_utf8_requests_do_not_panic() {
    let ex = exchange(b"model=gpt-4o&prompt=hi").await;
    let (span, _) = run(&ex);
    assert_ok(&span);
    has!(span; "mlflow.spanInputs" => "model=gpt-4o&prompt=hi", "llmtap.stream" => false);
    lacks!(span; "mlflow.llm.model", "gen_ai.request.model");

    let ex = exchange(b"{\"model\":\"gpt\xff\xfe\"}").await;
    let (span, _) = run(&ex);
    assert_ok(&span);
    has!(span; "mlflow.spanInputs" => "{\"model\": \"gpt\u{fffd}\u{fffd}\"}");
    lacks!(span; "mlflow.llm.model", "gen_ai.request.model");

    // JSON that is not an object, and no request body at all.
    let mut ex = exchange(b"[1,2,3]").await;
    lacks!(run(&ex).0; "gen_ai.request.model");
    ex.request = None;
    lacks!(run(&ex).0; "mlflow.spanInputs", "llmtap.request.bytes");
}

mod budget;
mod chunk_events;
