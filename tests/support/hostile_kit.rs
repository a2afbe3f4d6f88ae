//! What every hostile-client test ends with: real calls answered with exact
//! bytes, RSS under the bound the settings allow, and no planted secret in
//! any log line or file. Plus a raw-socket client for requests no HTTP
//! library would send.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::bin::Bin;
use crate::fake_provider::{Reply, Seen};
use crate::tap;

pub const CHAT: &str = "/v1/chat/completions";
pub const MIB: u64 = 1 << 20;
/// Planted in every real call's `Authorization` header.
pub const SECRET_AUTH: &str = "sk-hostile-AUTH-SECRET-7f3a9c";
/// Planted in every real call's `api-key` header.
pub const SECRET_KEY: &str = "hostile-APIKEY-SECRET-51d2e8";

// ----- the memory bound --------------------------------------------------------------

/// The settings the suite runs llmtap with, as far as memory goes.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `capture.max_body_bytes` (`LLMTAP_MAX_CAPTURE_BYTES`).
    pub capture: u64,
    /// `capture.max_inflight_bytes` (`LLMTAP_MAX_INFLIGHT_CAPTURE_BYTES`).
    pub inflight: u64,
    /// `export.parse_workers`.
    pub parse_workers: u64,
    /// Connections llmtap may hold at once (both listeners; the attack's
    /// count when no limit applies to it).
    pub connections: u64,
}

/// The capture settings every test uses (env for [`Bin::start`]).
pub const CAPTURE_ENV: [(&str, &str); 2] = [
    ("LLMTAP_MAX_CAPTURE_BYTES", "1MiB"),
    ("LLMTAP_MAX_INFLIGHT_CAPTURE_BYTES", "16MiB"),
];

impl Limits {
    pub const fn new(connections: u64) -> Limits {
        Limits {
            capture: MIB,
            inflight: 16 * MIB,
            parse_workers: 1,
            connections,
        }
    }
}

/// The most RSS llmtap may reach under `l`: the README's documented
/// worst case ([`llmtap::memory_bound::worst_case_rss`], the formula a
/// container is sized by) for the settings the suite starts the binary
/// with, `l.connections` connections open and none of them holding a
/// request read whole for usage injection beyond the in-flight budget.
pub fn rss_bound(_idle: u64, l: Limits) -> u64 {
    let env: llmtap::config::Env = CAPTURE_ENV
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let mut cfg = llmtap::config::resolve(&llmtap::config::Flags::default(), &env, None)
        .expect("the suite's settings are valid");
    assert_eq!(
        (
            cfg.max_capture_bytes as u64,
            cfg.max_inflight_capture_bytes as u64
        ),
        (l.capture, l.inflight),
        "CAPTURE_ENV and Limits agree"
    );
    cfg.export.parse_workers = l.parse_workers as usize;
    llmtap::memory_bound::worst_case_rss(&cfg, l.connections as usize, 0)
}

/// Asserts the process's peak RSS (VmHWM) stayed under [`rss_bound`].
pub fn assert_rss_bounded(bin: &Bin, idle: u64, l: Limits, what: &str) {
    let (hwm, rss, bound) = (bin.hwm(), bin.rss(), rss_bound(idle, l));
    eprintln!(
        "{what}: idle {:.1} MiB, peak {:.1} MiB, now {:.1} MiB, bound {:.1} MiB",
        mib(idle),
        mib(hwm),
        mib(rss),
        mib(bound)
    );
    assert!(
        hwm <= bound,
        "{what}: llmtap's peak RSS {:.1} MiB is over the bound {:.1} MiB ({l:?}, idle {:.1} MiB)",
        mib(hwm),
        mib(bound),
        mib(idle)
    );
}

pub fn mib(b: u64) -> f64 {
    b as f64 / MIB as f64
}

// ----- the provider and real calls -----------------------------------------------------

