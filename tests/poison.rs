//! A poison pill cannot crash-loop llmtap (issue 8, item 2), against the
//! llmtap binary on a persistent spool directory.
//!
//! The crash is made deterministic with the debug-build test hook
//! `LLMTAP_DEBUG_ABORT_ON_PARSE=<marker>` (src/pipeline/journal/test_hooks.rs): a
//! parse worker aborts the process when a captured request body contains
//! the marker — the same death, as far as the journal can tell, as an OOM
//! kill or `kill -9` during the parse (no unwinding, nothing flushed).

#[path = "support/bin.rs"]
mod bin;
#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/tap.rs"]
mod tap;

use std::net::SocketAddr;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::ExitStatus;
use std::time::{Duration, Instant};

use bin::{Bin, Launch};
use fake_provider::{FakeProvider, Reply};
use serde_json::Value;
use tap::{get, post, spans_in};

const CHAT: &str = "/v1/chat/completions";
const MARKER: &str = "POISON-PILL-3c9e";
const SLOW: &str = "SLOW-PARSE-51d0";
/// Arms the abort hook on `MARKER`.
const ABORT: (&str, &str) = ("LLMTAP_DEBUG_ABORT_ON_PARSE", MARKER);
/// Makes a parse of a call containing `SLOW` take 30 s.
const STALL: (&str, &str) = ("LLMTAP_DEBUG_STALL_ON_PARSE", SLOW);
const REPLY: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini","choices":[{"index":0,"message":{"role":"assistant","content":"hi"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;

/// One run of the llmtap binary on `dir` (cwd, config, spool, traces).
const LAUNCH: Launch = Launch {
    // Fast batches and retries, two parse workers.
    config_extra: "parse_workers = 2\n",
    // Every call the client saw complete is in the journal.
    env: &[("LLMTAP_SPOOL_FSYNC", "always")],
    ..Launch::DEFAULT
};

