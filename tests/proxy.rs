//! The proxy end to end, in-process: a fake provider on port 0, llmtap on
//! port 0 writing traces to OTLP-JSON files, and a raw HTTP client. Each test
//! checks what the client received and what the trace says.

#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/tap.rs"]
mod tap;

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use fake_provider::{FakeProvider, Reply, Step};
use http::Request;
use http_body_util::{BodyExt, Full};
use serde_json::{json, Value};
use tap::{fixture, get, post, Tap};

const CHAT: &str = "/v1/chat/completions";

fn chat_request(stream: bool) -> Vec<u8> {
    let mut v = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}],
    });
    if stream {
        v["stream"] = json!(true);
        v["stream_options"] = json!({"include_usage": true});
    }
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test]
async fn plain_call_is_byte_identical_and_traced() {
    let body = fixture("openai_chat/plain.json");
    let b = body.clone();
    let provider = FakeProvider::start(move |_| Reply::json(200, b.clone())).await;
    let tap = Tap::start(&provider.url(), &[]).await;
    let req = chat_request(false);
    let got = post(&tap.url(CHAT), &req, &[("openai-organization", "org-1")]).await;

    assert_eq!(got.status, 200);
    assert_eq!(got.body, body, "client gets the provider's bytes");
    assert_eq!(got.headers["content-type"], "application/json");
    assert_eq!(got.headers["x-request-id"], "req_fake123");
    assert_eq!(got.headers["content-length"], body.len().to_string());
    let id = got.trace_id();
    assert!(id.len() == 35 && id.starts_with("tr-"), "{id}");
    assert!(id[3..]
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));

    let seen = &provider.seen()[0];
    assert_eq!(seen.uri, CHAT);
    assert_eq!(seen.body, req, "provider gets the client's bytes");
    assert_eq!(
        seen.headers["authorization"],
        "Bearer sk-test-SECRET-0123456789"
    );
    assert_eq!(seen.headers["openai-organization"], "org-1");
    assert_eq!(seen.headers["host"], provider.addr.to_string());

    let span = tap.span(&id).await;
    assert_eq!(span.0["name"], "Completions");
    assert_eq!(span.status_code(), 1);
    assert_eq!(span.str("mlflow.spanType").as_deref(), Some("CHAT_MODEL"));
    assert_eq!(
        span.json("mlflow.spanInputs").unwrap(),
        serde_json::from_slice::<Value>(&req).unwrap()
    );
    assert_eq!(
        span.json("mlflow.spanOutputs").unwrap(),
        serde_json::from_slice::<Value>(&body).unwrap()
    );
    assert_eq!(
        span.json("mlflow.chat.tokenUsage").unwrap(),
        json!({"input_tokens": 19, "output_tokens": 9, "total_tokens": 28, "cache_read_input_tokens": 0})
    );
    assert_eq!(
        span.str("mlflow.llm.model").as_deref(),
        Some("gpt-4o-mini-2024-07-18")
    );
    assert_eq!(span.int("http.response.status_code"), Some(200));
    let dump = span.0.to_string();
    assert!(
        !dump.contains("sk-test-SECRET"),
        "no credential in the trace"
    );
    // Nor on disk: trace files, the spool, and the exchange journal, which
    // holds the call's raw request (the check would find it there).
    let files = tap::files_under(tap._tmp.path());
    let journaled = files.iter().any(|f| {
        f.to_string_lossy().contains("/exchanges/")
            && std::fs::read(f).is_ok_and(|b| b.windows(18).any(|w| w == b"Capital of France?"))
    });
    assert!(journaled, "the journal holds the request: {files:?}");
    for f in &files {
        let bytes = std::fs::read(f).unwrap();
        assert!(
            !bytes.windows(14).any(|w| w == b"sk-test-SECRET"),
            "{} holds the credential",
            f.display()
        );
    }
}

