//! Memory per call is bounded whatever the bodies hold, proven against the
//! llmtap binary: many maximal calls at once (cap-sized requests and
//! responses held open together, gzip bombs both ways, bodies whose JSON
//! would cost far more than their text) with a small capture cap and
//! in-flight budget. Every call gets its exact bytes and a trace, the calls
//! that found the budget spent say so, and the process's peak RSS (VmHWM)
//! stays under the bound the README documents.

#[path = "support/bin.rs"]
mod bin;
#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/tap.rs"]
mod tap;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::time::{Duration, Instant};

use bin::{Bin, Launch};
use bytes::Bytes;
use fake_provider::{FakeProvider, Reply, Step};
use http::Request;
use http_body_util::{BodyExt, Full};
use tap::{spans_in, Span};

const MIB: usize = 1 << 20;
/// `capture.max_body_bytes` and `capture.max_inflight_bytes` of the run.
const CAP: usize = MIB;
const INFLIGHT: usize = 8 * MIB;
/// Calls held open together, then as many more while the budget is spent.
const WAVE: usize = 16;
const BOMBS: usize = 8;
const DENSE: usize = 6;

/// The llmtap binary: a config file with fast batches only, the spool under
/// its dir, warnings and llmtap's own info lines.
const LAUNCH: Launch = Launch {
    config: Some("[export]\nbatch_interval = \"50ms\"\n"),
    env: &[("RUST_LOG", "warn,llmtap=info")],
    ..Launch::DEFAULT
};

/// llmtap in `dir` against `provider`, with the run's capture cap and
/// in-flight budget and `env` on top.
async fn start_capped(provider: &FakeProvider, dir: &Path, env: &[(&str, &str)]) -> Bin {
    let (cap, inflight) = (CAP.to_string(), INFLIGHT.to_string());
    let mut all = vec![
        ("LLMTAP_MAX_CAPTURE_BYTES", cap.as_str()),
        ("LLMTAP_MAX_INFLIGHT_CAPTURE_BYTES", inflight.as_str()),
    ];
    all.extend_from_slice(env);
    LAUNCH.start(&provider.url(), dir, &all).await
}

