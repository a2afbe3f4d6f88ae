//! The `llmtap` binary as an operator runs it: flags, a bad config, JSON
//! logs without secrets, and a clean exit on SIGTERM.

#[path = "support/fake_provider.rs"]
mod fake_provider;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fake_provider::{FakeProvider, Reply};

fn llmtap() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_llmtap"));
    c.env_remove("MLFLOW_TRACKING_URI")
        .env_remove("LLMTAP_CONFIG")
        .env_remove("ENABLE_MLFLOW_TRACING")
        .env(
            "LLMTAP_SPOOL_DIR",
            std::env::temp_dir().join(format!("llmtap-cli-spool-{}", std::process::id())),
        );
    c
}

#[test]
fn help_lists_the_interface() {
    let out = llmtap().arg("--help").output().unwrap();
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    for flag in [
        "--listen",
        "--upstream",
        "--admin-listen",
        "--config",
        "--log-format",
        "serve",
    ] {
        assert!(text.contains(flag), "{flag} missing from --help:\n{text}");
    }
}

#[test]
fn a_bad_config_exits_non_zero_naming_every_bad_field() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bad.toml");
    std::fs::write(
        &file,
        "[server]\nlisten = 42\ncolour = \"red\"\n[upstream]\nurl = \"gopher://x\"\nconnect_timeout = \"soon\"\n",
    )
    .unwrap();
    let out = llmtap()
        .arg("serve")
        .arg("--config")
        .arg(&file)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    for field in [
        "server.listen",
        "server.colour",
        "upstream",
        "upstream.connect_timeout",
    ] {
        assert!(err.contains(field), "{field} not named in:\n{err}");
    }
    let out = llmtap()
        .env("LLMTAP_CONFIG", dir.path().join("missing.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("missing.toml"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_logs_json_without_secrets_and_stops_cleanly_on_sigterm() {
    let provider = FakeProvider::start(|_| {
        Reply::json(
            200,
            r#"{"id":"c","object":"chat.completion","model":"m","choices":[]}"#,
        )
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let mut child = llmtap()
        .args([
            "--listen",
            "127.0.0.1:0",
            "--admin-listen",
            "127.0.0.1:0",
            "--log-format",
            "json",
        ])
        .args(["--upstream", &provider.url()])
        .env("LLMTAP_TRACE_DIR", dir.path().join("t"))
        .env("RUST_LOG", "debug")
        // The per-call access log is opt-in; it is what must carry no secret.
        .env("LLMTAP_ACCESS_LOG", "true")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    let addr = loop {
        let line = rx
            .recv_timeout(deadline - Instant::now())
            .expect("a listening log line");
        let v: serde_json::Value =
            serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        lines.push(line);
        if v["message"] == "llmtap listening" {
            break v["addr"].as_str().unwrap().to_string();
        }
    };
    let secret = "sk-cli-SECRET-abcdef";
    let client = hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
        .build_http();
    let req = http::Request::post(format!(
        "http://{addr}/v1/chat/completions?api-key={secret}"
    ))
    .header("authorization", format!("Bearer {secret}"))
    .header("api-key", secret)
    .body(http_body_util::Full::new(bytes::Bytes::from_static(
        b"{\"model\":\"m\",\"messages\":[]}",
    )))
    .unwrap();
    let resp = client.request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    http_body_util::BodyExt::collect(resp.into_body())
        .await
        .unwrap();

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let started = Instant::now();
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            started.elapsed() < Duration::from_secs(20),
            "llmtap did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "exit status {status}");
    lines.extend(rx.try_iter());
    let all = lines.join("\n");
    assert!(
        all.contains("\"proxied\""),
        "a request line was logged:\n{all}"
    );
    assert!(!all.contains(secret), "a secret reached the logs:\n{all}");
}

/// A running llmtap, killed if the test ends early.
struct Running(std::process::Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Two processes never share a spool directory: while one llmtap runs on it,
/// a second one exits non-zero naming the holder's pid, and so does
/// `llmtap replay` of it; once the first has stopped, replay runs.
#[test]
fn a_live_spool_directory_is_refused_to_a_second_llmtap_and_to_replay() {
    let dir = tempfile::tempdir().unwrap();
    let spool = dir.path().join("spool");
    let run = || {
        let mut c = llmtap();
        c.args(["--listen", "127.0.0.1:0", "--admin-listen", "127.0.0.1:0"])
            .env("LLMTAP_SPOOL_DIR", &spool)
            .env("LLMTAP_TRACE_DIR", dir.path().join("traces"))
            .env("RUST_LOG", "info");
        c
    };
    let mut first = run().stderr(Stdio::piped()).spawn().unwrap();
    let stderr = BufReader::new(first.stderr.take().unwrap());
    let pid = first.id();
    let mut first = Running(first);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(20);
    while !rx
        .recv_timeout(deadline.saturating_duration_since(Instant::now()))
        .expect("a listening log line")
        .contains("llmtap listening")
    {}

    let holder = format!("is in use by another running llmtap (pid {pid})");
    let second = run().output().unwrap();
    let err = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&holder) && err.contains("must not share a spool directory"),
        "{err}"
    );

    let replay = |dir_arg: &std::path::Path| {
        llmtap()
            .arg("replay")
            .arg(dir_arg)
            .env("LLMTAP_TRACE_DIR", dir.path().join("traces"))
            .output()
            .unwrap()
    };
    let refused = replay(&spool);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&holder) && err.contains("stop it first"),
        "{err}"
    );

    assert!(Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    assert!(first.0.wait().unwrap().success());
    let after = replay(&spool);
    assert!(
        after.status.success(),
        "replay once the spool is free: {}",
        String::from_utf8_lossy(&after.stderr)
    );
}