#[tokio::test]
async fn streamed_call_is_byte_identical_and_reconstructed() {
    let body = fixture("openai_chat/stream_include_usage.sse");
    let b = body.clone();
    let provider = FakeProvider::start(move |_| Reply::sse(&b)).await;
    let tap = Tap::start(&provider.url(), &[]).await;
    let got = post(&tap.url(CHAT), &chat_request(true), &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, body);
    assert_eq!(
        got.headers["content-type"],
        "text/event-stream; charset=utf-8"
    );

    let span = tap.span(&got.trace_id()).await;
    assert_eq!(span.status_code(), 1, "{}", span.status_message());
    let out = span.json("mlflow.spanOutputs").unwrap();
    assert_eq!(out["object"], "chat.completion");
    assert_eq!(
        out["choices"][0]["message"]["content"],
        "The capital of France is Paris."
    );
    assert_eq!(out["choices"][0]["finish_reason"], "stop");
    assert_eq!(
        span.json("mlflow.chat.tokenUsage").unwrap(),
        json!({"input_tokens": 1342, "output_tokens": 8, "total_tokens": 1350, "cache_read_input_tokens": 1280})
    );
    assert_eq!(span.bool("llmtap.stream"), Some(true));
    assert!(span.attr("llmtap.time_to_first_token_ms").is_some());
}

#[tokio::test]
async fn first_chunk_reaches_the_client_before_the_provider_sends_the_last() {
    let body = fixture("openai_chat/stream_basic.sse");
    let events = fake_provider::split_events(&body);
    let (first, rest) = (events[0].clone(), events[1..].to_vec());
    let provider = FakeProvider::start(move |_| {
        let mut steps = vec![Step::Send(first.clone()), Step::Gate];
        steps.extend(rest.iter().cloned().map(Step::Send));
        Reply {
            steps,
            ..Reply::sse(b"")
        }
    })
    .await;
    let tap = Tap::start(&provider.url(), &[]).await;
    let req = Request::post(tap.url(CHAT))
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(chat_request(true))))
        .unwrap();
    let resp = tap::client().request(req).await.unwrap();
    let mut body_stream = resp.into_body();
    // The provider holds every later chunk until we have seen the first.
    let frame = tokio::time::timeout(Duration::from_secs(5), body_stream.frame())
        .await
        .expect("first chunk arrived while the provider was still streaming (no buffering)")
        .unwrap()
        .unwrap();
    assert_eq!(frame.into_data().unwrap(), events[0]);
    provider.release();
    let rest = body_stream.collect().await.unwrap().to_bytes();
    assert_eq!(&rest[..], &body[events[0].len()..]);
}

#[tokio::test]
async fn provider_errors_pass_through_and_trace_as_errors() {
    let body = fixture("openai_chat/error_429.json");
    let b = body.clone();
    let provider =
        FakeProvider::start(move |_| Reply::json(429, b.clone()).header("retry-after", "1")).await;
    let tap = Tap::start(&provider.url(), &[]).await;
    let got = post(&tap.url(CHAT), &chat_request(false), &[]).await;
    assert_eq!(got.status, 429);
    assert_eq!(got.body, body);
    assert_eq!(got.headers["retry-after"], "1");
    let span = tap.span(&got.trace_id()).await;
    assert_eq!(span.status_code(), 2);
    assert!(
        span.status_message()
            .contains("RateLimitError: Error code: 429 - "),
        "{}",
        span.status_message()
    );
    assert!(span.status_message().contains("Rate limit reached"));
    assert_eq!(span.0["events"][0]["name"], "exception");
    assert!(
        span.attr("mlflow.chat.tokenUsage").is_none(),
        "no usage reported, none recorded"
    );
}

#[tokio::test]
async fn unreachable_upstream_answers_502_and_traces_it() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let tap = Tap::start(&url, &[]).await;
    let got = post(&tap.url(CHAT), &chat_request(false), &[]).await;
    assert_eq!(got.status, 502);
    let v: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(v["error"]["type"], "llmtap_upstream_error");
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("unreachable"),
        "{v}"
    );
    let span = tap.span(&got.trace_id()).await;
    assert_eq!(span.status_code(), 2);
    assert_eq!(span.int("http.response.status_code"), Some(502));
    assert!(
        span.attr("mlflow.spanInputs").is_some(),
        "the request is still recorded"
    );
}

