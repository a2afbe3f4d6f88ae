//! Graceful shutdown of the `llmtap` binary: SIGTERM lets an in-flight
//! stream finish and its trace reach the sink, then exits 0; a second signal
//! exits at once, leaving the spool intact.

#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/tap.rs"]
mod tap;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use fake_provider::{FakeProvider, Reply, Step};
use http_body_util::{BodyExt, Full};

/// Starts the binary and returns it with its proxy address.
fn start(upstream: &str, dir: &std::path::Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_llmtap"))
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .args(["--upstream", upstream])
        .env_remove("MLFLOW_TRACKING_URI")
        .env("LLMTAP_TRACE_DIR", dir.join("traces"))
        .env("LLMTAP_SPOOL_DIR", dir.join("spool"))
        .env("LLMTAP_DEAD_LETTER_DIR", dir.join("dl"))
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let mut lines = BufReader::new(stderr).lines();
    let addr = loop {
        let line = lines.next().expect("llmtap logs its address").unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap_or_default();
        if v["message"] == "llmtap listening" {
            break v["addr"].as_str().unwrap().to_string();
        }
    };
    std::thread::spawn(move || for _ in lines {});
    (child, addr)
}

fn signal(child: &Child, sig: &str) {
    let ok = Command::new("kill")
        .args([sig, &child.id().to_string()])
        .status()
        .unwrap();
    assert!(ok.success());
}

fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(s) = child.try_wait().unwrap() {
            return s;
        }
        assert!(
            start.elapsed() < limit,
            "llmtap did not exit within {limit:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn slow_stream() -> Reply {
    let body = tap::fixture("openai_chat/stream_include_usage.sse");
    let mut steps = Vec::new();
    for event in fake_provider::split_events(&body) {
        steps.push(Step::Send(event));
        steps.push(Step::Sleep(Duration::from_millis(100)));
    }
    Reply {
        steps,
        ..Reply::sse(b"")
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_lets_an_in_flight_stream_finish_then_exits_zero() {
    let provider = FakeProvider::start(|_| slow_stream()).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = start(&provider.url(), dir.path());
    let req = http::Request::post(format!("http://{addr}/v1/chat/completions"))
        .body(Full::new(Bytes::from_static(
            br#"{"model":"m","messages":[],"stream":true,"stream_options":{"include_usage":true}}"#,
        )))
        .unwrap();
    let resp = tap::client().request(req).await.unwrap();
    let id = resp.headers()["x-llmtap-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    let mut body = resp.into_body();
    let first = body.frame().await.unwrap().unwrap();
    assert!(first.is_data());
    signal(&child, "-TERM");
    // The stream goes on to its end after the signal.
    let rest = body
        .collect()
        .await
        .expect("the in-flight stream completes")
        .to_bytes();
    assert!(rest.ends_with(b"data: [DONE]\n\n"));
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert!(status.success(), "{status}");
    let spans = tap::spans_in(&dir.path().join("traces"));
    assert!(
        spans.iter().any(|s| s["traceId"] == id[3..]),
        "the in-flight call's trace was flushed before exit"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_exits_at_once() {
    let provider = FakeProvider::start(|_| Reply {
        steps: vec![Step::Hang],
        ..Reply::sse(b"")
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (mut child, addr) = start(&provider.url(), dir.path());
    let hanging = tokio::spawn(async move {
        let req = http::Request::post(format!("http://{addr}/v1/chat/completions"))
            .body(Full::new(Bytes::from_static(
                br#"{"model":"m","messages":[],"stream":true}"#,
            )))
            .unwrap();
        let _body = tap::client().request(req).await.map(|r| r.into_body());
        tokio::time::sleep(Duration::from_secs(60)).await;
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    signal(&child, "-TERM");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        child.try_wait().unwrap().is_none(),
        "still draining the hanging call"
    );
    signal(&child, "-INT");
    let status = wait_exit(&mut child, Duration::from_secs(5));
    assert!(
        !status.success(),
        "a forced exit is not reported as clean: {status}"
    );
    assert!(
        dir.path().join("spool").exists(),
        "the spool is left in place"
    );
    hanging.abort();
}
