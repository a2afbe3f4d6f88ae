//! Starts llmtap in-process on port 0 against a given upstream, with traces
//! going to OTLP-JSON files in a temp dir (or to MLflow), and gives tests a
//! raw HTTP client and a way to find a trace by id.
#![allow(dead_code)]

use std::path::PathBuf;
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use llmtap::config::{self, Config, Env};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use serde_json::Value;

/// A running llmtap and where its traces go.
pub struct Tap {
    pub running: llmtap::Running,
    pub trace_dir: PathBuf,
    pub _tmp: tempfile::TempDir,
}

/// Every file under `dir`, recursively.
pub fn files_under(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![dir.to_path_buf()];
    while let Some(d) = todo.pop() {
        for entry in std::fs::read_dir(&d).into_iter().flatten().flatten() {
            let path = entry.path();
            if path.is_dir() {
                todo.push(path);
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Builds a config from env-style settings, as the binary would.
pub fn config(upstream: &str, extra_env: &[(&str, &str)], trace_dir: &std::path::Path) -> Config {
    let mut env: Env = Env::new();
    env.insert("LLMTAP_LISTEN".into(), "127.0.0.1:0".into());
    env.insert("LLMTAP_ADMIN_LISTEN".into(), "127.0.0.1:0".into());
    env.insert("LLMTAP_UPSTREAM".into(), upstream.into());
    env.insert("LLMTAP_TRACE_DIR".into(), trace_dir.display().to_string());
    let dead_letter = trace_dir.parent().unwrap_or(trace_dir).join("dead-letter");
    env.insert(
        "LLMTAP_DEAD_LETTER_DIR".into(),
        dead_letter.display().to_string(),
    );
    let spool = trace_dir.parent().unwrap_or(trace_dir).join("spool");
    env.insert("LLMTAP_SPOOL_DIR".into(), spool.display().to_string());
    // The per-call access log (opt-in) is on in tests, so that the tests
    // that read the logs (no secret in them) see that line too.
    env.insert("LLMTAP_ACCESS_LOG".into(), "true".into());
    for (k, v) in extra_env {
        env.insert(k.to_string(), v.to_string());
    }
    let mut cfg = config::resolve(&config::Flags::default(), &env, None).expect("test config");
    cfg.export.batch_interval = Duration::from_millis(20);
    cfg.export.retry_initial = Duration::from_millis(50);
    cfg.export.retry_max = Duration::from_millis(500);
    cfg.shutdown_grace = Duration::from_secs(5);
    cfg
}

impl Tap {
    pub async fn start(upstream: &str, extra_env: &[(&str, &str)]) -> Tap {
        Self::start_with(upstream, extra_env, |_| {}).await
    }

    pub async fn start_with(
        upstream: &str,
        extra_env: &[(&str, &str)],
        tweak: impl FnOnce(&mut Config),
    ) -> Tap {
        let tmp = tempfile::tempdir().unwrap();
        let trace_dir = tmp.path().join("traces");
        let mut cfg = config(upstream, extra_env, &trace_dir);
        tweak(&mut cfg);
        let running = llmtap::start(cfg).await.expect("llmtap starts");
        Tap {
            running,
            trace_dir,
            _tmp: tmp,
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{}", self.running.addr, path)
    }

    pub fn admin_url(&self, path: &str) -> String {
        format!("http://{}{}", self.running.admin_addr, path)
    }

    /// Every span written to the trace files so far.
    pub fn spans(&self) -> Vec<Value> {
        spans_in(&self.trace_dir)
    }

    /// Waits (up to 10 s) for the span of `trace_header` (`tr-<hex>`).
    pub async fn span(&self, trace_header: &str) -> Span {
        let hex = trace_header.strip_prefix("tr-").expect("tr- prefix");
        for _ in 0..500 {
            if let Some(s) = self.spans().into_iter().find(|s| s["traceId"] == hex) {
                return Span(s);
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        panic!("no span for {trace_header} in {}", self.trace_dir.display());
    }
}

/// An OTLP-JSON span with attribute accessors.
#[derive(Debug, Clone)]
pub struct Span(pub Value);

impl Span {
    pub fn attr(&self, key: &str) -> Option<&Value> {
        self.0["attributes"]
            .as_array()?
            .iter()
            .find(|a| a["key"] == key)
            .map(|a| &a["value"])
    }

    pub fn str(&self, key: &str) -> Option<String> {
        self.attr(key)?["stringValue"].as_str().map(str::to_string)
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        let v = &self.attr(key)?["intValue"];
        v.as_i64().or_else(|| v.as_str()?.parse().ok())
    }

    pub fn bool(&self, key: &str) -> Option<bool> {
        self.attr(key)?["boolValue"].as_bool()
    }

    pub fn json(&self, key: &str) -> Option<Value> {
        serde_json::from_str(&self.str(key)?).ok()
    }

    /// 1 = OK, 2 = ERROR.
    pub fn status_code(&self) -> i64 {
        self.0["status"]["code"].as_i64().unwrap_or(0)
    }

    pub fn status_message(&self) -> String {
        self.0["status"]["message"]
            .as_str()
            .unwrap_or("")
            .to_string()
    }
}

/// A plain HTTP/1.1 client (no decompression, nothing clever).
pub fn client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new()).build_http()
}

/// An HTTP/2 prior-knowledge (h2c) client.
pub fn h2c_client() -> Client<HttpConnector, Full<Bytes>> {
    Client::builder(TokioExecutor::new())
        .http2_only(true)
        .build_http()
}

/// A complete response.
pub struct Got {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Got {
    pub fn trace_id(&self) -> String {
        self.headers
            .get("x-llmtap-trace-id")
            .expect("x-llmtap-trace-id header")
            .to_str()
            .unwrap()
            .to_string()
    }
}

/// POSTs `body` and returns the trace id and the response body unread, so a
/// test can read the stream frame by frame (or stop reading).
pub async fn post_streaming(url: &str, body: Vec<u8>) -> (String, hyper::body::Incoming) {
    let req = Request::post(url)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body)))
        .unwrap();
    let resp = client().request(req).await.expect("request through llmtap");
    let id = resp
        .headers()
        .get("x-llmtap-trace-id")
        .expect("x-llmtap-trace-id header")
        .to_str()
        .unwrap()
        .to_string();
    (id, resp.into_body())
}

/// POSTs `body` with an API key and returns the whole response.
pub async fn post(url: &str, body: &[u8], headers: &[(&str, &str)]) -> Got {
    let mut req = Request::post(url)
        .header("content-type", "application/json")
        .header("authorization", "Bearer sk-test-SECRET-0123456789");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = client()
        .request(req.body(Full::new(Bytes::copy_from_slice(body))).unwrap())
        .await
        .expect("request through llmtap");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.expect("body").to_bytes();
    Got {
        status,
        headers,
        body,
    }
}

/// GETs a URL.
pub async fn get(url: &str) -> Got {
    let resp = client()
        .request(Request::get(url).body(Full::new(Bytes::new())).unwrap())
        .await
        .expect("GET");
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Got {
        status,
        headers,
        body,
    }
}

/// Reads a fixture under tests/fixtures.
pub fn fixture(rel: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

/// An export request as the MLflow sink sends it: gzip'd OTLP protobuf.
pub fn otlp_request(gzipped: &[u8]) -> ExportTraceServiceRequest {
    use std::io::Read;
    let mut raw = Vec::new();
    flate2::read::GzDecoder::new(gzipped)
        .read_to_end(&mut raw)
        .expect("gzip");
    ExportTraceServiceRequest::decode(raw.as_slice()).expect("OTLP protobuf")
}

/// Every span in the OTLP-JSON trace files under `dir`.
pub fn spans_in(dir: &std::path::Path) -> Vec<Value> {
    let mut out = Vec::new();
    let Ok(files) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut files: Vec<_> = files.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    files.sort();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        // A line still being written (large traces are written in pieces)
        // is not read until its newline is there.
        let complete = text.rfind('\n').map_or("", |end| &text[..end]);
        for line in complete.lines() {
            let v: Value = serde_json::from_str(line).expect("trace lines are JSON");
            for rs in v["resourceSpans"].as_array().into_iter().flatten() {
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    out.extend(ss["spans"].as_array().into_iter().flatten().cloned());
                }
            }
        }
    }
    out
}

/// A minimal OTLP span with trace id `[n; 16]` and span id `[n; 8]`.
pub fn otlp_span(n: u8) -> opentelemetry_proto::tonic::trace::v1::Span {
    llmtap::otlp::to_span(&llmtap::record::SpanRecord {
        trace_id: [n; 16],
        span_id: [n; 8],
        parent_span_id: None,
        name: "Completions".into(),
        start_unix_nano: 1,
        end_unix_nano: 2,
        status: llmtap::record::SpanStatus::Ok,
        attributes: vec![],
        events: vec![],
    })
}
