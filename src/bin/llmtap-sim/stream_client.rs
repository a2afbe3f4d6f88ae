//! `llmtap-sim streams`: what users feel on streams, measured at the client.
//! `--concurrency` workers each run one stream at a time (over a fresh
//! connection each, or one keep-alive HTTP/1.1 connection with
//! `--connections`) and record, per stream, the time from sending the
//! request to the first content event (ttft) and between consecutive
//! content events (gap). `--hold` opens the streams and keeps them open.

use std::io::Write;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::{self, SendRequest};
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio::time::Instant;

use crate::cli::{Provider, StreamsArgs};
use crate::percentiles::Samples;
use crate::sse::{classify, Events, Kind};

/// Most latency samples kept per measure, over all workers.
const SAMPLE_CAP: usize = 2_000_000;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a stream may take beyond its configured pacing.
const SLACK: Duration = Duration::from_secs(60);

/// Where and what to send.
struct Target {
    addr: String,
    path: String,
    provider: Provider,
    body: Bytes,
    sim_headers: Vec<(&'static str, String)>,
    /// The longest a stream may take (not in hold mode).
    limit: Duration,
}

/// One worker's results.
struct Recorder {
    ttft: Samples,
    gap: Samples,
    chunks: u64,
    streams: u64,
    errors: u64,
    /// Why the first failed stream failed.
    first_error: Option<String>,
}

impl Recorder {
    fn new(cap: usize) -> Recorder {
        Recorder {
            ttft: Samples::new(cap),
            gap: Samples::new(cap),
            chunks: 0,
            streams: 0,
            errors: 0,
            first_error: None,
        }
    }