#[tokio::test]
async fn silent_upstream_answers_504() {
    let provider = FakeProvider::start(|_| Reply {
        head_delay: Duration::from_secs(30),
        ..Reply::json(200, "{}")
    })
    .await;
    let tap = Tap::start(&provider.url(), &[("LLMTAP_IDLE_TIMEOUT", "300ms")]).await;
    let got = post(&tap.url(CHAT), &chat_request(false), &[]).await;
    assert_eq!(got.status, 504);
    let v: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(v["error"]["type"], "llmtap_upstream_error");
    let span = tap.span(&got.trace_id()).await;
    assert_eq!(span.status_code(), 2);
}

#[tokio::test]
async fn idle_stream_is_cut_and_traced() {
    let body = fixture("openai_chat/stream_basic.sse");
    let first = fake_provider::split_events(&body)[0].clone();
    let provider = FakeProvider::start(move |_| Reply {
        steps: vec![Step::Send(first.clone()), Step::Hang],
        ..Reply::sse(b"")
    })
    .await;
    let tap = Tap::start(&provider.url(), &[("LLMTAP_IDLE_TIMEOUT", "300ms")]).await;
    let (id, body) = tap::post_streaming(&tap.url(CHAT), chat_request(true)).await;
    let result = body.collect().await;
    assert!(
        result.is_err(),
        "the client sees the stream cut, not a clean end"
    );
    let span = tap.span(&id).await;
    assert_eq!(span.status_code(), 2);
    assert!(
        span.status_message().contains("idle timeout"),
        "{}",
        span.status_message()
    );
}

#[tokio::test]
async fn gzip_response_passes_compressed_and_is_parsed() {
    let plain = fixture("openai_chat/plain.json");
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(&plain).unwrap();
    let compressed = gz.finish().unwrap();
    let c = compressed.clone();
    let provider = FakeProvider::start(move |_| {
        Reply::json(200, c.clone()).header("content-encoding", "gzip")
    })
    .await;
    let tap = Tap::start(&provider.url(), &[]).await;
    let got = post(
        &tap.url(CHAT),
        &chat_request(false),
        &[("accept-encoding", "gzip")],
    )
    .await;
    assert_eq!(got.body, compressed, "still gzip, byte for byte");
    assert_eq!(got.headers["content-encoding"], "gzip");
    assert_eq!(got.headers["content-length"], compressed.len().to_string());
    assert_eq!(provider.seen()[0].headers["accept-encoding"], "gzip");
    let span = tap.span(&got.trace_id()).await;
    assert_eq!(
        span.json("mlflow.chat.tokenUsage").unwrap()["input_tokens"],
        19
    );
    assert_eq!(
        span.json("mlflow.spanOutputs").unwrap()["id"],
        "chatcmpl-9nR6pLaInJsOnReSpOnSe00000abc"
    );
}

#[tokio::test]
async fn bodies_over_the_cap_pass_whole_and_the_trace_says_truncated() {
    let big_answer = "x".repeat(200_000);
    let response = json!({"id": "c1", "object": "chat.completion", "model": "m", "choices": [{"index": 0, "message": {"role": "assistant", "content": big_answer}, "finish_reason": "stop"}], "usage": {"prompt_tokens": 1, "completion_tokens": 2, "total_tokens": 3}});
    let response = serde_json::to_vec(&response).unwrap();
    let r = response.clone();
    let provider = FakeProvider::start(move |_| Reply::json(200, r.clone())).await;
    let tap = Tap::start(&provider.url(), &[("LLMTAP_MAX_CAPTURE_BYTES", "64KiB")]).await;
    let request =
        json!({"model": "m", "messages": [{"role": "user", "content": "y".repeat(100_000)}]});
    let request = serde_json::to_vec(&request).unwrap();
    let got = post(&tap.url(CHAT), &request, &[]).await;
    assert_eq!(got.body, response, "the proxied body is never limited");
    assert_eq!(provider.seen()[0].body, request);
    let span = tap.span(&got.trace_id()).await;
    assert_eq!(span.bool("llmtap.response.truncated"), Some(true));
    assert_eq!(
        span.int("llmtap.response.bytes"),
        Some(response.len() as i64)
    );
    assert_eq!(span.bool("llmtap.request.truncated"), Some(true));
    assert_eq!(span.int("llmtap.request.bytes"), Some(request.len() as i64));
    assert!(span.str("mlflow.spanOutputs").unwrap().len() <= 64 * 1024);
}

