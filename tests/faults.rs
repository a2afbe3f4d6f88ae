//! Fault tests (issue 4, §8): llmtap under an MLflow outage, `kill -9`, a
//! burst above the sink's rate limit, a damaged or full spool, and upstream
//! and client faults — each against a real `mlflow server`, each ending by
//! counting traces in MLflow: exactly one per call id (`x-llmtap-trace-id`),
//! none missing, none duplicated.
//!
//! `docs/fault-tests.md` says what each test proves and how to run the long
//! versions. The knobs (short defaults, for CI on a 2-core machine):
//!
//! | env | default | used by |
//! |---|---|---|
//! | `LLMTAP_FAULT_QPS` | 20 | outage, soak |
//! | `LLMTAP_FAULT_OUTAGE_SECS` | 6 | outage: MLflow is down this long while the load runs (then ~4-17 s more while it restarts) |
//! | `LLMTAP_FAULT_DRAIN_SECS` | 60 | outage: bound on delivery after MLflow is back |
//! | `LLMTAP_FAULT_BIG_BYTES` | 1 GiB | the big streamed response |
//! | `LLMTAP_SOAK_SECS` | 10 | soak |
//! | `LLMTAP_SOAK_MLFLOW` | up | soak: `down` = MLflow unreachable for the whole load |

#[path = "support/bin.rs"]
mod bin;
#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/mlflow.rs"]
mod mlflow;
#[path = "support/tap.rs"]
mod tap;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bin::{rss_sampler, Bin, Keep, Launch};
use bytes::Bytes;
use fake_provider::{FakeProvider, Reply};
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Frame;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use serde_json::{json, Value};
use tap::{fixture, Tap};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::task::JoinSet;

const CHAT: &str = "/v1/chat/completions";
const SECRET: &str = "sk-faults-SECRET-0123456789";

// ----- knobs ---------------------------------------------------------------------------

fn env_f64(name: &str, default: f64) -> f64 {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .unwrap_or_else(|_| panic!("{name}={v:?} is not a number")),
        _ => default,
    }
}

fn env_u64(name: &str, default: u64) -> u64 {
    env_f64(name, default as f64) as u64
}

// ----- the provider and one call ---------------------------------------------------------

/// A provider answering like OpenAI chat: a stream when asked, else JSON.
async fn chat_provider() -> FakeProvider {
    chat_provider_with(
        fixture("openai_chat/plain.json").into(),
        fixture("openai_chat/stream_include_usage.sse").into(),
    )
    .await
}

/// A provider answering `stream` to stream requests and `plain` to others.
async fn chat_provider_with(plain: Bytes, stream: Bytes) -> FakeProvider {
    FakeProvider::start(move |seen| {
        let req: Value = serde_json::from_slice(&seen.body).unwrap_or(Value::Null);
        if req["stream"] == true {
            Reply::sse(&stream)
        } else {
            Reply::json(200, plain.clone())
        }
    })
    .await
}

/// Call `i`'s request: every third one streams; the prompt names the call.
fn chat_request(i: usize) -> (bool, Bytes) {
    let stream = i % 3 == 1;
    let mut v = json!({
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": format!("Fault-test call {i}: capital of France?")},
        ],
        "user": "fault-tests",
    });
    if stream {
        v["stream"] = json!(true);
        v["stream_options"] = json!({"include_usage": true});
    }
    (stream, Bytes::from(v.to_string()))
}

/// A call the client saw complete: status 200 and the provider's whole body.
#[derive(Debug, Clone)]
struct Done {
    id: String,
    at: Instant,
}

type HttpClient = Client<HttpConnector, Full<Bytes>>;

