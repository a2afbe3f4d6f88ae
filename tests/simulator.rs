//! `llmtap-sim`, the real binary: the official OpenAI and Anthropic SDKs
//! read its answers, llmtap in front of it records the usage it reports,
//! `streams` measures it, and overrides and bad input get the right answer.

#[path = "support/mlflow.rs"]
mod mlflow;
#[path = "support/tap.rs"]
mod tap;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};
use tap::{post, Tap};

const SIM: &str = env!("CARGO_BIN_EXE_llmtap-sim");
/// The text of a 4-chunk, 20-byte answer.
const FOX: &str = "The quick brown fox ";

/// A running `llmtap-sim serve`, killed on drop.
struct Sim {
    child: Child,
    url: String,
}

impl Sim {
    fn start(args: &[&str]) -> Sim {
        let mut child = Command::new(SIM)
            .arg("serve")
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("llmtap-sim starts");
        let lines = lines_of(child.stdout.take().unwrap());
        let first = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("llmtap-sim prints its address within 30 s");
        let url = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("first line: {first:?}"))
            .to_string();
        Sim { child, url }
    }
}

impl Drop for Sim {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Lines of a child's stdout, read on a thread (so waits can time out).
fn lines_of(out: ChildStdout) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Runs `llmtap-sim streams` to the end; returns its stdout lines.
fn streams(args: &[&str]) -> Vec<String> {
    let mut child = Command::new(SIM)
        .arg("streams")
        .args(args)
        .stdout(Stdio::piped())
        .spawn()
        .expect("llmtap-sim streams starts");
    let lines = lines_of(child.stdout.take().unwrap());
    let mut out = Vec::new();
    while let Ok(line) = lines.recv_timeout(Duration::from_secs(60)) {
        out.push(line);
    }
    // Its stdout is closed (or silent for 60 s): it has exited, or must.
    for _ in 0..500 {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(
                status.success(),
                "streams {args:?}: {status}, printed {out:?}"
            );
            return out;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let _ = child.kill();
    panic!("streams {args:?} did not exit; printed {out:?}");
}

fn report(lines: &[String]) -> Value {
    let last = lines.last().expect("streams printed its report");
    serde_json::from_str(last).unwrap_or_else(|e| panic!("report {last:?}: {e}"))
}

#[test]
fn the_official_sdks_read_text_model_and_usage() {
    let sim = Sim::start(&[]);
    let python = mlflow::ensure_venv();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/python/sim_sdk.py");
    let out = Command::new(python)
        .arg(script)
        .arg(&sim.url)
        .output()
        .expect("python runs");
    assert!(
        out.status.success(),
        "sim_sdk.py: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("sim_sdk.py prints JSON");
    for (call, model) in [
        ("openai_plain", "gpt-sim-1"),
        ("openai_stream", "gpt-sim-2"),
    ] {
        let c = &got[call];
        assert_eq!(c["text"], FOX, "{call}: {c}");
        assert_eq!(c["model"], model, "{call}");
        assert_eq!(c["completion_tokens"], 4, "{call}");
        let prompt = c["prompt_tokens"].as_u64().unwrap();
        assert!(prompt >= 10, "{call}: ~request bytes / 4, got {prompt}");
        assert_eq!(c["total_tokens"], prompt + 4, "{call}");
    }
    for (call, model) in [
        ("anthropic_plain", "claude-sim-1"),
        ("anthropic_stream", "claude-sim-2"),
    ] {
        let c = &got[call];
        assert_eq!(c["text"], FOX, "{call}: {c}");
        assert_eq!(c["model"], model, "{call}");
        assert_eq!(c["output_tokens"], 4, "{call}");
        assert!(c["input_tokens"].as_u64().unwrap() >= 10, "{call}: {c}");
    }
}

/// llmtap's own parsers find the usage in the simulator's bodies.
#[tokio::test]
async fn llmtap_in_front_records_the_usage_of_both_providers() {
    let sim = Sim::start(&["--chunks", "6"]);
    let tap = Tap::start(&sim.url, &[]).await;
    let calls = [
        (
            "/v1/chat/completions",
            json!({"model": "gpt-sim", "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/v1/chat/completions",
            json!({"model": "gpt-sim", "messages": [{"role": "user", "content": "hi"}], "stream": true, "stream_options": {"include_usage": true}}),
        ),
        (
            "/v1/messages",
            json!({"model": "claude-sim", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}]}),
        ),
        (
            "/v1/messages",
            json!({"model": "claude-sim", "max_tokens": 64, "messages": [{"role": "user", "content": "hi"}], "stream": true}),
        ),
    ];
    for (path, body) in calls {
        let body = serde_json::to_vec(&body).unwrap();
        let got = post(&tap.url(path), &body, &[("x-api-key", "k")]).await;
        assert_eq!(got.status, 200, "{path}: {:?}", got.body);
        let span = tap.span(&got.trace_id()).await;
        let usage = span.json("mlflow.chat.tokenUsage").expect("token usage");
        let prompt = body.len() as u64 / 4;
        assert_eq!(usage["input_tokens"], prompt, "{path}: {usage}");
        assert_eq!(usage["output_tokens"], 6, "{path}: {usage}");
        assert_eq!(usage["total_tokens"], prompt + 6, "{path}: {usage}");
        let model = span.str("mlflow.llm.model");
        let asked: Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(
            model.as_deref(),
            asked["model"].as_str(),
            "{path}: the echoed model"
        );
    }
}

#[test]
fn streams_measures_every_chunk_of_every_stream() {
    let sim = Sim::start(&[]);
    for (provider, reuse) in [("openai", false), ("anthropic", true)] {
        let mut args = vec![
            "--url",
            &sim.url,
            "--provider",
            provider,
            "--concurrency",
            "3",
            "--total",
            "9",
            "--chunks",
            "7",
            "--chunk-delay-ms",
            "5",
        ];
        if reuse {
            args.push("--connections");
        }
        let r = report(&streams(&args));
        assert_eq!(r["streams"], 9, "{provider}: {r}");
        assert_eq!(r["errors"], 0, "{provider}: {r}");
        assert_eq!(r["chunks"], 63, "{provider}: {r}");
        let gap = r["gap_us"]["p50"].as_u64().unwrap();
        assert!(
            gap >= 5_000,
            "{provider}: gap p50 {gap} µs below the 5 ms asked"
        );
        assert!(r["ttft_us"]["max"].as_u64().unwrap() > 0, "{r}");
    }
}

#[test]
fn streams_hold_keeps_the_streams_open_then_reports() {
    let sim = Sim::start(&[]);
    let lines = streams(&[
        "--url",
        &sim.url,
        "--concurrency",
        "20",
        "--hold",
        "0.3",
        "--chunks",
        "100",
        "--chunk-delay-ms",
        "60000",
        "--connections",
    ]);
    assert_eq!(lines[0], "holding 20", "{lines:?}");
    let r = report(&lines);
    assert_eq!(r["streams"], 20, "{r}");
    assert_eq!(r["errors"], 0, "{r}");
    assert_eq!(r["chunks"], 20, "one chunk each while held: {r}");
}

#[test]
fn streams_counts_what_fails_and_says_why() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let r = report(&streams(&[
        "--url",
        &url,
        "--concurrency",
        "2",
        "--total",
        "4",
    ]));
    assert_eq!(r["streams"], 0, "{r}");
    assert_eq!(r["errors"], 4, "{r}");
    assert_eq!(r["ttft_us"]["p50"], Value::Null, "nothing measured: {r}");
    let why = r["first_error"].as_str().unwrap_or_default();
    assert!(why.starts_with("connect"), "{r}");

    let sim = Sim::start(&[]);
    let args = ["--url", &sim.url, "--total", "2", "--chunks", "0"];
    let r = report(&streams(&args));
    assert_eq!(r["errors"], 2, "the simulator refuses 0 chunks: {r}");
    assert_eq!(r["first_error"], "status 400 Bad Request", "{r}");
}

#[tokio::test]
async fn header_overrides_and_bad_input() {
    let sim = Sim::start(&["--chunks", "20"]);
    let url = format!("{}/v1/chat/completions", sim.url);
    let ask = br#"{"model":"m","messages":[]}"#;
    let got = post(&url, ask, &[("x-sim-chunks", "3")]).await;
    let body: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(body["usage"]["completion_tokens"], 3, "{body}");

    let got = post(&url, b"{\"model\": ", &[]).await;
    assert_eq!(got.status, 400);
    let body: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(body["error"]["type"], "invalid_request_error", "{body}");

    let got = post(&url, ask, &[("x-sim-ttft-ms", "soon")]).await;
    assert_eq!(got.status, 400, "{:?}", got.body);

    let got = post(&format!("{}/v1/embeddings", sim.url), ask, &[]).await;
    assert_eq!(got.status, 404);
    assert!(serde_json::from_slice::<Value>(&got.body).is_ok());

    for chunked in [false, true] {
        let addr = sim.url.strip_prefix("http://").unwrap().to_string();
        let status = tokio::task::spawn_blocking(move || huge_body(&addr, chunked))
            .await
            .unwrap();
        let how = if chunked { "chunked" } else { "content-length" };
        assert_eq!(status, "HTTP/1.1 413 Payload Too Large", "{how}");
    }
}

/// Sends a 9 MiB body, its length announced or chunked; the status line.
fn huge_body(addr: &str, chunked: bool) -> String {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_write_timeout(Some(Duration::from_secs(10))).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let framing = if chunked {
        "transfer-encoding: chunked".to_string()
    } else {
        format!("content-length: {}", 9 << 20)
    };
    let head = format!(
        "POST /v1/messages HTTP/1.1\r\nhost: {addr}\r\ncontent-type: application/json\r\n{framing}\r\n\r\n"
    );
    s.write_all(head.as_bytes()).unwrap();
    let piece = vec![b' '; 64 << 10];
    for _ in 0..144 {
        let chunk = if chunked {
            [format!("{:x}\r\n", piece.len()).as_bytes(), &piece, b"\r\n"].concat()
        } else {
            piece.clone()
        };
        if s.write_all(&chunk).is_err() {
            break; // the simulator answered and closed
        }
    }
    if chunked {
        let _ = s.write_all(b"0\r\n\r\n");
    }
    let mut answer = Vec::new();
    let _ = s.read_to_end(&mut answer);
    let text = String::from_utf8_lossy(&answer);
    text.lines().next().unwrap_or_default().to_string()
}