#[tokio::test]
async fn client_hang_up_mid_stream_is_traced_with_partial_output() {
    let body = fixture("openai_chat/stream_basic.sse");
    let events = fake_provider::split_events(&body);
    let head: Vec<Step> = events[..3].iter().cloned().map(Step::Send).collect();
    let provider = FakeProvider::start(move |_| {
        let mut steps = head.clone();
        steps.push(Step::Hang);
        Reply {
            steps,
            ..Reply::sse(b"")
        }
    })
    .await;
    let tap = Tap::start(&provider.url(), &[]).await;
    let (id, body) = tap::post_streaming(&tap.url(CHAT), chat_request(true)).await;
    let mut b = body;
    for _ in 0..3 {
        b.frame().await.unwrap().unwrap();
    }
    drop(b); // the client goes away mid-stream
    let span = tap.span(&id).await;
    assert_eq!(span.status_code(), 2);
    assert!(
        span.status_message().contains("client disconnected"),
        "{}",
        span.status_message()
    );
    let out = span
        .json("mlflow.spanOutputs")
        .expect("partial output kept");
    assert!(
        !out["choices"][0]["message"]["content"]
            .as_str()
            .unwrap_or("")
            .is_empty(),
        "{out}"
    );
}

#[tokio::test]
async fn stream_cut_by_the_provider_is_an_error_trace() {
    let body = fixture("openai_chat/stream_cut_no_done.sse");
    let b = body.clone();
    let provider = FakeProvider::start(move |_| Reply::sse(&b)).await;
    let tap = Tap::start(&provider.url(), &[]).await;
    let got = post(&tap.url(CHAT), &chat_request(true), &[]).await;
    assert_eq!(got.body, body, "the client gets exactly what was sent");
    let span = tap.span(&got.trace_id()).await;
    assert_eq!(span.status_code(), 2);
    assert!(
        span.status_message().contains("[DONE]"),
        "{}",
        span.status_message()
    );
}

#[tokio::test]
async fn stream_reset_by_the_provider_is_an_error_trace() {
    let body = fixture("openai_chat/stream_basic.sse");
    let first = fake_provider::split_events(&body)[0].clone();
    let provider = FakeProvider::start(move |_| Reply {
        steps: vec![Step::Send(first.clone()), Step::Reset],
        ..Reply::sse(b"")
    })
    .await;
    let tap = Tap::start(&provider.url(), &[]).await;
    let (id, body) = tap::post_streaming(&tap.url(CHAT), chat_request(true)).await;
    assert!(body.collect().await.is_err());
    let span = tap.span(&id).await;
    assert_eq!(span.status_code(), 2);
    assert!(
        span.status_message().contains("response body failed"),
        "{}",
        span.status_message()
    );
}

#[tokio::test]
async fn other_paths_are_forwarded_untraced() {
    let provider =
        FakeProvider::start(|s| Reply::json(200, format!("{{\"path\":\"{}\"}}", s.uri))).await;
    let tap = Tap::start(&provider.url(), &[]).await;
    let got = get(&tap.url("/v1/models?limit=2")).await;
    assert_eq!(got.status, 200);
    assert_eq!(got.body, "{\"path\":\"/v1/models?limit=2\"}");
    assert!(got.headers.get("x-llmtap-trace-id").is_none());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(tap.spans().is_empty());
}