/// Makes call `i` against `base` and checks the client got the provider's
/// body byte for byte.
async fn one_call(client: HttpClient, base: String, i: usize) -> Result<Done, String> {
    let (stream, body) = chat_request(i);
    let want = if stream {
        fixture("openai_chat/stream_include_usage.sse")
    } else {
        fixture("openai_chat/plain.json")
    };
    let req = Request::post(format!("{base}{CHAT}"))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {SECRET}"))
        .body(Full::new(body))
        .unwrap();
    let call = async {
        let resp = client
            .request(req)
            .await
            .map_err(|e| format!("call {i}: {e:?}"))?;
        let status = resp.status();
        let id = resp
            .headers()
            .get("x-llmtap-trace-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let got = resp
            .into_body()
            .collect()
            .await
            .map_err(|e| format!("call {i}: body: {e:?}"))?
            .to_bytes();
        if status != 200 {
            return Err(format!(
                "call {i}: HTTP {status}: {}",
                String::from_utf8_lossy(&got)
            ));
        }
        if got[..] != want[..] {
            return Err(format!(
                "call {i}: body differs from the provider's ({} vs {} bytes)",
                got.len(),
                want.len()
            ));
        }
        let id = id.ok_or_else(|| format!("call {i}: no x-llmtap-trace-id"))?;
        Ok(Done {
            id,
            at: Instant::now(),
        })
    };
    match tokio::time::timeout(Duration::from_secs(30), call).await {
        Ok(r) => r,
        Err(_) => Err(format!("call {i}: no complete answer within 30 s")),
    }
}

/// What a load run saw.
#[derive(Debug, Default)]
struct Load {
    done: Vec<Done>,
    failed: Vec<String>,
    started: usize,
    elapsed: Duration,
}

/// Starts calls at `qps` (each in its own task, so a slow one does not hold
/// up the schedule) until `count` were started, `duration` has passed or
/// `stop` is set; then waits for the calls in flight.
async fn run_load(
    base: String,
    qps: f64,
    count: usize,
    duration: Duration,
    stop: Arc<AtomicBool>,
) -> Load {
    let client = tap::client();
    let start = tokio::time::Instant::now();
    let mut tasks = JoinSet::new();
    let mut started = 0;
    for i in 0..count {
        let at = start + Duration::from_secs_f64(i as f64 / qps);
        if at - start >= duration {
            break;
        }
        tokio::time::sleep_until(at).await;
        if stop.load(Relaxed) {
            break;
        }
        tasks.spawn(one_call(client.clone(), base.clone(), i));
        started += 1;
    }
    gather(started, tasks, start.into_std()).await
}

/// Waits for every call of a load.
async fn gather(started: usize, mut tasks: JoinSet<Result<Done, String>>, start: Instant) -> Load {
    let mut load = Load {
        started,
        ..Load::default()
    };
    while let Some(r) = tasks.join_next().await {
        match r.expect("call task") {
            Ok(d) => load.done.push(d),
            Err(e) => load.failed.push(e),
        }
    }
    load.elapsed = start.elapsed();
    load
}

/// `n` calls, at most `concurrency` at a time, as fast as they go.
async fn burst(base: &str, n: usize, concurrency: usize) -> Load {
    let client = tap::client();
    let start = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    for i in 0..n {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let (client, base) = (client.clone(), base.to_string());
        tasks.spawn(async move {
            let r = one_call(client, base, i).await;
            drop(permit);
            r
        });
    }
    gather(n, tasks, start).await
}

fn ids(done: &[Done]) -> Vec<String> {
    done.iter().map(|d| d.id.clone()).collect()
}

fn assert_all_served(load: &Load, what: &str) {
    assert!(
        load.failed.is_empty(),
        "{what}: {} of {} calls failed; first: {:?}",
        load.failed.len(),
        load.started,
        &load.failed[..load.failed.len().min(5)]
    );
    assert_eq!(load.done.len(), load.started, "{what}: calls lost");
}

// ----- metrics ---------------------------------------------------------------------------

/// One scrape of `/metrics`: `name{labels}` -> value.
#[derive(Debug, Default, Clone)]
struct Scrape(BTreeMap<String, f64>);

impl Scrape {
    /// A metric without labels (or the sum over its label sets); panics if
    /// llmtap does not export it.
    fn get(&self, name: &str) -> f64 {
        self.try_get(name).unwrap_or_else(|| {
            panic!(
                "metric {name} missing from /metrics; llmtap exports: {:?}",
                self.0
                    .keys()
                    .map(|k| k.split('{').next().unwrap_or(k))
                    .collect::<HashSet<_>>()
            )
        })
    }

    fn try_get(&self, name: &str) -> Option<f64> {
        let prefix = format!("{name}{{");
        let mut found = None;
        for (k, v) in &self.0 {
            if k == name || k.starts_with(&prefix) {
                *found.get_or_insert(0.0) += v;
            }
        }
        found
    }

    /// Every series of `name`, for messages.
    fn series(&self, name: &str) -> String {
        self.0
            .iter()
            .filter(|(k, _)| k.split('{').next() == Some(name))
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

async fn scrape(admin: SocketAddr) -> Scrape {
    let got = tap::get(&format!("http://{admin}/metrics")).await;
    assert_eq!(got.status, 200, "/metrics");
    let mut out = BTreeMap::new();
    for line in String::from_utf8_lossy(&got.body).lines() {
        if line.starts_with('#') || line.trim().is_empty() {
            continue;
        }
        if let Some((k, v)) = line.rsplit_once(' ') {
            if let Ok(v) = v.parse::<f64>() {
                out.insert(k.to_string(), v);
            }
        }
    }
    Scrape(out)
}

/// Polls `/metrics` until `done` holds; returns the scrape and when it first
/// held, or panics after `timeout` with the last scrape.
async fn wait_metrics(
    admin: SocketAddr,
    timeout: Duration,
    what: &str,
    mut done: impl FnMut(&Scrape) -> bool,
) -> (Scrape, Duration) {
    let start = Instant::now();
    loop {
        let m = scrape(admin).await;
        if done(&m) {
            return (m, start.elapsed());
        }
        if start.elapsed() > timeout {
            panic!("{what}: not reached within {timeout:?}; metrics: {:?}", m.0);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// No trace was lost anywhere llmtap counts a loss.
fn assert_no_drops(m: &Scrape, what: &str) {
    let dropped = m.get("llmtap_traces_dropped_total");
    let spool_dropped = m.get("llmtap_spool_records_dropped_total");
    assert!(
        dropped == 0.0 && spool_dropped == 0.0,
        "{what}: traces dropped: {} / llmtap_spool_records_dropped_total {spool_dropped}",
        m.series("llmtap_traces_dropped_total")
    );
}

// ----- counting traces in MLflow ---------------------------------------------------------

/// trace id -> how many traces MLflow lists with it, in one experiment.
async fn trace_counts(mlflow: &mlflow::Mlflow, experiment: &str) -> HashMap<String, usize> {
    let mut counts = HashMap::new();
    for info in mlflow.search_traces(experiment).await {
        let id = info["trace_id"]
            .as_str()
            .unwrap_or_else(|| panic!("a trace without trace_id: {info}"))
            .to_string();
        *counts.entry(id).or_insert(0) += 1;
    }
    counts
}

/// Waits until every id in `ids` has a trace in MLflow; returns how long
/// that took (`None` if `timeout` passed first) and the last counts.
///
/// MLflow (one worker) ingests slowly, and searching competes with that, so
/// MLflow is searched when llmtap at `admin` says it has nothing left to
/// send (spool and queues empty), and otherwise only every 5 s.
async fn wait_traces(
    mlflow: &mlflow::Mlflow,
    experiment: &str,
    ids: &[String],
    timeout: Duration,
    admin: SocketAddr,
) -> (Option<Duration>, HashMap<String, usize>) {
    let start = Instant::now();
    let mut next_search = start;
    loop {
        let m = scrape(admin).await;
        let settled = m.try_get("llmtap_spool_records") == Some(0.0)
            && m.get("llmtap_export_queue_depth") == 0.0;
        let timed_out = start.elapsed() > timeout;
        let now = Instant::now();
        if (settled && now >= next_search)
            || now >= next_search + Duration::from_secs(5)
            || timed_out
        {
            let counts = trace_counts(mlflow, experiment).await;
            if ids.iter().all(|id| counts.contains_key(id)) {
                return (Some(start.elapsed()), counts);
            }
            if timed_out {
                return (None, counts);
            }
            next_search = Instant::now() + Duration::from_millis(500);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Exactly one trace per id in `ids`; with `exact`, nothing else either.
fn assert_exactly_once(what: &str, ids: &[String], counts: &HashMap<String, usize>, exact: bool) {
    let want: HashSet<&String> = ids.iter().collect();
    assert_eq!(want.len(), ids.len(), "{what}: two calls got the same id");
    let missing: Vec<&String> = ids.iter().filter(|id| !counts.contains_key(*id)).collect();
    let duplicated: Vec<(&String, &usize)> = counts.iter().filter(|(_, n)| **n > 1).collect();
    let extra: Vec<&String> = counts.keys().filter(|id| !want.contains(id)).collect();
    assert!(
        missing.is_empty() && duplicated.is_empty() && (!exact || extra.is_empty()),
        "{what}: {} calls, {} traces in MLflow; {} missing (e.g. {:?}), {} duplicated \
         (e.g. {:?}), {} not from these calls (e.g. {:?})",
        ids.len(),
        counts.values().sum::<usize>(),
        missing.len(),
        &missing[..missing.len().min(5)],
        duplicated.len(),
        &duplicated[..duplicated.len().min(5)],
        extra.len(),
        &extra[..extra.len().min(5)],
    );
}

/// A URI where nothing listens (connection refused).
fn dead_uri() -> String {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    drop(l);
    format!("http://127.0.0.1:{port}")
}

fn say(line: &str) {
    eprintln!("[faults] {line}");
}

// ----- the llmtap binary -----------------------------------------------------------------

/// The `llmtap` binary, run as an operator would, with JSON logs; no spool
/// unless a test's env sets `LLMTAP_SPOOL_DIR`.
const LAUNCH: Launch = Launch {
    spool: false,
    keep: Keep::Last(400),
    ..Launch::DEFAULT
};

/// [`LAUNCH`] with its spool in `dir/spool`.
const SPOOLED: Launch = Launch {
    spool: true,
    ..LAUNCH
};

const MIB: f64 = 1024.0 * 1024.0;

// ----- a provider that streams a huge body, generated lazily ------------------------------

/// An upstream answering every request with one chat stream of about `total`
/// bytes, made up as it is sent (64 KiB frames of one shared buffer), and
/// counting how many bytes the proxy has taken from it.
struct BigUpstream {
    addr: SocketAddr,
    /// Bytes handed to the connection so far, over all requests.
    produced: Arc<AtomicU64>,
    /// The exact length of each (long) response body.
    body_len: u64,
}

/// One 64 KiB frame of SSE chat chunks.
fn big_frame() -> Bytes {
    let mut frame = String::new();
    let head = r#"data: {"id":"chatcmpl-big","object":"chat.completion.chunk","created":1721596428,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{"content":""#;
    let tail = "\"},\"finish_reason\":null}]}\n\n";
    let event = 16 * 1024;
    for _ in 0..4 {
        frame.push_str(head);
        let pad = event - head.len() - tail.len();
        frame.push_str(&"abcdefghijklmnopqrstuvwxyz012345".repeat(pad / 32 + 1)[..pad]);
        frame.push_str(tail);
    }
    assert_eq!(frame.len(), 64 * 1024);
    Bytes::from(frame)
}

const BIG_TAIL: &str = concat!(
    r#"data: {"id":"chatcmpl-big","object":"chat.completion.chunk","created":1721596428,"model":"gpt-4o-mini","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}"#,
    "\n\n",
    r#"data: {"id":"chatcmpl-big","object":"chat.completion.chunk","created":1721596428,"model":"gpt-4o-mini","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":250000000,"total_tokens":250000012}}"#,
    "\n\n",
    "data: [DONE]\n\n"
);

struct BigBody {
    frame: Bytes,
    frames_left: u64,
    tail_sent: bool,
    produced: Arc<AtomicU64>,
}

impl http_body::Body for BigBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let data = if self.frames_left > 0 {
            self.frames_left -= 1;
            self.frame.clone()
        } else if !self.tail_sent {
            self.tail_sent = true;
            Bytes::from_static(BIG_TAIL.as_bytes())
        } else {
            return Poll::Ready(None);
        };
        self.produced.fetch_add(data.len() as u64, Relaxed);
        Poll::Ready(Some(Ok(Frame::data(data))))
    }
}

impl BigUpstream {
    async fn start(total: u64) -> BigUpstream {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let produced = Arc::new(AtomicU64::new(0));
        let frame = big_frame();
        let frames = total / frame.len() as u64;
        let body_len = frames * frame.len() as u64 + BIG_TAIL.len() as u64;
        let p = produced.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (p, frame) = (p.clone(), frame.clone());
                tokio::spawn(async move {
                    let svc =
                        hyper::service::service_fn(move |req: Request<hyper::body::Incoming>| {
                            let (p, frame) = (p.clone(), frame.clone());
                            async move {
                                let body = req.into_body().collect().await;
                                let short =
                                    body.is_ok_and(|b| contains(&b.to_bytes(), SHORT.as_bytes()));
                                let mut resp = http::Response::new(BigBody {
                                    frame,
                                    frames_left: if short { 2 } else { frames },
                                    tail_sent: false,
                                    produced: p,
                                });
                                resp.headers_mut().insert(
                                    "content-type",
                                    http::HeaderValue::from_static(
                                        "text/event-stream; charset=utf-8",
                                    ),
                                );
                                Ok::<_, std::convert::Infallible>(resp)
                            }
                        });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
        BigUpstream {
            addr,
            produced,
            body_len,
        }
    }

    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
}

/// A request [`BigUpstream`] answers with a short stream (two frames).
const SHORT: &str = "Write a short story.";

fn short_stream_request() -> String {
    json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": SHORT}],
        "stream": true,
        "stream_options": {"include_usage": true},
    })
    .to_string()
}

fn stream_request() -> String {
    json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Write a very long story."}],
        "stream": true,
        "stream_options": {"include_usage": true},
    })
    .to_string()
}

/// A raw HTTP/1.1 request head for `body_len` bytes of JSON.
fn raw_head(path: &str, body_len: usize) -> String {
    format!(
        "POST {path} HTTP/1.1\r\nhost: llmtap\r\ncontent-type: application/json\r\n\
         authorization: Bearer {SECRET}\r\ncontent-length: {body_len}\r\n\r\n"
    )
}

/// The value of `name` in a raw response head.
fn raw_header(head: &str, name: &str) -> Option<String> {
    head.lines().find_map(|l| {
        let (k, v) = l.split_once(':')?;
        k.trim()
            .eq_ignore_ascii_case(name)
            .then(|| v.trim().to_string())
    })
}

/// A string attribute of a span read back with `get_trace_with_spans`.
fn span_attr(trace: &Value, key: &str) -> Option<Value> {
    let spans = trace["spans"].as_array()?;
    spans.iter().find_map(|s| {
        s["attributes"].as_array()?.iter().find_map(|a| {
            (a["key"] == key).then(|| {
                let v = &a["value"];
                v.get("int_value")
                    .or_else(|| v.get("intValue"))
                    .or_else(|| v.get("string_value"))
                    .or_else(|| v.get("stringValue"))
                    .or_else(|| v.get("bool_value"))
                    .or_else(|| v.get("boolValue"))
                    .cloned()
                    .unwrap_or_else(|| v.clone())
            })
        })
    })
}

// =========================================================================================
// a. The MLflow server goes away during steady load and comes back.
// =========================================================================================

/// MLflow is killed (SIGKILL, a crash) ~2 s into a steady load and started
/// again once the load has ended: every call made before and during the
/// outage has exactly one trace, all delivered within
/// `LLMTAP_FAULT_DRAIN_SECS` of MLflow answering again, the backlog was held
/// in the spool, and the agent's calls never failed. Long version:
/// `LLMTAP_FAULT_QPS=60 LLMTAP_FAULT_OUTAGE_SECS=600 LLMTAP_FAULT_DRAIN_SECS=1800`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlflow_outage_during_steady_load() {
    let qps = env_f64("LLMTAP_FAULT_QPS", 20.0);
    let outage = Duration::from_secs_f64(env_f64("LLMTAP_FAULT_OUTAGE_SECS", 6.0));
    let drain_bound = Duration::from_secs_f64(env_f64("LLMTAP_FAULT_DRAIN_SECS", 60.0));
    let before = Duration::from_secs(2);
    let load_for = before + outage;

    let mlflow = mlflow::Private::start().await;
    let (_, experiment) = mlflow.unique_experiment("faults-outage").await;
    let provider = chat_provider().await;
    let spool = tempfile::tempdir().unwrap();
    let spool_dir = spool.path().join("spool");
    let tap = Tap::start(
        &provider.url(),
        &[
            ("MLFLOW_TRACKING_URI", mlflow.uri()),
            ("MLFLOW_EXPERIMENT_ID", &experiment),
            ("LLMTAP_SPOOL_DIR", spool_dir.to_str().unwrap()),
        ],
    )
    .await;
    let admin = tap.running.admin_addr;
    // Steady state first: MLflow's first OTLP request after a start takes
    // seconds (imports), so one call goes through before the load starts.
    let warm = burst(&tap.url(""), 1, 1).await;
    assert_all_served(&warm, "warm-up call");
    let warm_ids = ids(&warm.done);
    let (warmed, _) = wait_traces(
        &mlflow,
        &experiment,
        &warm_ids,
        Duration::from_secs(60),
        admin,
    )
    .await;
    assert!(
        warmed.is_some(),
        "the warm-up call's trace never reached MLflow"
    );

    let count = (qps * load_for.as_secs_f64()).ceil() as usize;
    let load = tokio::spawn(run_load(
        tap.url(""),
        qps,
        count,
        load_for,
        Arc::new(AtomicBool::new(false)),
    ));

    tokio::time::sleep(before).await;
    let before_stop = scrape(admin).await;
    let stopped_at = Instant::now();
    let stop_took = mlflow.kill().await;

    // Watch the backlog while MLflow is down and the load goes on.
    let mut peak_records = 0.0f64;
    let mut peak_bytes = 0.0f64;
    let mut peak_age = 0.0f64;
    while !load.is_finished() {
        let m = scrape(admin).await;
        peak_records = peak_records.max(m.get("llmtap_spool_records"));
        peak_bytes = peak_bytes.max(m.get("llmtap_spool_bytes"));
        peak_age = peak_age.max(m.get("llmtap_spool_oldest_unsent_seconds"));
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let load = load.await.unwrap();
    assert_all_served(&load, "calls during the MLflow outage");
    let mut ids = ids(&load.done);
    ids.extend(warm_ids);
    let exported_before = before_stop.get("llmtap_traces_exported_total");

    let restart_took = mlflow.start_again().await;
    let outage_lasted = stopped_at.elapsed();
    let back = Instant::now();
    // llmtap's part (spool empty, everything accepted), then MLflow's count.
    let (spooled, _) = wait_metrics(
        admin,
        drain_bound,
        "the spool drained after the restart",
        |m| {
            m.get("llmtap_spool_records") == 0.0
                && m.get("llmtap_traces_exported_total") >= ids.len() as f64
        },
    )
    .await;
    let spool_empty = back.elapsed();
    let (delivered, counts) = wait_traces(&mlflow, &experiment, &ids, drain_bound, admin).await;
    let all_in = back.elapsed();
    say(&format!(
        "outage: {} calls at {qps} QPS over {:.1}s, all 200; {:.0} traces exported before \
         MLflow was killed (port closed {:.2}s after SIGKILL); MLflow down {:.1}s (its \
         restart took {:.1}s); spool peak {peak_records} records / {:.2} MiB, oldest unsent \
         {peak_age:.1}s; after MLflow was back: spool empty in {:.2}s, all traces in MLflow \
         {}; export retries {}",
        ids.len(),
        load.elapsed.as_secs_f64(),
        exported_before,
        stop_took.as_secs_f64(),
        outage_lasted.as_secs_f64(),
        restart_took.as_secs_f64(),
        peak_bytes / MIB,
        spool_empty.as_secs_f64(),
        if delivered.is_some() {
            format!("in {:.2}s", all_in.as_secs_f64())
        } else {
            format!("NOT within {drain_bound:?}")
        },
        spooled.get("llmtap_trace_export_retries_total"),
    ));
    assert_exactly_once("MLflow outage", &ids, &counts, true);
    assert!(
        delivered.is_some() && all_in <= drain_bound,
        "delivered {all_in:?} after MLflow was back, bound {drain_bound:?}"
    );
    assert!(
        peak_records > 0.0,
        "the spool never held a record during a {outage_lasted:?} outage: were traces held \
         somewhere else?"
    );
    assert_no_drops(&spooled, "MLflow outage");
    assert_eq!(spooled.get("llmtap_spool_corrupt_records_total"), 0.0);
    tap.running.shutdown().await;
}

// =========================================================================================
// b. kill -9 mid-load, restart on the same spool.
// =========================================================================================

/// llmtap (the binary, `LLMTAP_SPOOL_FSYNC=always`) is SIGKILLed while calls
/// are in flight and restarted on the same spool: every call the client saw
/// complete has exactly one trace in MLflow — including calls that completed
/// a fraction of a millisecond before the kill. That holds because with
/// `fsync = "always"` a response's last bytes wait until its exchange is
/// fsynced in the exchange journal (`src/pipeline/journal`); the restarted
/// process parses what the journal holds and sends it. The load keeps running
/// right up to the kill, so the kill really lands mid-load, and the kill is
/// sent the moment one more (streamed) call has completed: tens of
/// microseconds later, far inside the window where, before the journal, a
/// trace was still only in memory. Calls the client saw fail (in flight at
/// the kill) may or may not have a trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_mid_load_loses_nothing_with_fsync_always() {
    let qps = 50.0;
    let mlflow = mlflow::shared().await;
    let (_, experiment) = mlflow.unique_experiment("faults-sigkill").await;
    let provider = chat_provider().await;
    let work = tempfile::tempdir().unwrap();
    let spool_dir = work.path().join("spool");
    let env = [
        ("MLFLOW_TRACKING_URI", mlflow.uri()),
        ("MLFLOW_EXPERIMENT_ID", experiment.as_str()),
        ("LLMTAP_SPOOL_DIR", spool_dir.to_str().unwrap()),
        ("LLMTAP_SPOOL_FSYNC", "always"),
    ];
    let mut first = LAUNCH
        .start(&provider.url(), &work.path().join("a"), &env)
        .await;

    let stop = Arc::new(AtomicBool::new(false));
    let load = tokio::spawn(run_load(
        first.base(),
        qps,
        10_000,
        Duration::from_secs(60),
        stop.clone(),
    ));
    tokio::time::sleep(Duration::from_millis(2500)).await;
    let before_kill = scrape(first.admin).await;
    // The sharpest case: the kill lands the moment a call has completed
    // (a streamed one: index 1 streams), with the load still running.
    let last = one_call(tap::client(), first.base(), 1)
        .await
        .expect("the call made just before the kill");
    let killed_at = Instant::now();
    first.kill9();
    stop.store(true, Relaxed);
    let load = load.await.unwrap();
    let mut done = load.done.clone();
    let last_gap = killed_at.saturating_duration_since(last.at);
    done.push(last.clone());
    say(&format!(
        "kill -9: the last call completed {:.0} µs before the kill signal was sent",
        last_gap.as_secs_f64() * 1e6
    ));
    say(&format!(
        "kill -9: {} calls started, {} completed, {} failed (in flight at the kill); before \
         the kill: {} exchanges journaled, {} spool records written, {} acked, {} traces exported",
        load.started,
        done.len(),
        load.failed.len(),
        before_kill.get("llmtap_journal_records_written_total"),
        before_kill.get("llmtap_spool_records_written_total"),
        before_kill.get("llmtap_spool_records_acked_total"),
        before_kill.get("llmtap_traces_exported_total"),
    ));
    assert!(done.len() >= 50, "too few calls completed before the kill");
    assert!(
        load.failed.len() <= 20,
        "calls failed long before the kill? {:?}",
        &load.failed[..5]
    );

    let mut second = LAUNCH
        .start(&provider.url(), &work.path().join("b"), &env)
        .await;
    let all_ids = ids(&done);
    let (delivered, _) = wait_traces(
        mlflow,
        &experiment,
        &all_ids,
        Duration::from_secs(30),
        second.admin,
    )
    .await;
    // Whatever else the journal and the spool held has been sent once both are empty.
    let (m, _) = wait_metrics(
        second.admin,
        Duration::from_secs(30),
        "the restarted llmtap emptied the journal and the spool",
        |m| m.get("llmtap_spool_records") == 0.0 && m.get("llmtap_journal_records") == 0.0,
    )
    .await;
    let counts = trace_counts(mlflow, &experiment).await;
    let since_kill = |d: &Done| killed_at.saturating_duration_since(d.at).as_secs_f64() * 1000.0;
    let latest_traced = done
        .iter()
        .filter(|d| counts.contains_key(&d.id))
        .map(since_kill)
        .fold(f64::INFINITY, f64::min);
    let missing: Vec<String> = done
        .iter()
        .filter(|d| !counts.contains_key(&d.id))
        .map(|d| format!("{:.1} ms before", since_kill(d)))
        .collect();
    let extra = counts.len() - (all_ids.len() - missing.len());
    say(&format!(
        "kill -9: after the restart: {} traces sent (corrupt records skipped: spool {} / \
         journal {}), all present after {}; {} completed calls \
         without a trace {:?}; the latest call with a trace completed {:.1} ms before the \
         kill; {} traces of calls the client saw fail",
        m.get("llmtap_traces_exported_total"),
        m.get("llmtap_spool_corrupt_records_total"),
        m.get("llmtap_journal_corrupt_records_total"),
        delivered.map_or("(never)".into(), |d| format!("{:.2}s", d.as_secs_f64())),
        missing.len(),
        missing,
        latest_traced,
        extra,
    ));
    assert_exactly_once("calls completed before kill -9", &all_ids, &counts, false);
    assert_eq!(
        counts.get(&last.id),
        Some(&1),
        "the call completed {last_gap:?} before the kill has its trace"
    );
    assert!(second.alive());
    assert_eq!(
        m.get("llmtap_spool_corrupt_records_total") + m.get("llmtap_journal_corrupt_records_total"),
        0.0,
        "kill -9 with fsync=always should leave no damaged record"
    );
    second.stop().await;
}

// =========================================================================================
// c. A burst far above the sink's rate limit.
// =========================================================================================

/// 150 calls as fast as they go against `LLMTAP_MAX_TRACES_PER_SECOND=20`:
/// every call is traced exactly once, nothing dropped, and the backlog drains
/// at about the limit: it takes at least half the ideal (150-20)/20 s, so the
/// limit provably applied, and no second sees more than 3x the limit
/// accepted, so it was not sent as one late request. No upper bound on the
/// time here; that belongs in benchmarks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn burst_above_the_rate_limit_drops_nothing() {
    const CALLS: usize = 150;
    const RATE: f64 = 20.0;
    let mlflow = mlflow::shared().await;
    let (_, experiment) = mlflow.unique_experiment("faults-burst").await;
    let provider = chat_provider().await;
    let spool = tempfile::tempdir().unwrap();
    let tap = Tap::start(
        &provider.url(),
        &[
            ("MLFLOW_TRACKING_URI", mlflow.uri()),
            ("MLFLOW_EXPERIMENT_ID", &experiment),
            ("LLMTAP_SPOOL_DIR", spool.path().to_str().unwrap()),
            ("LLMTAP_MAX_TRACES_PER_SECOND", "20"),
        ],
    )
    .await;
    let admin = tap.running.admin_addr;

    let start = Instant::now();
    let load = burst(&tap.url(""), CALLS, 16).await;
    assert_all_served(&load, "burst");
    let calls_took = start.elapsed();
    let ids = ids(&load.done);

    // What the sink received when: every step of the exported counter is
    // (at least) one accepted request.
    let mut peak = 0.0f64;
    let mut steps: Vec<(f64, f64)> = Vec::new();
    let mut last = 0.0;
    let (m, _) = wait_metrics(admin, Duration::from_secs(120), "burst exported", |m| {
        peak = peak.max(m.get("llmtap_spool_records"));
        let exported = m.get("llmtap_traces_exported_total");
        if exported > last {
            steps.push((start.elapsed().as_secs_f64(), exported - last));
            last = exported;
        }
        exported >= CALLS as f64
    })
    .await;
    let drained = start.elapsed();
    let max_per_second = steps
        .iter()
        .map(|(t, _)| {
            steps
                .iter()
                .filter(|(u, _)| *u >= *t && *u < *t + 1.0)
                .map(|(_, n)| n)
                .sum::<f64>()
        })
        .fold(0.0, f64::max);
    let (_, counts) = wait_traces(mlflow, &experiment, &ids, Duration::from_secs(30), admin).await;
    let in_mlflow = start.elapsed();
    let ideal = (CALLS as f64 - RATE) / RATE;
    say(&format!(
        "burst: {CALLS} calls in {:.2}s, all 200; exported at the {RATE}/s limit in {:.2}s from \
         the first call (ideal {ideal:.1}s); spool backlog peak {peak} records; all in MLflow \
         {:.2}s after the first call; the sink took (s, traces): {}; at most {max_per_second} \
         traces accepted within one second",
        calls_took.as_secs_f64(),
        drained.as_secs_f64(),
        in_mlflow.as_secs_f64(),
        steps
            .iter()
            .map(|(t, n)| format!("({t:.1}, {n})"))
            .collect::<Vec<_>>()
            .join(" "),
    ));
    assert_exactly_once("burst above the rate limit", &ids, &counts, true);
    assert_no_drops(&m, "burst above the rate limit");
    assert!(
        drained.as_secs_f64() >= ideal / 2.0,
        "the backlog drained in {drained:?}, faster than half the ideal {ideal:.1}s at \
         {RATE}/s: the rate limit did not apply"
    );
    assert!(
        peak > 0.0,
        "the backlog was never in the spool (peak 0 records)"
    );
    // A token bucket with a second's burst lets at most ~2x the rate through
    // in any one second; 3x leaves room for MLflow's latency bunching up
    // acceptances. The backlog must not arrive as one big request.
    assert!(
        max_per_second <= 3.0 * RATE,
        "the sink accepted {max_per_second} traces within one second at a {RATE}/s limit: \
         the backlog did not drain at the limit ({steps:?})"
    );
    tap.running.shutdown().await;
}

// =========================================================================================
// d. A damaged spool segment.
// =========================================================================================

/// A record in a segment file: its byte offset and framed length.
#[derive(Debug, Clone, Copy)]
struct SpoolRecord {
    offset: usize,
    len: usize,
}

/// The records of a segment file (layout in src/pipeline/spool/record.rs:
/// a 16-byte header, then `len u32 LE | crc32 u32 LE | body[len]`).
fn segment_records(bytes: &[u8]) -> Vec<SpoolRecord> {
    assert!(
        bytes.len() >= 16 && &bytes[..8] == b"LLMTAPSG",
        "not a segment file"
    );
    let mut out = Vec::new();
    let mut at = 16;
    while at + 8 <= bytes.len() {
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        if at + 8 + len > bytes.len() {
            break;
        }
        out.push(SpoolRecord {
            offset: at,
            len: 8 + len,
        });
        at += 8 + len;
    }
    out
}

/// Which call ids a record's bytes name (raw 16-byte id or its hex).
fn ids_in(record: &[u8], ids: &[String]) -> Vec<String> {
    ids.iter()
        .filter(|id| {
            let hex = id.trim_start_matches("tr-");
            let raw: Vec<u8> = (0..hex.len() / 2)
                .map(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
                .collect();
            contains(record, &raw) || contains(record, hex.as_bytes())
        })
        .cloned()
        .collect()
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    !needle.is_empty() && hay.windows(needle.len()).any(|w| w == needle)
}

/// Traces are spooled while MLflow is unreachable; llmtap stops; bytes in the
/// middle of the newest segment are flipped; llmtap starts again with MLflow
/// reachable. The proxy serves, the damaged record is counted
/// (`llmtap_spool_corrupt_records_total`), and every trace not in the damaged
/// region arrives exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn corrupt_spool_segment_is_skipped_and_counted() {
    const CALLS: usize = 30;
    let mlflow = mlflow::shared().await;
    let (_, experiment) = mlflow.unique_experiment("faults-corrupt").await;
    let provider = chat_provider().await;
    let spool = tempfile::tempdir().unwrap();
    let spool_dir = spool.path().join("spool");
    let spool_str = spool_dir.to_str().unwrap().to_string();
    let dead = dead_uri();

    let tap = Tap::start(
        &provider.url(),
        &[
            ("MLFLOW_TRACKING_URI", &dead),
            ("MLFLOW_EXPERIMENT_ID", &experiment),
            ("LLMTAP_SPOOL_DIR", &spool_str),
        ],
    )
    .await;
    let load = burst(&tap.url(""), CALLS, 4).await;
    assert_all_served(&load, "calls while MLflow is unreachable");
    let ids = ids(&load.done);
    wait_metrics(
        tap.running.admin_addr,
        Duration::from_secs(20),
        "every trace spooled",
        |m| m.get("llmtap_spool_records_written_total") >= CALLS as f64,
    )
    .await;
    let stopping = Instant::now();
    tokio::time::timeout(Duration::from_secs(20), tap.running.shutdown())
        .await
        .expect("llmtap stops within 20 s with MLflow unreachable");
    say(&format!(
        "graceful stop with MLflow unreachable and every trace spooled took {:.2}s \
         (shutdown_grace {:?})",
        stopping.elapsed().as_secs_f64(),
        tap::config("http://x", &[], Path::new("/tmp/x")).shutdown_grace,
    ));

    // Damage the middle record of the newest segment.
    let mut segments: Vec<PathBuf> = std::fs::read_dir(&spool_dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with("seg-") && name.ends_with(".spool")
        })
        .collect();
    segments.sort();
    let newest = segments
        .last()
        .expect("a segment file in the spool")
        .clone();
    let mut bytes = std::fs::read(&newest).unwrap();
    let records = segment_records(&bytes);
    let all_records: usize = segments
        .iter()
        .map(|s| segment_records(&std::fs::read(s).unwrap()).len())
        .sum();
    assert!(
        records.len() >= 3,
        "{} records in {newest:?}",
        records.len()
    );
    let victim = records[records.len() / 2];
    let damaged_ids = ids_in(&bytes[victim.offset..victim.offset + victim.len], &ids);
    let middle = victim.offset + 8 + (victim.len - 8) / 2;
    for b in &mut bytes[middle - 4..middle + 4] {
        *b ^= 0xA5;
    }
    std::fs::write(&newest, &bytes).unwrap();
    say(&format!(
        "corrupt: {CALLS} traces in {} records over {} segment(s); flipped 8 bytes at offset \
         {middle} of {} ({} bytes), inside record #{} ({} bytes) which holds {:?}",
        all_records,
        segments.len(),
        newest.file_name().unwrap().to_string_lossy(),
        bytes.len(),
        records.len() / 2,
        victim.len,
        damaged_ids
    ));

    let tap = Tap::start(
        &provider.url(),
        &[
            ("MLFLOW_TRACKING_URI", mlflow.uri()),
            ("MLFLOW_EXPERIMENT_ID", &experiment),
            ("LLMTAP_SPOOL_DIR", &spool_str),
        ],
    )
    .await;
    let after = burst(&tap.url(""), 5, 5).await;
    assert_all_served(&after, "calls after the restart on a damaged spool");
    let mut expected: Vec<String> = ids
        .iter()
        .filter(|id| !damaged_ids.contains(id))
        .cloned()
        .collect();
    expected.extend(self::ids(&after.done));
    let (delivered, counts) = wait_traces(
        mlflow,
        &experiment,
        &expected,
        Duration::from_secs(60),
        tap.running.admin_addr,
    )
    .await;
    let m = scrape(tap.running.admin_addr).await;
    let lost: Vec<&String> = ids.iter().filter(|id| !counts.contains_key(*id)).collect();
    say(&format!(
        "corrupt: after the restart: llmtap_spool_corrupt_records_total {}, {} traces in \
         MLflow ({} expected) after {:?}; lost: {:?}",
        m.get("llmtap_spool_corrupt_records_total"),
        counts.len(),
        expected.len(),
        delivered,
        lost
    ));
    assert!(
        m.get("llmtap_spool_corrupt_records_total") > 0.0,
        "the damaged record was not counted"
    );
    assert!(
        !damaged_ids.is_empty(),
        "could not tell which trace the damaged record held (payload format?)"
    );
    assert_exactly_once(
        "traces outside the damaged region",
        &expected,
        &counts,
        true,
    );
    tap.running.shutdown().await;
}

// =========================================================================================
// e. A full spool.
// =========================================================================================

/// With MLflow unreachable and a 64 KiB spool, the spool fills: calls keep
/// getting 200, new traces are dropped and counted
/// (`llmtap_spool_records_dropped_total`), `/readyz` says 503. Started again
/// with MLflow reachable, exactly the spooled traces arrive, once each.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_full_drops_new_traces_and_keeps_serving() {
    const CALLS: usize = 60;
    let mlflow = mlflow::shared().await;
    let (_, experiment) = mlflow.unique_experiment("faults-full").await;
    let provider = chat_provider().await;
    let spool = tempfile::tempdir().unwrap();
    let spool_str = spool.path().join("spool").to_str().unwrap().to_string();
    let dead = dead_uri();
    let tap = Tap::start(
        &provider.url(),
        &[
            ("MLFLOW_TRACKING_URI", &dead),
            ("MLFLOW_EXPERIMENT_ID", &experiment),
            ("LLMTAP_SPOOL_DIR", &spool_str),
            ("LLMTAP_SPOOL_MAX_BYTES", "64KiB"),
        ],
    )
    .await;
    let admin = tap.running.admin_addr;
    let load = burst(&tap.url(""), CALLS, 4).await;
    assert_all_served(&load, "calls with a full spool");
    let ids = ids(&load.done);
    wait_metrics(
        admin,
        Duration::from_secs(20),
        "every trace spooled or dropped",
        |m| {
            m.get("llmtap_spool_records_written_total")
                + m.get("llmtap_spool_records_dropped_total")
                >= CALLS as f64
        },
    )
    .await;
    // The writer counts its drops right after the spool does.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m = scrape(admin).await;
    let written = m.get("llmtap_spool_records_written_total");
    let dropped = m.get("llmtap_spool_records_dropped_total");
    let ready = tap::get(&tap.admin_url("/readyz")).await;
    say(&format!(
        "full spool: {CALLS} calls all 200; {written} traces spooled ({:.1} KiB on disk), \
         {dropped} dropped; llmtap_traces_dropped_total: {}; /readyz {}: {}",
        m.get("llmtap_spool_bytes") / 1024.0,
        m.series("llmtap_traces_dropped_total"),
        ready.status,
        String::from_utf8_lossy(&ready.body).trim()
    ));
    assert!(dropped > 0.0, "a 64 KiB spool took {CALLS} traces?");
    assert!(written > 0.0);
    assert_eq!(written + dropped, CALLS as f64);
    assert_eq!(
        m.get("llmtap_traces_dropped_total"),
        dropped,
        "llmtap_traces_dropped_total and llmtap_spool_records_dropped_total disagree"
    );
    assert!(m.get("llmtap_spool_bytes") <= 64.0 * 1024.0);
    assert_eq!(ready.status, 503, "/readyz with a full spool");
    assert!(
        String::from_utf8_lossy(&ready.body).contains("spool"),
        "/readyz does not name the full spool: {}",
        String::from_utf8_lossy(&ready.body)
    );
    let stopping = Instant::now();
    tokio::time::timeout(Duration::from_secs(20), tap.running.shutdown())
        .await
        .expect("llmtap stops within 20 s with MLflow unreachable");
    say(&format!(
        "graceful stop with MLflow unreachable and every trace spooled took {:.2}s \
         (shutdown_grace {:?})",
        stopping.elapsed().as_secs_f64(),
        tap::config("http://x", &[], Path::new("/tmp/x")).shutdown_grace,
    ));

    // Back with MLflow reachable: exactly what was spooled arrives.
    let tap = Tap::start(
        &provider.url(),
        &[
            ("MLFLOW_TRACKING_URI", mlflow.uri()),
            ("MLFLOW_EXPERIMENT_ID", &experiment),
            ("LLMTAP_SPOOL_DIR", &spool_str),
            ("LLMTAP_SPOOL_MAX_BYTES", "64KiB"),
        ],
    )
    .await;
    let (m2, _) = wait_metrics(
        tap.running.admin_addr,
        Duration::from_secs(60),
        "the spool drained",
        |m| {
            m.get("llmtap_spool_records") == 0.0
                && m.get("llmtap_journal_records") == 0.0
                && m.get("llmtap_traces_exported_total") >= written
        },
    )
    .await;
    let counts = trace_counts(mlflow, &experiment).await;
    let traced: Vec<String> = ids
        .iter()
        .filter(|id| counts.contains_key(*id))
        .cloned()
        .collect();
    say(&format!(
        "full spool: after the restart {} traces exported, {} in MLflow",
        m2.get("llmtap_traces_exported_total"),
        counts.len()
    ));
    assert_eq!(
        traced.len() as f64,
        written,
        "exactly the spooled traces arrive"
    );
    assert_exactly_once("spooled traces", &traced, &counts, true);
    tap.running.shutdown().await;
}

// =========================================================================================
// f. Upstream and client faults, through the binary.
// =========================================================================================

/// A 1 GiB streamed response through the llmtap binary: the client gets
/// every byte, llmtap's RSS stays flat (< 200 MiB above its idle size), the
/// proxy serves after, and the call has exactly one trace with the real size.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn huge_streamed_response_keeps_memory_flat() {
    let total = env_u64("LLMTAP_FAULT_BIG_BYTES", 1 << 30);
    let mlflow = mlflow::shared().await;
    let (_, experiment) = mlflow.unique_experiment("faults-huge").await;
    let upstream = BigUpstream::start(total).await;
    let work = tempfile::tempdir().unwrap();
    let spool = work.path().join("spool");
    let bin = LAUNCH
        .start(
            &upstream.url(),
            work.path(),
            &[
                ("MLFLOW_TRACKING_URI", mlflow.uri()),
                ("MLFLOW_EXPERIMENT_ID", &experiment),
                ("LLMTAP_SPOOL_DIR", spool.to_str().unwrap()),
            ],
        )
        .await;
    let idle_rss = bin.rss();
    let (stop, sampler) = rss_sampler(bin.pid());

    let start = Instant::now();
    let resp = tap::client()
        .request(
            Request::post(format!("{}{CHAT}", bin.base()))
                .header("content-type", "application/json")
                .header("authorization", format!("Bearer {SECRET}"))
                .body(Full::new(Bytes::from(stream_request())))
                .unwrap(),
        )
        .await
        .expect("the big call");
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-llmtap-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    let mut body = resp.into_body();
    let mut got = 0u64;
    let mut last = Vec::new();
    while let Some(frame) = body.frame().await {
        let frame = frame.expect("the big body");
        if let Some(data) = frame.data_ref() {
            got += data.len() as u64;
            last.extend_from_slice(data);
            if last.len() > 4096 {
                last.drain(..last.len() - 64);
            }
        }
    }
    let took = start.elapsed();
    stop.store(true, Relaxed);
    let peak_rss = sampler.join().unwrap();
    assert_eq!(got, upstream.body_len, "the client got every byte");
    assert!(last.ends_with(b"data: [DONE]\n\n"));

    // The big call's trace says how big it was.
    let (delivered, counts) = wait_traces(
        mlflow,
        &experiment,
        std::slice::from_ref(&id),
        Duration::from_secs(60),
        bin.admin,
    )
    .await;
    let full = mlflow
        .get_trace_with_spans(&id)
        .await
        .expect("the big trace");
    let bytes_attr = span_attr(&full, "llmtap.response.bytes");
    let truncated = span_attr(&full, "llmtap.response.truncated");
    say(&format!(
        "huge response: {:.0} MiB in {:.1}s ({:.0} MiB/s) through the binary; llmtap RSS idle \
         {:.1} MiB, peak {:.1} MiB (+{:.1} MiB); trace in MLflow after {:?}: \
         llmtap.response.bytes {:?}, truncated {:?}",
        got as f64 / MIB,
        took.as_secs_f64(),
        got as f64 / MIB / took.as_secs_f64(),
        idle_rss as f64 / MIB,
        peak_rss as f64 / MIB,
        (peak_rss.saturating_sub(idle_rss)) as f64 / MIB,
        delivered,
        bytes_attr,
        truncated,
    ));
    assert!(
        peak_rss.saturating_sub(idle_rss) < 200 << 20,
        "llmtap's RSS grew by {:.0} MiB streaming {:.0} MiB",
        peak_rss.saturating_sub(idle_rss) as f64 / MIB,
        got as f64 / MIB
    );
    assert_exactly_once(
        "the huge response",
        std::slice::from_ref(&id),
        &counts,
        true,
    );
    let size = bytes_attr
        .as_ref()
        .and_then(|v| v.as_i64().or_else(|| v.as_str()?.parse().ok()));
    assert_eq!(
        size,
        Some(got as i64),
        "llmtap.response.bytes of the big call"
    );
    assert_serves_after(&bin, mlflow, &experiment, "after the huge response").await;
}