fn request(text: &str) -> Vec<u8> {
    format!(r#"{{"model":"gpt-4o-mini","messages":[{{"role":"user","content":"{text}"}}]}}"#)
        .into_bytes()
}

async fn provider() -> FakeProvider {
    FakeProvider::start(|_| Reply::json(200, REPLY)).await
}

fn assert_aborted(status: ExitStatus, bin: &Bin, what: &str) {
    assert_eq!(
        status.signal(),
        Some(6),
        "{what}: expected the test hook's abort (SIGABRT), got {status}:\n{}",
        bin.log()
    );
}

/// Sends one call; asserts the client got the provider's exact bytes.
async fn call(addr: SocketAddr, text: &str) -> String {
    let got = post(&format!("http://{addr}{CHAT}"), &request(text), &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(&got.body[..], REPLY.as_bytes(), "exact bytes to the client");
    got.trace_id()
}

/// Waits (up to 20 s) for the spans of `ids` in the trace files.
async fn wait_traces(dir: &Path, ids: &[&str]) {
    let start = Instant::now();
    loop {
        let spans = spans_in(&dir.join("traces"));
        let missing: Vec<_> = ids
            .iter()
            .filter(|id| {
                !spans
                    .iter()
                    .any(|s| Some(s["traceId"].as_str().unwrap_or("")) == id.strip_prefix("tr-"))
            })
            .collect();
        if missing.is_empty() {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "no trace for {missing:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn has_trace(dir: &Path, id: &str) -> bool {
    let hex = id.strip_prefix("tr-").unwrap();
    spans_in(&dir.join("traces"))
        .iter()
        .any(|s| s["traceId"] == hex)
}

/// The `llmtap_journal_quarantined_total` value, waiting (up to 10 s) for `want`.
async fn quarantined_total(admin: SocketAddr, want: f64) -> f64 {
    let start = Instant::now();
    loop {
        let text = get(&format!("http://{admin}/metrics")).await.body;
        let text = String::from_utf8_lossy(&text).into_owned();
        let v = text
            .lines()
            .find_map(|l| l.strip_prefix("llmtap_journal_quarantined_total "))
            .and_then(|v| v.trim().parse::<f64>().ok());
        if v == Some(want) || start.elapsed() > Duration::from_secs(10) {
            return v.unwrap_or(f64::NAN);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits (up to 20 s) for a log line containing `text`.
async fn wait_logged(bin: &Bin, text: &str) {
    let start = Instant::now();
    while bin.logged(text).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "never logged {text:?}:\n{}",
            bin.log()
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn quarantine_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<_> = std::fs::read_dir(dir.join("spool/quarantine"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_poison_record_kills_llmtap_twice_then_is_quarantined_for_good() {
    let upstream = provider().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    // Start 1: an innocent call is traced; the poison call is answered with
    // exact bytes, then its parse kills the process.
    let mut bin = LAUNCH.spawn(&upstream.url(), dir, &[ABORT]);
    let (addr, _) = bin.addrs().await;
    let before = call(addr, "innocent before").await;
    wait_traces(dir, &[&before]).await;
    let poison = call(addr, MARKER).await;
    assert_aborted(bin.exited().await, &bin, "start 1");

    // Start 2: the record has a strike; it is parsed again, alone, and the
    // hook kills the process again (a real poison pill would too).
    let mut bin = LAUNCH.spawn(&upstream.url(), dir, &[ABORT]);
    assert_aborted(bin.exited().await, &bin, "start 2");
    assert!(
        !bin.logged("it is parsed again, alone").is_empty(),
        "start 2 says what it does:\n{}",
        bin.log()
    );

    // Start 3: quarantined, not parsed (the hook is still armed); serves.
    let mut bin = LAUNCH.spawn(&upstream.url(), dir, &[ABORT]);
    let (addr, admin) = bin.addrs().await;
    let after = call(addr, "innocent after").await;
    wait_traces(dir, &[&before, &after]).await;
    assert_eq!(quarantined_total(admin, 1.0).await, 1.0);
    let warned = bin.logged("quarantined");
    let warnings = warned
        .iter()
        .filter(|v| v["level"] == "WARN" && v["trace_id"] == poison)
        .count();
    assert_eq!(
        warnings,
        1,
        "one warning names the poison call's trace id:\n{}",
        bin.log()
    );
    let files = quarantine_files(dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let bytes = std::fs::read(&files[0]).unwrap();
    let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
    let head: Value = serde_json::from_slice(&bytes[..nl]).unwrap();
    assert_eq!(head["trace_id"], poison);
    assert_eq!(head["strikes"], 2);
    assert!(
        head["reason"].as_str().unwrap().contains("died twice"),
        "{head}"
    );
    assert!(
        contains(&bytes[nl + 1..], MARKER),
        "the record's bytes follow the header"
    );
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&files[0]), 0o600);
    assert_eq!(mode(&dir.join("spool/quarantine")), 0o700);
    assert!(
        !has_trace(dir, &poison),
        "the poison record was never traced"
    );
    assert!(bin.alive());
    bin.stop().await;

    // Start 4: clean — nothing parsed a third time, no quarantine growth.
    let mut bin = LAUNCH.spawn(&upstream.url(), dir, &[ABORT]);
    let (addr, admin) = bin.addrs().await;
    let last = call(addr, "innocent last").await;
    wait_traces(dir, &[&last]).await;
    assert_eq!(quarantined_total(admin, 0.0).await, 0.0);
    assert_eq!(quarantine_files(dir), files);
    assert!(bin.logged("parsed again").is_empty(), "{}", bin.log());
    assert!(bin.alive());
    bin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_crash_mid_parse_loses_no_trace() {
    let upstream = provider().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    // The process dies once during a parse (as in a kill -9 mid-deploy).
    let mut bin = LAUNCH.spawn(&upstream.url(), dir, &[ABORT]);
    let (addr, _) = bin.addrs().await;
    let id = call(addr, MARKER).await;
    assert_aborted(bin.exited().await, &bin, "the crash");

    // The next start parses it again (alone) and the trace is delivered.
    let mut bin = LAUNCH.spawn(&upstream.url(), dir, &[]);
    let (addr, admin) = bin.addrs().await;
    let other = call(addr, "innocent").await;
    wait_traces(dir, &[&id, &other]).await;
    assert_eq!(quarantined_total(admin, 0.0).await, 0.0);
    assert!(quarantine_files(dir).is_empty());
    bin.stop().await;

    // And the one after has nothing left to do about it.
    let mut bin = LAUNCH.spawn(&upstream.url(), dir, &[ABORT]);
    let (addr, _) = bin.addrs().await;
    call(addr, "innocent again").await;
    assert!(bin.logged("parsed again").is_empty(), "{}", bin.log());
    assert!(bin.alive());
    bin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_parsed_at_the_moment_of_the_crash_keeps_its_trace() {
    let upstream = provider().await;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();

    // Start 1: one worker is in a slow parse when the poison kills the
    // process; both records are found being parsed by the next start.
    let mut bin = LAUNCH.spawn(&upstream.url(), dir, &[ABORT, STALL]);
    let (addr, _) = bin.addrs().await;
    let bystander = call(addr, SLOW).await;
    wait_logged(&bin, "LLMTAP_DEBUG_STALL_ON_PARSE").await;
    let poison = call(addr, MARKER).await;
    assert_aborted(bin.exited().await, &bin, "start 1");

    // Start 2: each is parsed again alone; the poison kills it again.
    let mut bin = LAUNCH.spawn(&upstream.url(), dir, &[ABORT]);
    assert_aborted(bin.exited().await, &bin, "start 2");

    // Start 3: only the poison is quarantined; the bystander is traced.
    let mut bin = LAUNCH.spawn(&upstream.url(), dir, &[ABORT]);
    let (_, admin) = bin.addrs().await;
    wait_traces(dir, &[&bystander]).await;
    assert_eq!(quarantined_total(admin, 1.0).await, 1.0);
    let files = quarantine_files(dir);
    assert_eq!(files.len(), 1, "{files:?}");
    let bytes = std::fs::read(&files[0]).unwrap();
    assert!(contains(&bytes, &poison) && !contains(&bytes, SLOW));
    assert!(!has_trace(dir, &poison));
    bin.stop().await;
}