    fn merge(&mut self, other: Recorder) {
        self.ttft.merge(other.ttft);
        self.gap.merge(other.gap);
        self.chunks += other.chunks;
        self.streams += other.streams;
        self.errors += other.errors;
        self.first_error = self.first_error.take().or(other.first_error);
    }
}

/// What every worker shares.
struct Shared {
    target: Target,
    reuse: bool,
    /// Streams claimed so far (for --total).
    claimed: AtomicU64,
    total: Option<u64>,
    /// --hold: one stream per worker, kept open until told to stop.
    hold: bool,
    deadline: Option<Instant>,
    /// Streams that got their first chunk, and that failed (for --hold).
    first_seen: AtomicUsize,
    failed: AtomicUsize,
}

pub async fn run(args: StreamsArgs) -> Result<(), String> {
    check(&args)?;
    let target = target(&args)?;
    let started = Instant::now();
    let duration = match (args.hold, args.duration, args.total) {
        (Some(_), _, _) | (None, None, Some(_)) => None,
        (None, d, None) => Some(Duration::from_secs_f64(d.unwrap_or(10.0).max(0.0))),
        (None, Some(_), Some(_)) => return Err("--duration or --total, not both".into()),
    };
    let shared = Arc::new(Shared {
        target,
        reuse: args.connections,
        claimed: AtomicU64::new(0),
        total: if args.hold.is_some() {
            Some(args.concurrency as u64)
        } else {
            args.total
        },
        hold: args.hold.is_some(),
        deadline: duration.map(|d| started + d),
        first_seen: AtomicUsize::new(0),
        failed: AtomicUsize::new(0),
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let cap = (SAMPLE_CAP / args.concurrency).max(1_000);
    let workers: Vec<_> = (0..args.concurrency)
        .map(|_| tokio::spawn(worker(shared.clone(), stop_rx.clone(), cap)))
        .collect();
    if let Some(hold) = args.hold {
        hold_open(&shared, &args, hold).await;
        let _ = stop_tx.send(true);
    }
    let mut all = Recorder::new(cap);
    for w in workers {
        match w.await {
            Ok(r) => all.merge(r),
            Err(_) => all.errors += 1,
        }
    }
    let report = json!({
        "streams": all.streams,
        "errors": all.errors,
        "ttft_us": all.ttft.summary(),
        "gap_us": all.gap.summary(),
        "chunks": all.chunks,
        "first_error": all.first_error,
        "seconds": started.elapsed().as_secs_f64(),
    });
    let mut out = std::io::stdout();
    let _ = writeln!(out, "{report}");
    let _ = out.flush();
    Ok(())
}

/// Refuses what would make no sense (or panic) later.
fn check(args: &StreamsArgs) -> Result<(), String> {
    if args.concurrency == 0 {
        return Err("--concurrency must be at least 1".into());
    }
    let secs = [
        ("--duration", args.duration.unwrap_or(0.0)),
        ("--hold", args.hold.unwrap_or(0.0)),
        ("--ttft-ms", args.ttft_ms / 1000.0),
        ("--chunk-delay-ms", args.chunk_delay_ms / 1000.0),
    ];
    for (name, v) in secs {
        if !(0.0..=1e6).contains(&v) {
            return Err(format!("{name}: out of range"));
        }
    }
    Ok(())
}

/// Waits until every stream has its first chunk or failed, prints
/// `holding N`, and keeps them open `secs`.
async fn hold_open(shared: &Shared, args: &StreamsArgs, secs: f64) {
    let wait = Duration::from_secs_f64(args.ttft_ms.max(0.0) / 1000.0) + SLACK;
    let until = Instant::now() + wait;
    while shared.first_seen.load(Relaxed) + shared.failed.load(Relaxed) < args.concurrency
        && Instant::now() < until
    {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut out = std::io::stdout();
    let _ = writeln!(out, "holding {}", shared.first_seen.load(Relaxed));
    let _ = out.flush();
    tokio::time::sleep(Duration::from_secs_f64(secs.max(0.0))).await;
}

fn target(args: &StreamsArgs) -> Result<Target, String> {
    let uri: Uri = args
        .url
        .parse()
        .map_err(|e| format!("--url {}: {e}", args.url))?;
    if uri.scheme_str() != Some("http") {
        return Err(format!("--url {}: only http:// is supported", args.url));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("--url {}: no host", args.url))?;
    let addr = format!(
        "{}:{}",
        authority.host(),
        authority.port_u16().unwrap_or(80)
    );
    let base = uri.path().trim_end_matches('/');
    let (api_path, body) = match args.provider {
        Provider::Openai => (
            "/v1/chat/completions",
            json!({
                "model": args.model.as_deref().unwrap_or("gpt-4o-mini"),
                "messages": [{"role": "user", "content": "Tell me a story about a lighthouse."}],
                "stream": true,
                "stream_options": {"include_usage": true},
            }),
        ),
        Provider::Anthropic => (
            "/v1/messages",
            json!({
                "model": args.model.as_deref().unwrap_or("claude-sonnet-4-5"),
                "max_tokens": 1024,
                "messages": [{"role": "user", "content": "Tell me a story about a lighthouse."}],
                "stream": true,
            }),
        ),
    };
    let pacing = args.ttft_ms + args.chunk_delay_ms * args.chunks as f64;
    Ok(Target {
        addr,
        path: format!("{base}{api_path}"),
        provider: args.provider,
        body: Bytes::from(body.to_string()),
        sim_headers: vec![
            ("x-sim-chunks", args.chunks.to_string()),
            ("x-sim-chunk-delay-ms", args.chunk_delay_ms.to_string()),
            ("x-sim-ttft-ms", args.ttft_ms.to_string()),
        ],
        limit: Duration::from_secs_f64(pacing.clamp(0.0, 1e9) / 1000.0) + SLACK,
    })
}

async fn worker(shared: Arc<Shared>, stop: watch::Receiver<bool>, cap: usize) -> Recorder {
    let mut rec = Recorder::new(cap);
    let mut conn: Option<SendRequest<Full<Bytes>>> = None;
    while claim(&shared) {
        let result = if shared.hold {
            // Polled first, so a stream that is being read sees `stop` itself.
            let mut cut = stop.clone();
            tokio::select! {
                biased;
                r = attempt(&shared, &mut conn, &mut rec, stop.clone()) => r,
                _ = cut.changed() => Err("cut before its first chunk".into()),
            }
        } else {
            attempt(&shared, &mut conn, &mut rec, stop.clone()).await
        };
        match result {
            Ok(()) => rec.streams += 1,
            Err(e) => {
                rec.errors += 1;
                rec.first_error.get_or_insert(e);
                shared.failed.fetch_add(1, Relaxed);
                if !shared.hold {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
            }
        }
        if shared.hold {
            break;
        }
    }
    rec
}

/// Takes the next stream, if the run is not over.
fn claim(shared: &Shared) -> bool {
    let over_total = shared
        .total
        .is_some_and(|t| shared.claimed.fetch_add(1, Relaxed) >= t);
    let over_time = shared.deadline.is_some_and(|d| Instant::now() >= d);
    !over_total && !over_time
}

/// One stream over the kept connection (if it is still open) or a new one.
async fn attempt(
    shared: &Shared,
    conn: &mut Option<SendRequest<Full<Bytes>>>,
    rec: &mut Recorder,
    stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let mut sender = match conn.take() {
        Some(sender) if shared.reuse && !sender.is_closed() => sender,
        _ => connect(&shared.target.addr).await?,
    };
    let result = stream_once(shared, &mut sender, rec, stop).await;
    if result.is_ok() && shared.reuse {
        *conn = Some(sender);
    }
    result
}

async fn connect(addr: &str) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| format!("connect {addr}: timed out"))?
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("handshake {addr}: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// One stream, start to end (or until `stop`, which ends it cleanly).
async fn stream_once(
    shared: &Shared,
    sender: &mut SendRequest<Full<Bytes>>,
    rec: &mut Recorder,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let t = &shared.target;
    let mut req = Request::post(t.path.as_str())
        .header(header::HOST, t.addr.as_str())
        .header(header::CONTENT_TYPE, "application/json");
    req = match t.provider {
        Provider::Openai => req.header(header::AUTHORIZATION, "Bearer sk-sim-000"),
        Provider::Anthropic => req
            .header("x-api-key", "sk-ant-sim-000")
            .header("anthropic-version", "2023-06-01"),
    };
    for (name, value) in &t.sim_headers {
        req = req.header(*name, value.as_str());
    }
    let req = req
        .body(Full::new(t.body.clone()))
        .map_err(|e| e.to_string())?;
    let run = async {
        sender.ready().await.map_err(|e| e.to_string())?;
        let sent = Instant::now();
        let response = sender.send_request(req).await.map_err(|e| e.to_string())?;
        if response.status() != StatusCode::OK {
            return Err(format!("status {}", response.status()));
        }
        read_events(shared, response.into_body(), sent, rec, &mut stop).await
    };
    if shared.hold {
        // Held streams end when told to (`stop`), not by a timeout.
        return run.await;
    }
    tokio::time::timeout(t.limit, run)
        .await
        .map_err(|_| "stream timed out".to_string())?
}

/// Reads the body to its last event, recording ttft and gaps.
async fn read_events(
    shared: &Shared,
    mut body: hyper::body::Incoming,
    sent: Instant,
    rec: &mut Recorder,
    stop: &mut watch::Receiver<bool>,
) -> Result<(), String> {
    let mut events = Events::default();
    let mut last: Option<Instant> = None;
    let mut done = false;
    loop {
        let frame = tokio::select! {
            frame = body.frame() => frame,
            _ = stop.changed() => {
                return match last {
                    Some(_) => Ok(()),
                    None => Err("cut before its first chunk".into()),
                }
            }
        };
        let Some(frame) = frame else { break };
        let frame = frame.map_err(|e| e.to_string())?;
        let Some(data) = frame.data_ref() else {
            continue;
        };
        let now = Instant::now();
        events.push(data, |event| {
            match classify(shared.target.provider, event) {
                Kind::Content => {
                    match last {
                        None => {
                            rec.ttft.record(micros(now - sent));
                            shared.first_seen.fetch_add(1, Relaxed);
                        }
                        Some(prev) => rec.gap.record(micros(now - prev)),
                    }
                    last = Some(now);
                    rec.chunks += 1;
                }
                Kind::Done => done = true,
                Kind::Other => {}
            }
        })?;
    }
    if done {
        Ok(())
    } else {
        Err("the stream ended before its last event".into())
    }
}

fn micros(d: Duration) -> u64 {
    d.as_micros().min(u128::from(u64::MAX)) as u64
}