/// After a fault, a short streamed call through `bin` (whose upstream is a
/// [`BigUpstream`]) is answered whole and traced exactly once, and no parser
/// panicked.
async fn assert_serves_after(bin: &Bin, mlflow: &mlflow::Mlflow, experiment: &str, what: &str) {
    let got = tap::post(
        &format!("{}{CHAT}", bin.base()),
        short_stream_request().as_bytes(),
        &[],
    )
    .await;
    assert_eq!(got.status, 200, "{what}: a short call");
    assert!(
        got.body.ends_with(b"data: [DONE]\n\n"),
        "{what}: the short call's body is cut"
    );
    let id = got.trace_id();
    let (_, counts) = wait_traces(
        mlflow,
        experiment,
        std::slice::from_ref(&id),
        Duration::from_secs(30),
        bin.admin,
    )
    .await;
    assert_eq!(counts.get(&id), Some(&1), "{what}: the short call's trace");
    let m = scrape(bin.admin).await;
    assert_eq!(
        m.get("llmtap_parse_panics_total"),
        0.0,
        "{what}: parse panics"
    );
}

/// A client reading 1 KiB every 10 ms of a huge stream: llmtap holds it back
/// from the provider (it takes at most a few MiB more than the client read,
/// not the whole body), its RSS stays flat, and when the client gives up the
/// call is traced once as an error and the proxy serves on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_reading_client_is_backpressured() {
    let mlflow = mlflow::shared().await;
    let (_, experiment) = mlflow.unique_experiment("faults-slow").await;
    let upstream = BigUpstream::start(1 << 30).await;
    let work = tempfile::tempdir().unwrap();
    let env = [
        ("MLFLOW_TRACKING_URI", mlflow.uri()),
        ("MLFLOW_EXPERIMENT_ID", experiment.as_str()),
    ];
    let bin = SPOOLED.start(&upstream.url(), work.path(), &env).await;
    let idle_rss = bin.rss();
    let (stop, sampler) = rss_sampler(bin.pid());

    let body = stream_request();
    let mut sock = tokio::net::TcpStream::connect(bin.addr).await.unwrap();
    sock.write_all(raw_head(CHAT, body.len()).as_bytes())
        .await
        .unwrap();
    sock.write_all(body.as_bytes()).await.unwrap();
    let mut read = 0usize;
    let mut head = Vec::new();
    let mut buf = [0u8; 1024];
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        let n = sock.read(&mut buf).await.unwrap();
        assert!(n > 0, "llmtap closed the slow client's connection");
        read += n;
        if head.len() < 8192 {
            head.extend_from_slice(&buf[..n]);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let produced = upstream.produced.load(Relaxed);
    drop(sock); // the client gives up
    stop.store(true, Relaxed);
    let peak_rss = sampler.join().unwrap();
    let head = String::from_utf8_lossy(&head);
    let head = head.split("\r\n\r\n").next().unwrap();
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let id = raw_header(head, "x-llmtap-trace-id").expect("trace id header");

    let (delivered, counts) = wait_traces(
        mlflow,
        &experiment,
        std::slice::from_ref(&id),
        Duration::from_secs(60),
        bin.admin,
    )
    .await;
    let trace = mlflow.get_trace(&id).await;
    say(&format!(
        "slow reader: read {:.0} KiB in 3 s while the provider had handed llmtap {:.1} MiB of a \
         1 GiB body; llmtap RSS idle {:.1} MiB, peak {:.1} MiB; trace after {:?}, state {}",
        read as f64 / 1024.0,
        produced as f64 / MIB,
        idle_rss as f64 / MIB,
        peak_rss as f64 / MIB,
        delivered,
        trace
            .as_ref()
            .map_or(Value::Null, |t| t["trace_info"]["state"].clone()),
    ));
    assert!(
        produced < 64 << 20,
        "llmtap pulled {:.0} MiB from the provider for a client that read {:.0} KiB: no \
         back-pressure",
        produced as f64 / MIB,
        read as f64 / 1024.0
    );
    assert!(
        peak_rss.saturating_sub(idle_rss) < 64 << 20,
        "RSS grew by {:.0} MiB for one slow client",
        peak_rss.saturating_sub(idle_rss) as f64 / MIB
    );
    assert_exactly_once(
        "the slow reader's call",
        std::slice::from_ref(&id),
        &counts,
        true,
    );
    assert_eq!(
        trace.unwrap()["trace_info"]["state"],
        "ERROR",
        "a client that hung up mid-stream is an error trace"
    );
    assert_serves_after(&bin, mlflow, &experiment, "after the slow reader").await;
}