/// The fake provider's answer to a real call: the plain chat fixture, or the
/// chat stream (no usage chunk, so a hidden-usage filter leaves it intact)
/// when the request streams.
pub fn real_reply(seen: &Seen) -> Reply {
    if String::from_utf8_lossy(&seen.body).contains("\"stream\":true") {
        Reply::sse(&tap::fixture("openai_chat/stream_basic.sse"))
    } else {
        Reply::json(200, tap::fixture("openai_chat/plain.json"))
    }
}

/// A chat request, streaming or not (a stream without `include_usage`, so
/// llmtap injects it).
pub fn chat_body(stream: bool) -> Vec<u8> {
    let mut v = serde_json::json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Capital of France?"}],
    });
    if stream {
        v["stream"] = serde_json::json!(true);
    }
    serde_json::to_vec(&v).unwrap()
}

/// A response read whole.
pub struct Got {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Bytes,
}

/// POSTs to llmtap with the planted credentials and `headers`, reading the
/// whole answer within `limit`.
pub async fn post(url: &str, body: Vec<u8>, headers: &[(&str, &str)], limit: Duration) -> Got {
    let mut req = Request::post(url)
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {SECRET_AUTH}"))
        .header("api-key", SECRET_KEY);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body))).unwrap();
    let call = async {
        let resp = tap::client()
            .request(req)
            .await
            .expect("request through llmtap");
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let body = resp
            .into_body()
            .collect()
            .await
            .expect("response body")
            .to_bytes();
        Got {
            status,
            headers,
            body,
        }
    };
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| panic!("POST {url}: no whole answer within {limit:?}"))
}

/// GETs a URL within `limit`; the status and body.
pub async fn get(url: &str, limit: Duration) -> (u16, Bytes) {
    let req = Request::get(url).body(Full::new(Bytes::new())).unwrap();
    let call = async {
        let resp = tap::client().request(req).await.expect("GET");
        let status = resp.status().as_u16();
        let body = resp.into_body().collect().await.map(|b| b.to_bytes());
        (status, body.unwrap_or_default())
    };
    tokio::time::timeout(limit, call)
        .await
        .unwrap_or_else(|_| panic!("GET {url}: no answer within {limit:?}"))
}

/// GETs a URL within `limit`; the status.
pub async fn get_status(url: &str, limit: Duration) -> u16 {
    get(url, limit).await.0
}

/// Real calls (plain and streamed chat, and `/healthz`) answered within
/// `limit` each, with the provider's exact bytes; the process still alive.
/// Returns the calls' trace ids.
pub async fn assert_serves(bin: &mut Bin, what: &str, limit: Duration) -> Vec<String> {
    let mut ids = Vec::new();
    for stream in [false, true, false] {
        let got = post(&bin.url(CHAT), chat_body(stream), &[], limit).await;
        let want = if stream {
            tap::fixture("openai_chat/stream_basic.sse")
        } else {
            tap::fixture("openai_chat/plain.json")
        };
        assert_eq!(
            got.status, 200,
            "{what}: a real call (stream {stream}) answered {}",
            got.status
        );
        assert!(
            got.body == want,
            "{what}: a real call (stream {stream}) got other bytes than the provider sent"
        );
        if let Some(id) = got.headers.get("x-llmtap-trace-id") {
            ids.push(id.to_str().unwrap().to_string());
        }
    }
    assert_eq!(
        get_status(&bin.admin_url("/healthz"), limit).await,
        200,
        "{what}: /healthz"
    );
    assert!(bin.alive(), "{what}: llmtap exited:\n{}", bin.log_tail(40));
    ids
}