#[tokio::test]
async fn upstream_path_prefix_is_kept() {
    let provider =
        FakeProvider::start(|s| Reply::json(200, format!("{{\"path\":\"{}\"}}", s.uri))).await;
    let tap = Tap::start(&format!("{}/serving", provider.url()), &[]).await;
    let got = post(
        &tap.url("/v1/chat/completions?api-version=2024-10-21"),
        &chat_request(false),
        &[],
    )
    .await;
    assert_eq!(
        got.body,
        "{\"path\":\"/serving/v1/chat/completions?api-version=2024-10-21\"}"
    );
}

#[tokio::test]
async fn hop_by_hop_headers_stop_at_the_proxy() {
    let provider = FakeProvider::start(|_| {
        Reply::json(200, "{}")
            .header("x-hop", "1")
            .header("connection", "x-hop")
    })
    .await;
    let tap = Tap::start(&provider.url(), &[]).await;
    let got = post(
        &tap.url(CHAT),
        &chat_request(false),
        &[
            ("connection", "x-secret-hop"),
            ("x-secret-hop", "1"),
            ("x-end-to-end", "1"),
        ],
    )
    .await;
    let seen = &provider.seen()[0];
    assert!(seen.headers.get("x-secret-hop").is_none());
    assert_eq!(seen.headers["x-end-to-end"], "1");
    assert!(got.headers.get("x-hop").is_none());
}

#[tokio::test]
async fn h2c_clients_are_served_on_the_same_port() {
    let body = fixture("openai_chat/stream_include_usage.sse");
    let b = body.clone();
    let provider = FakeProvider::start(move |_| Reply::sse(&b)).await;
    let tap = Tap::start(&provider.url(), &[]).await;
    let req = Request::post(tap.url(CHAT))
        .header("authorization", "Bearer sk-h2")
        .body(Full::new(Bytes::from(chat_request(true))))
        .unwrap();
    let resp = tap::h2c_client().request(req).await.expect("h2c request");
    assert_eq!(resp.version(), http::Version::HTTP_2);
    let id = resp.headers()["x-llmtap-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert_eq!(resp.into_body().collect().await.unwrap().to_bytes(), body);
    assert_eq!(provider.seen()[0].headers["authorization"], "Bearer sk-h2");
    assert_eq!(tap.span(&id).await.status_code(), 1);
}

#[tokio::test]
async fn tracing_disabled_is_a_pure_proxy() {
    let body = fixture("openai_chat/plain.json");
    let b = body.clone();
    let provider = FakeProvider::start(move |_| Reply::json(200, b.clone())).await;
    let tap = Tap::start(&provider.url(), &[("ENABLE_MLFLOW_TRACING", "false")]).await;
    let got = post(&tap.url(CHAT), &chat_request(false), &[]).await;
    assert_eq!(got.body, body);
    assert!(got.headers.get("x-llmtap-trace-id").is_none());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!tap.trace_dir.exists(), "nothing written");
}

#[tokio::test]
async fn admin_routes_report_health_readiness_and_metrics() {
    let body = fixture("openai_chat/stream_include_usage.sse");
    let b = body.clone();
    let provider = FakeProvider::start(move |_| Reply::sse(&b)).await;
    let tap = Tap::start(&provider.url(), &[]).await;
    let got = post(&tap.url(CHAT), &chat_request(true), &[]).await;
    tap.span(&got.trace_id()).await;
    assert_eq!(get(&tap.admin_url("/healthz")).await.status, 200);
    assert_eq!(get(&tap.admin_url("/readyz")).await.status, 200);
    let m = get(&tap.admin_url("/metrics")).await;
    let text = String::from_utf8(m.body.to_vec()).unwrap();
    for needle in [
        "llmtap_requests_total{api=\"chat_completions\",status=\"200\"} 1",
        "llmtap_upstream_latency_seconds_count{api=\"chat_completions\"} 1",
        "llmtap_time_to_first_token_seconds_count{api=\"chat_completions\"} 1",
        "llmtap_traces_exported_total 1",
        "llmtap_traces_dropped_total{reason=\"queue_full\"} 0",
        "llmtap_export_queue_depth 0",
    ] {
        assert!(text.contains(needle), "{needle} not in\n{text}");
    }
}