/// Clients that hang up halfway through uploading a request body (fixed
/// length and chunked): the proxy keeps serving, nothing leaks (open file
/// descriptors back to where they were), the calls after are traced exactly
/// once, and each aborted upload has exactly one trace, an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_disconnecting_mid_upload_leave_the_proxy_serving() {
    const ABORTS: usize = 20;
    let mlflow = mlflow::shared().await;
    let (_, experiment) = mlflow.unique_experiment("faults-upload").await;
    let provider = chat_provider().await;
    let work = tempfile::tempdir().unwrap();
    let env = [
        ("MLFLOW_TRACKING_URI", mlflow.uri()),
        ("MLFLOW_EXPERIMENT_ID", experiment.as_str()),
    ];
    let bin = SPOOLED.start(&provider.url(), work.path(), &env).await;
    let warm = burst(&bin.base(), 5, 5).await;
    assert_all_served(&warm, "warm-up");
    tokio::time::sleep(Duration::from_millis(300)).await;
    let fds_before = bin.fds();

    let prefix = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":""#;
    let filler = vec![b'a'; 64 * 1024];
    for i in 0..ABORTS {
        let mut sock = tokio::net::TcpStream::connect(bin.addr).await.unwrap();
        if i % 2 == 0 {
            // Announces 8 MiB, sends 1 MiB.
            sock.write_all(raw_head(CHAT, 8 << 20).as_bytes())
                .await
                .unwrap();
            sock.write_all(prefix.as_bytes()).await.unwrap();
            for _ in 0..16 {
                sock.write_all(&filler).await.unwrap();
            }
        } else {
            // Chunked, cut after a few chunks.
            let head = format!(
                "POST {CHAT} HTTP/1.1\r\nhost: llmtap\r\ncontent-type: application/json\r\n\
                 authorization: Bearer {SECRET}\r\ntransfer-encoding: chunked\r\n\r\n"
            );
            sock.write_all(head.as_bytes()).await.unwrap();
            let chunk = format!("{:x}\r\n{prefix}\r\n", prefix.len());
            sock.write_all(chunk.as_bytes()).await.unwrap();
            for _ in 0..8 {
                sock.write_all(format!("{:x}\r\n", filler.len()).as_bytes())
                    .await
                    .unwrap();
                sock.write_all(&filler).await.unwrap();
                sock.write_all(b"\r\n").await.unwrap();
            }
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(sock);
    }

    let after = burst(&bin.base(), 10, 5).await;
    assert_all_served(&after, "calls after the aborted uploads");
    let ids = ids(&after.done);
    let (_, counts) = wait_traces(
        mlflow,
        &experiment,
        &ids,
        Duration::from_secs(60),
        bin.admin,
    )
    .await;
    // fds settle once the aborted connections are reaped.
    let mut fds_after = bin.fds();
    let settle = Instant::now();
    while fds_after > fds_before + 5 && settle.elapsed() < Duration::from_secs(10) {
        tokio::time::sleep(Duration::from_millis(100)).await;
        fds_after = bin.fds();
    }
    let m = scrape(bin.admin).await;
    let warm_ids = self::ids(&warm.done);
    let mut aborted = Vec::new();
    for id in counts.keys() {
        if !ids.contains(id) && !warm_ids.contains(id) {
            let t = mlflow.get_trace(id).await.unwrap();
            aborted.push(t["trace_info"]["state"].as_str().unwrap_or("?").to_string());
        }
    }
    say(&format!(
        "mid-upload disconnects: {ABORTS} aborted uploads; upstream saw {} requests; {} traces \
         of aborted uploads in MLflow (states {:?}); fds {fds_before} -> {fds_after}; \
         requests: {}; warnings: {:?}",
        provider.seen().len(),
        aborted.len(),
        aborted,
        m.series("llmtap_requests_total"),
        bin.complaints().iter().take(5).collect::<Vec<_>>(),
    ));
    assert_exactly_once("calls after the aborted uploads", &ids, &counts, false);
    assert_eq!(
        aborted.len(),
        ABORTS,
        "one trace per aborted upload (each got a trace id)"
    );
    assert!(
        aborted.iter().all(|s| s == "ERROR"),
        "an aborted upload traced as {aborted:?}"
    );
    assert!(
        fds_after <= fds_before + 5,
        "file descriptors {fds_before} -> {fds_after}: aborted connections leak"
    );
    assert_serves_after(&bin, mlflow, &experiment, "after the aborted uploads").await;
}