/// Waits (up to `limit`) until every one of `ids` (`tr-<hex>`) has a span in
/// the trace files of `bin`.
pub async fn assert_traced(bin: &Bin, ids: &[String], limit: Duration, what: &str) {
    let dir = bin.dir.join("traces");
    let start = std::time::Instant::now();
    loop {
        let spans = spans_so_far(&dir);
        let traced = |id: &String| {
            let hex = id.strip_prefix("tr-").unwrap_or(id);
            spans.iter().any(|s| s["traceId"] == hex)
        };
        let missing: Vec<&String> = ids.iter().filter(|id| !traced(id)).collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < limit,
            "{what}: no trace within {limit:?} for {missing:?}; llmtap's log ends:\n{}",
            bin.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The spans in the trace files under `dir`, skipping a line the file sink
/// is still writing (it does not parse yet).
pub fn spans_so_far(dir: &std::path::Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    for f in tap::files_under(dir) {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            for rs in v["resourceSpans"].as_array().into_iter().flatten() {
                for ss in rs["scopeSpans"].as_array().into_iter().flatten() {
                    out.extend(ss["spans"].as_array().into_iter().flatten().cloned());
                }
            }
        }
    }
    out
}

// ----- secrets ---------------------------------------------------------------------------

/// Asserts none of `secrets` (the planted credentials always included)
/// appears in the process's log, its `/metrics`, or any file under its dir
/// (spool, journal, traces, dead letters, quarantine).
pub async fn assert_no_secret(bin: &Bin, secrets: &[&str], what: &str) {
    let mut all = vec![SECRET_AUTH, SECRET_KEY];
    all.extend_from_slice(secrets);
    let (_, metrics) = get(&bin.admin_url("/metrics"), Duration::from_secs(10)).await;
    for s in &all {
        assert!(
            !contains(&metrics, s.as_bytes()),
            "{what}: secret {s:?} in /metrics"
        );
    }
    let log = bin.log();
    for s in &all {
        if let Some(line) = log.lines().find(|l| l.contains(s)) {
            panic!("{what}: secret {s:?} in a log line: {line}");
        }
    }
    for f in tap::files_under(&bin.dir) {
        let bytes = std::fs::read(&f).unwrap_or_default();
        for s in &all {
            assert!(
                !contains(&bytes, s.as_bytes()),
                "{what}: secret {s:?} in {}",
                f.display()
            );
        }
    }
}

pub fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

// ----- raw sockets -----------------------------------------------------------------------

/// Sends `request` as is (a writer task, so a peer that answers and closes
/// early does not block us) and reads one response: its head, then a
/// `content-length` body, or until the peer closes or `limit` passes.
/// Returns the status code (0 when there was no response) and the bytes.
pub async fn raw(addr: SocketAddr, request: Vec<u8>, limit: Duration) -> (u16, Vec<u8>) {
    let s = TcpStream::connect(addr).await.expect("connect");
    let (mut rd, mut wr) = s.into_split();
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&request).await;
        wr
    });
    let mut got = Vec::new();
    let read = async {
        let mut buf = vec![0u8; 64 * 1024];
        loop {
            match rd.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got.extend_from_slice(&buf[..n]),
            }
            if response_complete(&got) {
                return;
            }
        }
    };
    let _ = tokio::time::timeout(limit, read).await;
    writer.abort();
    (status_of(&got), got)
}

/// A whole response head, and its `content-length` body when it has one.
fn response_complete(bytes: &[u8]) -> bool {
    let Some(end) = bytes.windows(4).position(|w| w == b"\r\n\r\n") else {
        return false;
    };
    let head = String::from_utf8_lossy(&bytes[..end]).to_ascii_lowercase();
    let len = head
        .lines()
        .find_map(|l| l.strip_prefix("content-length:"))
        .and_then(|v| v.trim().parse::<usize>().ok());
    len.is_some_and(|n| bytes.len() >= end + 4 + n)
}

/// The status code of an HTTP/1.1 response head at the start of `bytes`.
pub fn status_of(bytes: &[u8]) -> u16 {
    let line = bytes.split(|&b| b == b'\n').next().unwrap_or_default();
    String::from_utf8_lossy(line)
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
