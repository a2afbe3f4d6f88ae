//! Overhead benchmark: the same requests sent straight to a fake provider and
//! through llmtap (tracing off, and tracing on with full parsing and export
//! to OTLP-JSON files), in one process so the noisy machine affects all runs
//! alike. Reports latency percentiles, throughput, and the ratios against the
//! direct baseline.
//!
//! `cargo bench --bench overhead` (env: BENCH_REQUESTS, BENCH_CONCURRENCY).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};

const CHAT: &[u8] = include_bytes!("../tests/fixtures/openai_chat/plain.json");
const STREAM: &[u8] = include_bytes!("../tests/fixtures/openai_chat/stream_include_usage.sse");

/// A provider that answers at once: JSON, or the SSE fixture as one frame per event.
async fn provider() -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let _ = stream.set_nodelay(true);
            tokio::spawn(async move {
                let svc = service_fn(|req: Request<hyper::body::Incoming>| async move {
                    let body = req.into_body().collect().await.unwrap().to_bytes();
                    let streamed = body.windows(13).any(|w| w == b"\"stream\":true");
                    let resp = if streamed {
                        let frames: Vec<Result<http_body::Frame<Bytes>, std::convert::Infallible>> =
                            STREAM
                                .split_inclusive(|b| *b == b'\n')
                                .map(|l| Ok(http_body::Frame::data(Bytes::copy_from_slice(l))))
                                .collect();
                        Response::builder()
                            .header("content-type", "text/event-stream")
                            .body(
                                http_body_util::StreamBody::new(futures_util::stream::iter(frames))
                                    .boxed_unsync(),
                            )
                    } else {
                        Response::builder()
                            .header("content-type", "application/json")
                            .body(Full::new(Bytes::from_static(CHAT)).boxed_unsync())
                    };
                    Ok::<_, std::convert::Infallible>(resp.unwrap())
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    addr
}

struct Stats {
    lat: Vec<Duration>,
    wall: Duration,
}

impl Stats {
    fn pct(&self, p: f64) -> Duration {
        let i = ((self.lat.len() as f64 - 1.0) * p).round() as usize;
        self.lat[i]
    }
    fn mean(&self) -> Duration {
        self.lat.iter().sum::<Duration>() / self.lat.len() as u32
    }
}

async fn load(url: &str, body: &'static [u8], requests: usize, concurrency: usize) -> Stats {
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();
    let client = Arc::new(client);
    let per = requests / concurrency;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..concurrency {
        let (client, url) = (client.clone(), url.to_string());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for _ in 0..per {
                let t = Instant::now();
                let req = Request::post(&url)
                    .header("content-type", "application/json")
                    .header("authorization", "Bearer sk-bench")
                    .body(Full::new(Bytes::from_static(body)))
                    .unwrap();
                let resp = client.request(req).await.expect("request");
                let got = resp.into_body().collect().await.expect("body").to_bytes();
                assert!(!got.is_empty());
                lat.push(t.elapsed());
            }
            lat
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await.unwrap());
    }
    let wall = start.elapsed();
    lat.sort();
    Stats { lat, wall }
}

/// How an llmtap under test traces: not at all, with the default spool
/// (fsync every 100 ms), or with `fsync = "always"` (responses end only once
/// their exchange is fsynced).
#[derive(Clone, Copy)]
enum Tracing {
    Off,
    On,
    Always,
}

fn config(upstream: SocketAddr, mode: Tracing, dir: &std::path::Path) -> llmtap::config::Config {
    let (tracing, fsync, name) = match mode {
        Tracing::Off => (false, "100ms", "off"),
        Tracing::On => (true, "100ms", "on"),
        Tracing::Always => (true, "always", "always"),
    };
    let mut env = llmtap::config::Env::new();
    for (k, v) in [
        ("LLMTAP_LISTEN", "127.0.0.1:0".to_string()),
        ("LLMTAP_ADMIN_LISTEN", "127.0.0.1:0".to_string()),
        ("LLMTAP_UPSTREAM", format!("http://{upstream}")),
        ("LLMTAP_TRACE_DIR", dir.display().to_string()),
        ("ENABLE_MLFLOW_TRACING", tracing.to_string()),
        (
            "LLMTAP_SPOOL_DIR",
            dir.join(format!("spool-{name}")).display().to_string(),
        ),
        ("LLMTAP_SPOOL_FSYNC", fsync.to_string()),
    ] {
        env.insert(k.into(), v);
    }
    llmtap::config::resolve(&Default::default(), &env, None).unwrap()
}

fn row(name: &str, s: &Stats, base: &Stats) {
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!(
        "{name:<28} {:>9.0} {:>9.0} {:>9.0} {:>9.0} {:>10.0} {:>7.2}x {:>+9.0}",
        us(s.pct(0.5)),
        us(s.pct(0.9)),
        us(s.pct(0.99)),
        us(s.mean()),
        s.lat.len() as f64 / s.wall.as_secs_f64(),
        us(s.pct(0.5)) / us(base.pct(0.5)),
        us(s.pct(0.5)) - us(base.pct(0.5)),
    );
}

fn main() {
    let requests: usize = std::env::var("BENCH_REQUESTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(20_000);
    let concurrency: usize = std::env::var("BENCH_CONCURRENCY")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(16);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let upstream = provider().await;
        let dir = tempfile::tempdir().unwrap();
        let plain = llmtap::start(config(upstream, Tracing::Off, dir.path())).await.unwrap();
        let traced = llmtap::start(config(upstream, Tracing::On, dir.path())).await.unwrap();
        let durable = llmtap::start(config(upstream, Tracing::Always, dir.path())).await.unwrap();
        let chat: &'static [u8] = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Capital of France?"}]}"#;
        let stream: &'static [u8] = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Capital of France?"}],"stream":true}"#;
        println!("{requests} requests per run, {concurrency} concurrent; latency in microseconds; ratio and delta of p50 vs direct\n");
        for (what, body) in [("chat JSON", chat), ("chat SSE stream", stream)] {
            let direct = format!("http://{upstream}/v1/chat/completions");
            let via_plain = format!("http://{}/v1/chat/completions", plain.addr);
            let via_traced = format!("http://{}/v1/chat/completions", traced.addr);
            let via_durable = format!("http://{}/v1/chat/completions", durable.addr);
            // Warm up connections and caches.
            for u in [&direct, &via_plain, &via_traced, &via_durable] {
                load(u, body, 200, concurrency.min(8)).await;
            }
            println!("{what}:\n{:<28} {:>9} {:>9} {:>9} {:>9} {:>10} {:>8} {:>9}", "", "p50", "p90", "p99", "mean", "req/s", "ratio", "delta");
            let base = load(&direct, body, requests, concurrency).await;
            row("direct", &base, &base);
            let p = load(&via_plain, body, requests, concurrency).await;
            row("llmtap, tracing off", &p, &base);
            let t = load(&via_traced, body, requests, concurrency).await;
            row("llmtap, tracing on", &t, &base);
            let a = load(&via_durable, body, requests, concurrency).await;
            row("llmtap, fsync always", &a, &base);
            println!();
        }
        for (name, instance) in [("tracing on", &traced), ("fsync always", &durable)] {
            let metrics = instance.metrics.render();
            let exported = metrics.lines().find(|l| l.starts_with("llmtap_traces_exported_total")).unwrap_or("");
            let dropped: Vec<&str> = metrics.lines().filter(|l| l.starts_with("llmtap_traces_dropped_total{")).collect();
            println!("{name}: {exported}; {}", dropped.join("; "));
        }
        durable.shutdown().await;
        traced.shutdown().await;
        plain.shutdown().await;
    });
}