// =========================================================================================
// Soak: steady mixed load through the binary, memory and backlog watched.
// =========================================================================================

/// `LLMTAP_SOAK_SECS` (10 s in CI; an hour for the long run) of steady load
/// at `LLMTAP_FAULT_QPS` through the binary with the spool on: every call
/// traced exactly once, RSS and open fds flat after warm-up, the spool
/// backlog drained at the end.
///
/// `LLMTAP_SOAK_MLFLOW=down` runs the same load with the tracking server
/// unreachable throughout, so the whole load piles up in the spool (memory
/// must stay flat whatever the backlog); then llmtap is restarted on that
/// spool with MLflow reachable, and every trace must arrive exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soak_steady_load() {
    let secs = env_f64("LLMTAP_SOAK_SECS", 10.0);
    let qps = env_f64("LLMTAP_FAULT_QPS", 20.0);
    let sink_down = match std::env::var("LLMTAP_SOAK_MLFLOW").as_deref() {
        Ok("down") => true,
        Ok("up") | Ok("") | Err(_) => false,
        Ok(other) => panic!("LLMTAP_SOAK_MLFLOW={other:?}: expected up or down"),
    };
    let mlflow = mlflow::shared().await;
    let (_, experiment) = mlflow.unique_experiment("faults-soak").await;
    let provider = chat_provider().await;
    let work = tempfile::tempdir().unwrap();
    let spool = work.path().join("spool");
    let dead = dead_uri();
    let env = |uri: &str| -> Vec<(String, String)> {
        vec![
            ("MLFLOW_TRACKING_URI".into(), uri.into()),
            ("MLFLOW_EXPERIMENT_ID".into(), experiment.clone()),
            ("LLMTAP_SPOOL_DIR".into(), spool.to_str().unwrap().into()),
        ]
    };
    let start_bin = |dir: &'static str, uri: String| {
        let env = env(&uri);
        let (url, path) = (provider.url(), work.path().join(dir));
        async move {
            let env: Vec<(&str, &str)> =
                env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
            LAUNCH.start(&url, &path, &env).await
        }
    };
    let mut bin = start_bin(
        "a",
        if sink_down {
            dead.clone()
        } else {
            mlflow.uri().into()
        },
    )
    .await;
    let count = (qps * secs).ceil() as usize;
    let load = tokio::spawn(run_load(
        bin.base(),
        qps,
        count,
        Duration::from_secs_f64(secs),
        Arc::new(AtomicBool::new(false)),
    ));
    // Samples: (seconds, rss, fds, spool records, oldest unsent).
    let mut samples: Vec<(f64, u64, usize, f64, f64)> = Vec::new();
    let start = Instant::now();
    let every = Duration::from_secs_f64((secs / 20.0).clamp(0.5, 30.0));
    while !load.is_finished() {
        let m = scrape(bin.admin).await;
        samples.push((
            start.elapsed().as_secs_f64(),
            bin.rss(),
            bin.fds(),
            m.get("llmtap_spool_records"),
            m.get("llmtap_spool_oldest_unsent_seconds"),
        ));
        tokio::time::sleep(every).await;
    }
    let load = load.await.unwrap();
    assert_all_served(&load, "soak");
    let ids = ids(&load.done);
    if sink_down {
        // Everything is in the spool; bring it to a reachable MLflow.
        wait_metrics(
            bin.admin,
            Duration::from_secs(60),
            "every soak trace spooled",
            |m| m.get("llmtap_spool_records_written_total") >= ids.len() as f64,
        )
        .await;
        samples.push((
            start.elapsed().as_secs_f64(),
            bin.rss(),
            bin.fds(),
            scrape(bin.admin).await.get("llmtap_spool_records"),
            0.0,
        ));
        bin.stop().await;
        bin = start_bin("b", mlflow.uri().into()).await;
    }
    let drain_bound = Duration::from_secs_f64(60.0 + ids.len() as f64 / 50.0);
    let (m, drained) = wait_metrics(bin.admin, drain_bound, "soak backlog drained", |m| {
        m.get("llmtap_spool_records") == 0.0
    })
    .await;
    let (delivered, counts) = wait_traces(mlflow, &experiment, &ids, drain_bound, bin.admin).await;
    let warm = samples.len() / 4;
    let rss_warm = samples.get(warm).map_or(0, |s| s.1);
    let rss_max = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let fds_warm = samples.get(warm).map_or(0, |s| s.2);
    let fds_max = samples.iter().map(|s| s.2).max().unwrap_or(0);
    let backlog_max = samples.iter().map(|s| s.3).fold(0.0, f64::max);
    let age_max = samples.iter().map(|s| s.4).fold(0.0, f64::max);
    say(&format!(
        "soak{}: {} calls at {qps} QPS over {:.0}s; RSS after warm-up {:.1} MiB, max {:.1} MiB; \
         fds {fds_warm} -> max {fds_max}; spool backlog max {backlog_max} records, oldest \
         unsent max {age_max:.2}s; drained {:.2}s after the load{}; all in MLflow after {:?}",
        if sink_down { " with MLflow down" } else { "" },
        ids.len(),
        load.elapsed.as_secs_f64(),
        rss_warm as f64 / MIB,
        rss_max as f64 / MIB,
        drained.as_secs_f64(),
        if sink_down {
            " (by a restarted llmtap)"
        } else {
            ""
        },
        delivered,
    ));
    assert_exactly_once("soak", &ids, &counts, true);
    assert_no_drops(&m, "soak");
    assert!(
        rss_max.saturating_sub(rss_warm) < 64 << 20,
        "RSS grew from {:.1} to {:.1} MiB during the soak",
        rss_warm as f64 / MIB,
        rss_max as f64 / MIB
    );
    assert!(
        fds_max <= fds_warm + 64,
        "open fds grew from {fds_warm} to {fds_max}"
    );
}