#[tokio::test]
async fn readyz_fails_when_the_trace_dir_is_unwritable() {
    let provider = FakeProvider::start(|_| Reply::json(200, "{}")).await;
    let blocker = tempfile::NamedTempFile::new().unwrap();
    let dir = blocker.path().join("traces");
    let tap = Tap::start(
        &provider.url(),
        &[("LLMTAP_TRACE_DIR", dir.to_str().unwrap())],
    )
    .await;
    let got = get(&tap.admin_url("/readyz")).await;
    assert_eq!(got.status, 503);
    assert!(String::from_utf8_lossy(&got.body).contains("not writable"));
}

#[tokio::test]
async fn graceful_shutdown_flushes_traces() {
    let body = fixture("openai_chat/plain.json");
    let b = body.clone();
    let provider = FakeProvider::start(move |_| Reply::json(200, b.clone())).await;
    let tap = Tap::start_with(&provider.url(), &[], |c| {
        c.export.batch_interval = Duration::from_secs(60)
    })
    .await;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            post(&tap.url(CHAT), &chat_request(false), &[])
                .await
                .trace_id(),
        );
    }
    let Tap {
        running,
        trace_dir,
        _tmp: _keep,
    } = tap;
    running.shutdown().await;
    let spans = tap::spans_in(&trace_dir);
    for id in ids {
        assert!(
            spans.iter().any(|s| s["traceId"] == id[3..]),
            "{id} flushed at shutdown"
        );
    }
}

#[tokio::test]
async fn deflate_and_zstd_responses_pass_compressed_and_are_parsed() {
    let plain = fixture("openai_chat/plain.json");
    let mut z = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::default());
    z.write_all(&plain).unwrap();
    let deflated = z.finish().unwrap();
    let zstded = zstd::encode_all(&plain[..], 3).unwrap();
    for (encoding, body) in [("deflate", deflated), ("zstd", zstded)] {
        let b = body.clone();
        let provider = FakeProvider::start(move |_| {
            Reply::json(200, b.clone()).header("content-encoding", encoding)
        })
        .await;
        let tap = Tap::start(&provider.url(), &[]).await;
        let got = post(
            &tap.url(CHAT),
            &chat_request(false),
            &[("accept-encoding", encoding)],
        )
        .await;
        assert_eq!(got.body, body, "{encoding}: byte for byte");
        assert_eq!(got.headers["content-encoding"], encoding);
        let span = tap.span(&got.trace_id()).await;
        assert_eq!(
            span.json("mlflow.chat.tokenUsage").unwrap()["total_tokens"],
            28,
            "{encoding}"
        );
    }
}

#[tokio::test]
async fn malformed_and_non_utf8_bodies_pass_through_and_are_traced_honestly() {
    let garbage: &'static [u8] = b"\xff\xfe{\"not json\x00\x80";
    let provider = FakeProvider::start(move |_| Reply::json(200, garbage)).await;
    let tap = Tap::start(&provider.url(), &[]).await;
    let got = post(&tap.url(CHAT), b"\xc3\x28 invalid utf8 {", &[]).await;
    assert_eq!(&got.body[..], garbage);
    assert_eq!(&provider.seen()[0].body[..], b"\xc3\x28 invalid utf8 {");
    let span = tap.span(&got.trace_id()).await;
    assert!(span
        .str("mlflow.spanInputs")
        .unwrap()
        .contains("invalid utf8"));
    assert!(span.attr("mlflow.chat.tokenUsage").is_none());
    assert!(span.attr("mlflow.llm.model").is_none());
    // The proxy still serves.
    assert_eq!(post(&tap.url(CHAT), b"{}", &[]).await.status, 200);
}
