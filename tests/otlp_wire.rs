//! The OTLP sink's requests as a receiver sees them (an in-process stand-in
//! on loopback recording every request): path, content type, gzip, the
//! configured headers, the protobuf and OTLP-JSON bodies; how answers are
//! read (OTLP retry rules, Retry-After); readiness; feedback refused. The
//! secrets in the headers reach the receiver and nothing else.

#[path = "support/fake_provider.rs"]
mod fake_provider;

use std::collections::HashMap;
use std::io::Read;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use fake_provider::{FakeProvider, Reply, Seen};
use llmtap::record::{AttrValue, SpanRecord, SpanStatus};
use llmtap::sinks::otlp::{self, config};
use llmtap::sinks::{Assessment, Context, Sink, Verdict};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::Value;

const SECRET: &str = "sk-otlp-SECRET-123";

fn ctx() -> Context {
    Context {
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
        service_name: "llmtap".into(),
    }
}

fn sink(endpoint: &str, extra: &[(&str, &str)]) -> Arc<dyn Sink> {
    let mut env = HashMap::new();
    env.insert(
        "OTEL_EXPORTER_OTLP_ENDPOINT".to_string(),
        endpoint.to_string(),
    );
    env.insert(
        "OTEL_EXPORTER_OTLP_HEADERS".to_string(),
        format!("authorization=Bearer%20{SECRET},x-tenant=acme"),
    );
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    let cfg = config::from_env(&env).unwrap().unwrap();
    otlp::build("collector", cfg, &ctx()).unwrap()
}

/// A canonical batch of one chat span.
fn batch() -> ExportTraceServiceRequest {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    let attrs = vec![
        ("mlflow.spanType".to_string(), AttrValue::from("CHAT_MODEL")),
        (
            "mlflow.spanInputs".to_string(),
            AttrValue::from(
                r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}]}"#,
            ),
        ),
        ("gen_ai.operation.name".to_string(), AttrValue::from("chat")),
        (
            "gen_ai.provider.name".to_string(),
            AttrValue::from("openai"),
        ),
        (
            "gen_ai.request.model".to_string(),
            AttrValue::from("gpt-4o-mini"),
        ),
        ("gen_ai.usage.input_tokens".to_string(), AttrValue::Int(5)),
    ];
    let record = SpanRecord {
        trace_id: [0xab; 16],
        span_id: [0x01; 8],
        parent_span_id: None,
        name: "Completions".into(),
        start_unix_nano: now,
        end_unix_nano: now + 1_000_000,
        status: SpanStatus::Ok,
        attributes: attrs,
        events: vec![],
    };
    llmtap::otlp::request("llmtap", vec![llmtap::otlp::to_span(&record)])
}

fn header<'a>(seen: &'a Seen, name: &str) -> &'a str {
    seen.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_else(|| panic!("no {name} header: {:?}", seen.headers.keys()))
}

fn gunzip(bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(bytes)
        .read_to_end(&mut out)
        .expect("a gzip body");
    out
}