// =========================================================================================
// g. A real disk full (ENOSPC) on the spool's filesystem.
// =========================================================================================

/// A tmpfs of `size` mounted on a fresh temp dir for one test; lazily
/// unmounted (`umount -l`) when dropped, panic or not, then the dir removed.
struct Tmpfs {
    dir: tempfile::TempDir,
}

impl Tmpfs {
    fn mount(size: &str) -> Tmpfs {
        let dir = tempfile::tempdir().unwrap();
        let out = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size}"),
                "llmtap-enospc",
            ])
            .arg(dir.path())
            .output();
        let why = match out {
            Ok(o) if o.status.success() => return Tmpfs { dir },
            Ok(o) => format!(
                "{}: {}",
                o.status,
                String::from_utf8_lossy(&o.stderr).trim()
            ),
            Err(e) => e.to_string(),
        };
        panic!(
            "`mount -t tmpfs -o size={size} llmtap-enospc {}` failed ({why}): this test needs \
             root (CAP_SYS_ADMIN) to mount a small tmpfs and fill it for real",
            dir.path().display()
        );
    }

    fn path(&self) -> &Path {
        self.dir.path()
    }

    /// (bytes used, bytes in all) on the filesystem, as `df` says.
    fn usage(&self) -> (u64, u64) {
        let out = Command::new("df")
            .args(["-B1", "--output=used,size"])
            .arg(self.path())
            .output()
            .expect("running df");
        let text = String::from_utf8_lossy(&out.stdout);
        let nums: Vec<u64> = text
            .lines()
            .nth(1)
            .unwrap_or("")
            .split_whitespace()
            .filter_map(|n| n.parse().ok())
            .collect();
        match nums[..] {
            [used, size] => (used, size),
            _ => panic!("df {}: unexpected output {text:?}", self.path().display()),
        }
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(self.path()).status();
    }
}