/// One sample of a metric from `/metrics` (0 when absent).
async fn metric(bin: &Bin, name: &str) -> f64 {
    let got = tap::get(&format!("http://{}/metrics", bin.admin)).await;
    let text = String::from_utf8_lossy(&got.body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// What a call sends and what the provider answers it.
#[derive(Clone, Copy, PartialEq, Debug)]
enum Kind {
    /// A cap-sized request and response, the response held open.
    Big,
    /// A gzip request and response, each inflating to 64 x the cap.
    Bomb,
    /// A small request answered with `[0,0,...]`: 2 bytes of text, 32+ of
    /// `Value`, per element.
    Dense,
}

fn gzip(b: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    e.write_all(b).and_then(|()| e.finish()).expect("gzip")
}

/// A JSON text of exactly `len` bytes: `head` + `x`s + `"}`-style tail.
fn padded(head: &str, tail: &str, len: usize) -> Vec<u8> {
    let mut out = head.as_bytes().to_vec();
    out.resize(len - tail.len(), b'x');
    out.extend_from_slice(tail.as_bytes());
    out
}

/// Multi-member gzip of a JSON text that inflates to `members` MiB.
fn bomb(members: usize) -> Vec<u8> {
    let mut out = gzip(&padded("{\"model\":\"m\",\"input\":\"", "", MIB));
    let rest = gzip(&vec![b'a'; MIB]);
    for _ in 1..members {
        out.extend_from_slice(&rest);
    }
    out
}

/// The request body of call `n`.
fn request(kind: Kind, n: usize, bomb_body: &[u8]) -> Vec<u8> {
    match kind {
        Kind::Bomb => bomb_body.to_vec(),
        Kind::Dense => format!("{{\"model\":\"gpt-4o-mini\",\"n\":{n}}}").into_bytes(),
        Kind::Big => padded(
            &format!("{{\"model\":\"gpt-4o-mini\",\"n\":{n},\"messages\":[{{\"role\":\"user\",\"content\":\""),
            "\"}]}",
            CAP,
        ),
    }
}

/// The response body of call `n`.
fn response(kind: Kind, n: usize, bomb_body: &[u8]) -> Vec<u8> {
    match kind {
        Kind::Big => padded(
            &format!("{{\"id\":\"c{n}\",\"object\":\"chat.completion\",\"model\":\"gpt-4o-mini\",\"choices\":[{{\"index\":0,\"finish_reason\":\"stop\",\"message\":{{\"role\":\"assistant\",\"content\":\""),
            "\"}}]}",
            CAP,
        ),
        Kind::Bomb => bomb_body.to_vec(),
        Kind::Dense => {
            let mut z = b"[0".to_vec();
            while z.len() + 3 <= CAP {
                z.extend_from_slice(b",0");
            }
            z.push(b']');
            z
        }
    }
}

/// The provider's reply to call `n`: Big ones wait at the gate after their
/// first 64 KiB, so that a whole wave holds its captures at once.
fn reply(kind: Kind, n: usize, bomb_body: &[u8]) -> Reply {
    let body = Bytes::from(response(kind, n, bomb_body));
    let mut r = Reply::json(200, body.clone());
    match kind {
        Kind::Big => {
            r.steps = vec![
                Step::Send(body.slice(..64 << 10)),
                Step::Gate,
                Step::Send(body.slice(64 << 10..)),
            ]
        }
        Kind::Bomb => r = r.header("content-encoding", "gzip"),
        Kind::Dense => {}
    }
    r
}

struct Call {
    kind: Kind,
    wave: usize,
    sent: usize,
    got: usize,
    trace_id: String,
}

async fn call(base: String, kind: Kind, n: usize, wave: usize, bomb_body: Bytes) -> Call {
    let body = request(kind, n, &bomb_body);
    let mut req = Request::post(format!("{base}/v1/chat/completions"))
        .header("content-type", "application/json")
        .header("x-call", n.to_string());
    if kind == Kind::Bomb {
        req = req.header("content-encoding", "gzip");
    }
    let resp = tap::client()
        .request(req.body(Full::new(Bytes::from(body.clone()))).unwrap())
        .await
        .expect("call through llmtap");
    assert_eq!(resp.status(), 200, "call {n}");
    let trace_id = resp.headers()["x-llmtap-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    let got = resp
        .into_body()
        .collect()
        .await
        .expect("response body")
        .to_bytes();
    assert!(
        got == response(kind, n, &bomb_body),
        "call {n} ({kind:?}): response bytes differ"
    );
    Call {
        kind,
        wave,
        sent: body.len(),
        got: got.len(),
        trace_id,
    }
}

/// Checks the span of one call against what the call was; true when its
/// request capture met the in-flight budget mid-body.
fn check_span(c: &Call, span: &Span) -> bool {
    assert_eq!(span.int("http.response.status_code"), Some(200));
    assert_eq!(
        span.int("llmtap.request.bytes"),
        Some(c.sent as i64),
        "{:?}",
        c.kind
    );
    assert_eq!(
        span.int("llmtap.response.bytes"),
        Some(c.got as i64),
        "{:?}",
        c.kind
    );
    let skipped = span.str("llmtap.capture.skipped");
    match (c.kind, c.wave) {
        (Kind::Big, 2) => assert_eq!(skipped.as_deref(), Some("memory_budget")),
        (Kind::Big, _) => {
            return span.str("llmtap.request.truncated_reason").as_deref() == Some("memory_budget");
        }
        (Kind::Bomb, _) => {
            assert_eq!(skipped, None);
            for which in ["request", "response"] {
                let reason = span.str(&format!("llmtap.{which}.truncated_reason"));
                assert_eq!(reason.as_deref(), Some("decoded_cap"), "{which}");
                let decoded = span.int(&format!("llmtap.{which}.decoded_bytes"));
                assert_eq!(decoded, Some(CAP as i64), "{which}");
            }
        }
        (Kind::Dense, _) => {
            assert_eq!(skipped, None);
            assert_eq!(
                span.str("llmtap.response.unparsed").as_deref(),
                Some("parse_budget")
            );
            assert_eq!(span.str("mlflow.spanOutputs").map(|s| s.len()), Some(c.got));
        }
    }
    false
}

/// The worst-case RSS the README's "Memory" section documents
/// ([`llmtap::memory_bound`]), for this run's settings.
fn documented_bound(connections: usize) -> u64 {
    let env: llmtap::config::Env = [
        ("LLMTAP_MAX_CAPTURE_BYTES", CAP),
        ("LLMTAP_MAX_INFLIGHT_CAPTURE_BYTES", INFLIGHT),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let cfg = llmtap::config::resolve(&llmtap::config::Flags::default(), &env, None)
        .expect("the run's settings");
    llmtap::memory_bound::worst_case_rss(&cfg, connections, 0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_maximal_calls_at_once_stay_within_the_documented_memory_bound() {
    let started = Instant::now();
    let bomb_body = Bytes::from(bomb(64));
    assert!(
        bomb_body.len() < 256 << 10,
        "small on the wire: {}",
        bomb_body.len()
    );
    let kinds: HashMap<usize, Kind> = (0..2 * WAVE)
        .map(|n| (n, Kind::Big))
        .chain((2 * WAVE..2 * WAVE + BOMBS).map(|n| (n, Kind::Bomb)))
        .chain((2 * WAVE + BOMBS..2 * WAVE + BOMBS + DENSE).map(|n| (n, Kind::Dense)))
        .collect();
    let script_kinds = kinds.clone();
    let script_bomb = bomb_body.clone();
    let provider = FakeProvider::start(move |seen| {
        let n: usize = seen.headers["x-call"].to_str().unwrap().parse().unwrap();
        reply(script_kinds[&n], n, &script_bomb)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let bin = start_capped(&provider, dir.path(), &[]).await;
    let base = bin.base();
    let rss_at_start = bin.rss();
    let mut tasks = tokio::task::JoinSet::new();
    let spawn_wave =
        |tasks: &mut tokio::task::JoinSet<Call>, wave: usize, range: std::ops::Range<usize>| {
            for n in range {
                tasks.spawn(call(base.clone(), kinds[&n], n, wave, bomb_body.clone()));
            }
        };
    let wait_seen = |count: usize| {
        let provider = &provider;
        async move {
            let deadline = Instant::now() + Duration::from_secs(15);
            while provider.seen().len() < count {
                assert!(
                    Instant::now() < deadline,
                    "the provider saw {} of {count} calls",
                    provider.seen().len()
                );
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };

    // Wave 1 holds cap-sized captures open together: far past the budget.
    spawn_wave(&mut tasks, 1, 0..WAVE);
    wait_seen(WAVE).await;
    let held = metric(&bin, "llmtap_capture_inflight_bytes").await;
    assert!(
        held > (INFLIGHT / 2) as f64 && held <= INFLIGHT as f64,
        "{held}"
    );
    // Wave 2 starts with the budget spent: proxied, not captured.
    spawn_wave(&mut tasks, 2, WAVE..2 * WAVE);
    wait_seen(2 * WAVE).await;
    let rss_held = bin.rss();
    for _ in 0..2 * WAVE {
        provider.release();
    }
    let mut calls = Vec::new();
    while let Some(done) = tasks.join_next().await {
        calls.push(done.expect("call task"));
    }
    let mut peaks = vec![("waves 1-2", bin.hwm())];
    // Then, each wave once the captures before it are released (all fit
    // the budget): bombs, then dense JSON.
    for (wave, range) in [
        (3, 2 * WAVE..2 * WAVE + BOMBS),
        (4, 2 * WAVE + BOMBS..2 * WAVE + BOMBS + DENSE),
    ] {
        let deadline = Instant::now() + Duration::from_secs(15);
        while metric(&bin, "llmtap_capture_inflight_bytes").await > 0.0 {
            assert!(Instant::now() < deadline, "captures were not released");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        spawn_wave(&mut tasks, wave, range);
        while let Some(done) = tasks.join_next().await {
            calls.push(done.expect("call task"));
        }
        peaks.push((if wave == 3 { "bombs" } else { "dense" }, bin.hwm()));
    }
    let total = calls.len();
    assert_eq!(total, 2 * WAVE + BOMBS + DENSE);

    // The provider got every request byte for byte.
    let seen = provider.seen();
    assert_eq!(seen.len(), total);
    for s in &seen {
        let n: usize = s.headers["x-call"].to_str().unwrap().parse().unwrap();
        assert!(
            s.body == request(kinds[&n], n, &bomb_body),
            "call {n}: request bytes differ"
        );
    }

    // A trace for every call, with the call's facts.
    let deadline = Instant::now() + Duration::from_secs(25);
    while metric(&bin, "llmtap_traces_exported_total").await < total as f64 {
        assert!(
            Instant::now() < deadline,
            "not every call was traced in time"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let peak = bin.hwm();
    let skipped_metric = metric(
        &bin,
        "llmtap_captures_skipped_total{reason=\"memory_budget\"}",
    )
    .await;
    let spans: Vec<Span> = spans_in(&dir.path().join("traces"))
        .into_iter()
        .map(Span)
        .collect();
    let mut cut = 0;
    for c in &calls {
        let hex = c.trace_id.strip_prefix("tr-").unwrap();
        let span = spans
            .iter()
            .find(|s| s.0["traceId"] == hex)
            .unwrap_or_else(|| panic!("no trace for {}", c.trace_id));
        cut += usize::from(check_span(c, span));
    }
    assert!(cut > 0, "some of wave 1 met the budget mid-body");
    assert!(
        skipped_metric >= WAVE as f64,
        "llmtap_captures_skipped_total = {skipped_metric}"
    );

    // Two connections per call in flight: client -> llmtap -> provider.
    let bound = documented_bound(2 * 2 * WAVE);
    let mib = |b: u64| b as f64 / MIB as f64;
    eprintln!(
        "peak RSS after each phase (MiB): {:?}",
        peaks.iter().map(|(p, b)| (p, mib(*b))).collect::<Vec<_>>()
    );
    eprintln!(
        "RSS at start {:.1} MiB, with {} calls held {:.1} MiB ({held} captured bytes); peak {:.1} MiB, documented bound {:.1} MiB, {} skipped, {cut} cut, {:.1} s",
        mib(rss_at_start),
        2 * WAVE,
        mib(rss_held),
        mib(peak),
        mib(bound),
        skipped_metric,
        started.elapsed().as_secs_f64()
    );
    assert!(
        peak <= bound,
        "peak RSS {peak} over the documented bound {bound}"
    );
}

/// With the spool off, captures go from the request path straight to the
/// parse workers; they are released once parsed, so the budget empties.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_the_spool_off_captures_are_released_once_parsed() {
    let provider = FakeProvider::start(|seen| {
        let n: usize = seen.headers["x-call"].to_str().unwrap().parse().unwrap();
        reply(Kind::Dense, n, b"")
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let bin = start_capped(&provider, dir.path(), &[("LLMTAP_SPOOL", "false")]).await;
    let base = bin.base();
    let mut calls = tokio::task::JoinSet::new();
    for n in 0..4 {
        calls.spawn(call(base.clone(), Kind::Dense, n, 1, Bytes::new()));
    }
    while let Some(done) = calls.join_next().await {
        done.expect("call task");
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let exported = metric(&bin, "llmtap_traces_exported_total").await;
        let held = metric(&bin, "llmtap_capture_inflight_bytes").await;
        if exported >= 4.0 && held == 0.0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{exported} traces exported, {held} bytes still held"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        metric(&bin, "llmtap_capture_inflight_max_bytes").await,
        INFLIGHT as f64
    );
}