#[tokio::test]
async fn protobuf_gzip_with_headers() {
    let rx = FakeProvider::start(|_| Reply::json(200, "")).await;
    let s = sink(&rx.url(), &[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")]);
    let a = s.send(&batch()).await;
    assert_eq!(a.verdict, Verdict::Success, "{}", a.reason);
    let seen = rx.seen();
    assert_eq!(seen.len(), 1);
    let r = &seen[0];
    assert_eq!((r.method.as_str(), r.uri.as_str()), ("POST", "/v1/traces"));
    assert_eq!(header(r, "content-type"), "application/x-protobuf");
    assert_eq!(header(r, "content-encoding"), "gzip");
    assert_eq!(header(r, "authorization"), format!("Bearer {SECRET}"));
    assert_eq!(header(r, "x-tenant"), "acme");
    assert!(header(r, "user-agent").starts_with("llmtap/"));
    let req = ExportTraceServiceRequest::decode(gunzip(&r.body).as_slice()).expect("OTLP protobuf");
    let span = &req.resource_spans[0].scope_spans[0].spans[0];
    assert_eq!(span.name, "chat gpt-4o-mini");
    assert!(span
        .attributes
        .iter()
        .any(|kv| kv.key == "gen_ai.input.messages"));
    assert!(!span
        .attributes
        .iter()
        .any(|kv| kv.key.starts_with("mlflow.")));
    // Secrets reach the receiver only.
    assert!(!s.describe().contains(SECRET), "{}", s.describe());
    assert!(s.describe().contains("authorization"));
}

#[tokio::test]
async fn json_protocol_uses_otlp_json() {
    let rx = FakeProvider::start(|_| Reply::json(200, "{}")).await;
    let s = sink(
        &format!("{}/otel", rx.url()),
        &[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")],
    );
    assert_eq!(s.send(&batch()).await.verdict, Verdict::Success);
    let r = &rx.seen()[0];
    assert_eq!(r.uri, "/otel/v1/traces");
    assert_eq!(header(r, "content-type"), "application/json");
    assert!(r.headers.get("content-encoding").is_none());
    let v: Value = serde_json::from_slice(&r.body).expect("JSON");
    let span = &v["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    assert_eq!(span["traceId"], "ab".repeat(16));
    assert_eq!(span["name"], "chat gpt-4o-mini");
}

#[tokio::test]
async fn answers_are_read_by_the_otlp_rules() {
    let rx = FakeProvider::start(|_| {
        Reply::json(503, r#"{"code":14,"message":"unavailable"}"#).header("retry-after", "7")
    })
    .await;
    let s = sink(&rx.url(), &[]);
    let a = s.send(&batch()).await;
    assert_eq!(
        a.verdict,
        Verdict::Retry {
            after: Some(Duration::from_secs(7))
        }
    );
    assert!(!a.reason.contains(SECRET));
    let bad = FakeProvider::start(|_| Reply::json(400, r#"{"message":"bad span"}"#)).await;
    let a = sink(&bad.url(), &[]).send(&batch()).await;
    assert_eq!(a.verdict, Verdict::DontRetry);
    assert!(a.reason.contains("HTTP 400"), "{}", a.reason);
    // A server error the spec does not list as retryable is not retried.
    let five = FakeProvider::start(|_| Reply::json(500, "{}")).await;
    assert_eq!(
        sink(&five.url(), &[]).send(&batch()).await.verdict,
        Verdict::DontRetry
    );
    // No receiver: a transient failure.
    let gone = format!("http://127.0.0.1:{}", free_port());
    let a = sink(&gone, &[]).send(&batch()).await;
    assert!(matches!(a.verdict, Verdict::Retry { .. }), "{a:?}");
    assert!(!a.reason.contains(SECRET));
}

#[tokio::test]
async fn probe_posts_an_empty_request() {
    let rx = FakeProvider::start(|_| Reply::json(200, "")).await;
    let s = sink(&rx.url(), &[]);
    s.probe().await.expect("ready");
    let r = &rx.seen()[0];
    let req = ExportTraceServiceRequest::decode(r.body.as_ref()).unwrap();
    assert!(req.resource_spans.is_empty(), "the probe stores nothing");
    let missing = FakeProvider::start(|_| Reply::json(404, "{}")).await;
    let err = sink(&missing.url(), &[]).probe().await.unwrap_err();
    assert!(err.contains("404"), "{err}");
    let wrong_protocol = FakeProvider::start(|_| Reply::json(415, "{}")).await;
    assert!(sink(&wrong_protocol.url(), &[]).probe().await.is_err());
    let gone = format!("http://127.0.0.1:{}", free_port());
    let err = sink(&gone, &[]).probe().await.unwrap_err();
    assert!(!err.contains(SECRET), "{err}");
}

#[tokio::test]
async fn feedback_is_unsupported() {
    let rx = FakeProvider::start(|_| Reply::json(200, "")).await;
    let s = sink(&rx.url(), &[]);
    let a = s
        .assess(&Assessment {
            trace_id: "tr-0".into(),
            name: "user_feedback".into(),
            source_type: "HUMAN".into(),
            source_id: "u".into(),
            value: Value::Bool(true),
            rationale: None,
            metadata: Default::default(),
        })
        .await;
    assert_eq!(a.verdict, Verdict::DontRetry);
    assert_eq!(a.class, "unsupported");
    assert!(rx.seen().is_empty(), "nothing was sent");
    assert_eq!(s.kind(), "otlp");
    assert_eq!(s.name(), "collector");
}

fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}