/// A chat answer of about `content_len` bytes of text: the plain JSON body
/// and the SSE body (content in 2 KiB chunks, then a usage chunk), so that a
/// few dozen traces take a MiB of spool.
fn big_chat_bodies(content_len: usize) -> (Bytes, Bytes) {
    let mut content = String::new();
    for k in 0.. {
        if content.len() >= content_len {
            break;
        }
        content.push_str(&format!("word{k} "));
    }
    let usage = json!({"prompt_tokens": 19, "completion_tokens": 4000, "total_tokens": 4019});
    let plain = json!({
        "id": "chatcmpl-enospc", "object": "chat.completion", "created": 1721596428,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content},
                     "finish_reason": "stop"}],
        "usage": usage,
    });
    let chunk = |choices: Value, usage: Value| {
        let c = json!({"id": "chatcmpl-enospc", "object": "chat.completion.chunk",
                       "created": 1721596428, "model": "gpt-4o-mini",
                       "choices": choices, "usage": usage});
        format!("data: {c}\n\n")
    };
    let mut sse = chunk(
        json!([{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}]),
        Value::Null,
    );
    for piece in content.as_bytes().chunks(2048) {
        let piece = std::str::from_utf8(piece).unwrap(); // ASCII
        sse.push_str(&chunk(
            json!([{"index": 0, "delta": {"content": piece}, "finish_reason": null}]),
            Value::Null,
        ));
    }
    sse.push_str(&chunk(
        json!([{"index": 0, "delta": {}, "finish_reason": "stop"}]),
        Value::Null,
    ));
    sse.push_str(&chunk(json!([]), usage));
    sse.push_str("data: [DONE]\n\n");
    (Bytes::from(plain.to_string()), Bytes::from(sse))
}

/// Calls `calls` (requests as [`chat_request`]), at most `concurrency` at a
/// time, each checked to be 200 with exactly `plain` or `sse` as its body.
async fn big_burst(
    base: &str,
    calls: std::ops::Range<usize>,
    concurrency: usize,
    plain: &Bytes,
    sse: &Bytes,
) -> Load {
    let client = tap::client();
    let start = Instant::now();
    let sem = Arc::new(tokio::sync::Semaphore::new(concurrency));
    let mut tasks = JoinSet::new();
    let started = calls.len();
    for i in calls {
        let permit = sem.clone().acquire_owned().await.unwrap();
        let (stream, body) = chat_request(i);
        let want = if stream { sse.clone() } else { plain.clone() };
        let req = Request::post(format!("{base}{CHAT}"))
            .header("content-type", "application/json")
            .header("authorization", format!("Bearer {SECRET}"))
            .body(Full::new(body))
            .unwrap();
        let client = client.clone();
        tasks.spawn(async move {
            let call = async {
                let resp = client
                    .request(req)
                    .await
                    .map_err(|e| format!("call {i}: {e:?}"))?;
                let status = resp.status();
                let id = resp.headers().get("x-llmtap-trace-id").cloned();
                let got = resp.into_body().collect().await;
                let got = got
                    .map_err(|e| format!("call {i}: body: {e:?}"))?
                    .to_bytes();
                if status != 200 || got != want {
                    return Err(format!(
                        "call {i}: HTTP {status}, {} bytes (want 200 and the provider's {} \
                         bytes)",
                        got.len(),
                        want.len()
                    ));
                }
                let id = id.and_then(|v| v.to_str().ok().map(str::to_string));
                let id = id.ok_or_else(|| format!("call {i}: no x-llmtap-trace-id"))?;
                Ok(Done {
                    id,
                    at: Instant::now(),
                })
            };
            let r = tokio::time::timeout(Duration::from_secs(30), call)
                .await
                .unwrap_or_else(|_| Err(format!("call {i}: no complete answer within 30 s")));
            drop(permit);
            r
        });
    }
    gather(started, tasks, start).await
}

/// The spool lives on a real 3 MiB tmpfs with `spool.max_bytes` at 1 GiB, so
/// the kernel (ENOSPC), not llmtap's cap, refuses writes. With MLflow down,
/// calls with ~32 KiB answers fill it within ~90 calls: every call still gets
/// 200 with the provider's bytes, and every lost trace is counted
/// (`llmtap_traces_dropped_total{reason="spool_full"}`, and per store
/// `llmtap_spool_records_dropped_total` / `llmtap_journal_records_dropped_total`,
/// which count the cap's refusals and failed writes alike; the exchange journal
/// shares the filesystem and may be the one that fails). With MLflow back the spool drains and
/// frees the space, and a second load is traced exactly once per call: the
/// spool recovers in the same process. Phase 1 is accounted exactly: traces
/// in MLflow + counted drops = calls. Needs root (CAP_SYS_ADMIN) for `mount`;
/// without it the test fails, saying so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_disk_full_on_the_spool_filesystem() {
    const PHASE1: usize = 200;
    const PHASE2: usize = 15;
    let fs = Tmpfs::mount("3m");
    let (_, fs_size) = fs.usage();
    assert!(
        fs_size <= 4 << 20,
        "the tmpfs is {fs_size} bytes, not 3 MiB"
    );
    let mlflow = mlflow::Private::start().await;
    let (_, experiment) = mlflow.unique_experiment("faults-enospc").await;
    mlflow.kill().await;
    let (plain, sse) = big_chat_bodies(32 << 10);
    let provider = chat_provider_with(plain.clone(), sse.clone()).await;
    let work = tempfile::tempdir().unwrap();
    let spool = fs.path().join("spool");
    let mut bin = LAUNCH
        .start(
            &provider.url(),
            work.path(),
            &[
                ("MLFLOW_TRACKING_URI", mlflow.uri()),
                ("MLFLOW_EXPERIMENT_ID", &experiment),
                ("LLMTAP_SPOOL_DIR", spool.to_str().unwrap()),
                ("LLMTAP_SPOOL_MAX_BYTES", "1GiB"),
            ],
        )
        .await;

    // Phase 1: MLflow down, the filesystem fills.
    let load1 = big_burst(&bin.base(), 0..PHASE1, 8, &plain, &sse).await;
    assert_all_served(&load1, "calls while the spool's filesystem fills");
    let ids1 = ids(&load1.done);
    let settled = |m: &Scrape| {
        m.get("llmtap_spool_records_written_total") + m.get("llmtap_traces_dropped_total")
            >= PHASE1 as f64
    };
    wait_metrics(
        bin.admin,
        Duration::from_secs(30),
        "every phase-1 trace spooled or dropped",
        settled,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let m1 = scrape(bin.admin).await;
    let (written, dropped) = (
        m1.get("llmtap_spool_records_written_total"),
        m1.get("llmtap_traces_dropped_total"),
    );
    let (used_full, _) = fs.usage();
    say(&format!(
        "ENOSPC: {PHASE1} calls ({} KiB answers) in {:.2}s, all 200; tmpfs {used_full} of \
         {fs_size} bytes used; {written} traces spooled ({:.0} KiB), dropped: {}; \
         llmtap_spool_records_dropped_total {}, llmtap_spool_write_errors_total {}, \
         llmtap_journal_records_dropped_total {}, llmtap_journal_write_errors_total {}",
        plain.len() / 1024,
        load1.elapsed.as_secs_f64(),
        m1.get("llmtap_spool_bytes") / 1024.0,
        m1.series("llmtap_traces_dropped_total"),
        m1.get("llmtap_spool_records_dropped_total"),
        m1.get("llmtap_spool_write_errors_total"),
        m1.get("llmtap_journal_records_dropped_total"),
        m1.get("llmtap_journal_write_errors_total"),
    ));
    assert!(
        dropped > 0.0,
        "a 3 MiB filesystem took {written} traces of ~{} KiB and nothing was dropped?",
        plain.len() / 1024
    );
    assert!(written > 0.0, "nothing was spooled at all");
    assert_eq!(
        written + dropped,
        PHASE1 as f64,
        "phase 1: spooled + dropped is not the number of calls"
    );
    let write_errors =
        m1.get("llmtap_spool_write_errors_total") + m1.get("llmtap_journal_write_errors_total");
    assert!(
        write_errors > 0.0,
        "the kernel refused writes but neither the spool nor the journal counted a write error"
    );
    assert_eq!(
        m1.get("llmtap_spool_records_dropped_total")
            + m1.get("llmtap_journal_records_dropped_total"),
        dropped,
        "the stores' own drop counters disagree with llmtap_traces_dropped_total"
    );
    assert!(
        m1.get("llmtap_spool_bytes") < fs_size as f64,
        "llmtap thinks its spool holds more than the filesystem"
    );
    assert!(bin.alive(), "llmtap died:\n{}", bin.log_tail(40));

    // MLflow back: the backlog drains and the space is freed.
    let restart = mlflow.start_again().await;
    let back = Instant::now();
    let (m2, _) = wait_metrics(
        bin.admin,
        Duration::from_secs(90),
        "the spool drained after MLflow came back",
        |m| {
            m.get("llmtap_spool_records") == 0.0
                && m.get("llmtap_journal_records") == 0.0
                && m.get("llmtap_traces_exported_total") >= written
        },
    )
    .await;
    let drained = back.elapsed();
    let (used_drained, _) = fs.usage();
    assert!(
        used_drained < fs_size / 2,
        "the spool drained but its filesystem still has {used_drained} of {fs_size} bytes \
         used (spool files: {:?})",
        std::fs::read_dir(&spool).map(|d| d
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect::<Vec<_>>())
    );

    // Phase 2: the spool takes traces again.
    let load2 = big_burst(&bin.base(), PHASE1..PHASE1 + PHASE2, 4, &plain, &sse).await;
    assert_all_served(&load2, "calls after the spool drained");
    let ids2 = ids(&load2.done);
    let (delivered, counts) = wait_traces(
        &mlflow,
        &experiment,
        &ids2,
        Duration::from_secs(60),
        bin.admin,
    )
    .await;
    let m3 = scrape(bin.admin).await;
    let traced1 = ids1.iter().filter(|id| counts.contains_key(*id)).count();
    say(&format!(
        "ENOSPC: MLflow back after {:.1}s; spool empty {:.2}s later, tmpfs {used_drained} \
         bytes used; {traced1} phase-1 traces in MLflow + {dropped} dropped = {} (of \
         {PHASE1} calls); {PHASE2} calls after: all in MLflow {:?}; dropped since: {}",
        restart.as_secs_f64(),
        drained.as_secs_f64(),
        traced1 as f64 + dropped,
        delivered,
        m3.get("llmtap_traces_dropped_total") - dropped,
    ));
    assert_exactly_once("calls after the spool recovered", &ids2, &counts, false);
    assert_eq!(
        m3.get("llmtap_traces_dropped_total"),
        dropped,
        "traces dropped after the spool drained: {}",
        m3.series("llmtap_traces_dropped_total")
    );
    // Exact: a trace is either appended (then delivered, MLflow upserting a
    // resend) or counted as dropped by the writer, never both, and an append
    // that failed is never handed out (its partial bytes are cut away).
    assert_eq!(
        traced1 as f64 + dropped,
        PHASE1 as f64,
        "phase 1: traces in MLflow + counted drops != calls (exported {})",
        m2.get("llmtap_traces_exported_total")
    );
    let traced: Vec<String> = ids1
        .iter()
        .chain(&ids2)
        .filter(|id| counts.contains_key(*id))
        .cloned()
        .collect();
    assert_exactly_once("every trace in MLflow", &traced, &counts, true);
    say(&format!(
        "ENOSPC: llmtap logged {} WARN/ERROR lines",
        bin.complaints().len()
    ));
    let panics: Vec<String> = bin
        .complaints()
        .into_iter()
        .filter(|l| l.contains("panicked"))
        .collect();
    assert!(panics.is_empty(), "llmtap panicked: {panics:?}");
    bin.stop().await;
}
