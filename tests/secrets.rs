//! Nothing secret or private lies around: URL credentials never become a
//! `Host`, a 502 body, a log line, a trace or a file; MLflow userinfo is used
//! as Basic auth and never printed; every file llmtap writes holding prompts
//! is `0600` in a `0700` directory; the dead-letter files are capped and
//! `llmtap replay` still reads them all.

#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/tap.rs"]
mod tap;

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::{mpsc, Arc, Mutex, OnceLock};
use std::time::Duration;

use fake_provider::{FakeProvider, Reply};
use serde_json::Value;
use tap::{post, Tap};

const CHAT: &str = "/v1/chat/completions";
const BODY: &[u8] = br#"{"model":"m","messages":[{"role":"user","content":"Capital of France?"}]}"#;

/// Everything llmtap logs in this test process (the in-process tests).
fn captured_logs() -> Arc<Mutex<Vec<u8>>> {
    static LOGS: OnceLock<Arc<Mutex<Vec<u8>>>> = OnceLock::new();
    LOGS.get_or_init(|| {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_max_level(tracing::Level::DEBUG)
            .with_ansi(false)
            .with_writer(move || Shared(sink.clone()))
            .finish();
        tracing::subscriber::set_global_default(subscriber).expect("one global subscriber");
        buf
    })
    .clone()
}

struct Shared(Arc<Mutex<Vec<u8>>>);

impl Write for Shared {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..500 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

fn assert_no_secret_on_disk(dir: &Path, secret: &[u8]) {
    for f in tap::files_under(dir) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(secret.len()).any(|w| w == secret),
            "{} holds the secret",
            f.display()
        );
    }
}

/// The config refuses userinfo in upstream URLs; should a `Config` carry one
/// anyway, it is not sent as `Host` and printed nowhere: not in the 502 body,
/// the log line, the trace, or any file.
#[tokio::test]
async fn upstream_userinfo_is_never_sent_or_printed() {
    let logs = captured_logs();
    let provider = FakeProvider::start(|_| Reply::json(200, r#"{"id":"x","choices":[]}"#)).await;
    let with_creds = format!("http://alice:pw-SECRET@{}", provider.addr);
    let tap = Tap::start_with(&provider.url(), &[], |c| {
        c.upstream = with_creds.parse().unwrap();
    })
    .await;
    let got = post(&tap.url(CHAT), BODY, &[]).await;
    assert_eq!(got.status, 200);
    let seen = &provider.seen()[0];
    assert_eq!(seen.headers["host"], provider.addr.to_string());
    tap.span(&got.trace_id()).await;

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = closed.local_addr().unwrap();
    drop(closed);
    let tap2 = Tap::start_with(&provider.url(), &[], |c| {
        c.upstream = format!("http://bob:pw-SECRET@{gone}/base").parse().unwrap();
    })
    .await;
    let got = post(&tap2.url(CHAT), BODY, &[]).await;
    assert_eq!(got.status, 502);
    let v: Value = serde_json::from_slice(&got.body).unwrap();
    let message = v["error"]["message"].as_str().unwrap();
    assert!(
        message.contains(&format!("upstream http://{gone}/base unreachable")),
        "{message}"
    );
    let span = tap2.span(&got.trace_id()).await;
    assert!(!span.0.to_string().contains("SECRET"));
    tap.running.shutdown().await;
    tap2.running.shutdown().await;

    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(logs.contains("upstream call failed"), "{logs}");
    assert!(logs.contains("llmtap listening"), "{logs}");
    assert!(
        !logs.contains("SECRET") && !logs.contains("alice"),
        "{logs}"
    );
    assert_no_secret_on_disk(tap._tmp.path(), b"SECRET");
    assert_no_secret_on_disk(tap2._tmp.path(), b"SECRET");
}

#[cfg(unix)]
fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

/// A real run writes trace files, spool and journal segments and a
/// dead-letter file: every one is 0600, every directory 0700.
#[cfg(unix)]
#[tokio::test]
async fn every_file_holding_prompts_is_private() {
    let provider = FakeProvider::start(|_| Reply::json(200, r#"{"id":"x","choices":[]}"#)).await;
    let tap = Tap::start(&provider.url(), &[]).await;
    let got = post(&tap.url(CHAT), BODY, &[]).await;
    tap.span(&got.trace_id()).await;
    let root = tap._tmp.path().to_path_buf();
    tap.running.shutdown().await;

    // A refused batch, to have a dead-letter file from a real run too.
    let collector = FakeProvider::start(|_| Reply::json(400, "no")).await;
    let tap2 = Tap::start(
        &provider.url(),
        &[
            ("MLFLOW_TRACKING_URI", &collector.url()),
            ("MLFLOW_EXPERIMENT_ID", "1"),
        ],
    )
    .await;
    post(&tap2.url(CHAT), BODY, &[]).await;
    let m = tap2.running.metrics.clone();
    wait_for("the refusal", || {
        m.render().contains("llmtap_traces_dead_lettered_total 1")
    })
    .await;
    let root2 = tap2._tmp.path().to_path_buf();
    tap2.running.shutdown().await;

    for (root, wanted) in [
        (
            &root,
            &["traces/traces-", "spool/seg-", "spool/exchanges/seg-"][..],
        ),
        (&root2, &["dead-letter/dead-letter.jsonl"][..]),
    ] {
        let files = tap::files_under(root);
        for want in wanted {
            assert!(
                files.iter().any(|f| f.to_string_lossy().contains(want)),
                "no {want} in {files:?}"
            );
        }
        for f in &files {
            assert_eq!(mode(f), 0o600, "{}", f.display());
            let mut dir = f.parent().unwrap();
            while dir != root.as_path() {
                assert_eq!(mode(dir), 0o700, "{}", dir.display());
                dir = dir.parent().unwrap();
            }
        }
    }
}

/// Runs the binary until its "llmtap listening" line; returns the child, the
/// log lines so far, and the lines to come (read by a thread, so the pipe
/// never fills).
fn start_binary(
    envs: &[(&str, &str)],
    dir: &Path,
) -> (std::process::Child, Vec<String>, mpsc::Receiver<String>) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_llmtap"));
    for (k, _) in std::env::vars() {
        if k.starts_with("LLMTAP_") || k.starts_with("MLFLOW_") || k == "ENABLE_MLFLOW_TRACING" {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(dir)
        .env("LLMTAP_LISTEN", "127.0.0.1:0")
        .env("LLMTAP_ADMIN_LISTEN", "127.0.0.1:0")
        .env("LLMTAP_LOG_FORMAT", "json")
        .env("RUST_LOG", "debug")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let stderr = BufReader::new(child.stderr.take().unwrap());
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut lines = Vec::new();
    while let Ok(line) = rx.recv_timeout(Duration::from_secs(20)) {
        let listening = line.contains("llmtap listening");
        lines.push(line);
        if listening {
            return (child, lines, rx);
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("llmtap did not start:\n{}", lines.join("\n"));
}

/// `MLFLOW_TRACKING_URI=http://user:password@host`: the credentials go as
/// Basic auth, the startup log shows the URI without them, and the Host sent
/// is the bare host.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlflow_userinfo_is_basic_auth_and_never_printed() {
    let collector = FakeProvider::start(|_| Reply::json(200, "{}")).await;
    let provider = FakeProvider::start(|_| Reply::json(200, r#"{"id":"x","choices":[]}"#)).await;
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("http://ml%40ops:p%3Ass-SECRET@{}", collector.addr);
    let (upstream, dir_path) = (provider.url(), dir.path().to_path_buf());
    let (mut child, mut lines, rest) = tokio::task::spawn_blocking(move || {
        start_binary(
            &[
                ("LLMTAP_UPSTREAM", &upstream),
                ("MLFLOW_TRACKING_URI", &uri),
                ("MLFLOW_EXPERIMENT_ID", "1"),
                ("LLMTAP_SPOOL_DIR", "spool"),
                ("LLMTAP_DEAD_LETTER_DIR", "dead-letter"),
            ],
            &dir_path,
        )
    })
    .await
    .unwrap();
    let listening: Value = serde_json::from_str(lines.last().unwrap()).unwrap();
    assert_eq!(
        listening["sink"],
        format!("mlflow http://{} (Id(\"1\"))", collector.addr)
    );
    let addr = listening["addr"].as_str().unwrap().to_string();
    post(&format!("http://{addr}{CHAT}"), BODY, &[]).await;
    wait_for("an export", || {
        collector
            .seen()
            .iter()
            .any(|s| s.uri.ends_with("/v1/traces"))
    })
    .await;
    let export = collector
        .seen()
        .into_iter()
        .find(|s| s.uri.ends_with("/v1/traces"))
        .unwrap();
    use base64::Engine;
    let basic = base64::engine::general_purpose::STANDARD.encode("ml@ops:p:ss-SECRET");
    assert_eq!(export.headers["authorization"], format!("Basic {basic}"));
    assert_eq!(export.headers["host"], collector.addr.to_string());

    let pid = child.id().to_string();
    assert!(Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let status = tokio::task::spawn_blocking(move || child.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success());
    lines.extend(rest.iter());
    let all = lines.join("\n");
    assert!(
        !all.contains("SECRET") && !all.contains("ml%40ops") && !all.contains("ml@ops"),
        "{all}"
    );
    assert_no_secret_on_disk(dir.path(), b"SECRET");
}

/// The binary refuses userinfo in `--upstream` (exit 2) without echoing the
/// password.
#[test]
fn the_binary_refuses_upstream_userinfo_without_echoing_it() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_llmtap"))
        .current_dir(dir.path())
        .env_remove("LLMTAP_CONFIG")
        .env_remove("LLMTAP_UPSTREAM")
        .args(["--upstream", "https://user:pw-SECRET@api.example/v1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("upstream: a URL with credentials (user:password@) is not supported"),
        "{err}"
    );
    assert!(err.contains("https://api.example"), "{err}");
    assert!(!err.contains("SECRET") && !err.contains("user:pw"), "{err}");
}

/// Dead-letter files rotated by a real run are all read back by `llmtap
/// replay <dir>`, oldest first; what the cap deleted is counted.
#[tokio::test]
async fn rotated_dead_letter_files_are_counted_and_replayed() {
    let collector = FakeProvider::start(|_| Reply::json(400, "no")).await;
    let provider = FakeProvider::start(|_| Reply::json(200, r#"{"id":"x","choices":[]}"#)).await;
    let tap = Tap::start_with(
        &provider.url(),
        &[
            ("MLFLOW_TRACKING_URI", &collector.url()),
            ("MLFLOW_EXPERIMENT_ID", "1"),
        ],
        |c| {
            c.export.dead_letter_max_file_bytes = 1;
            c.export.dead_letter_max_files = 3;
            c.export.batch_max_spans = 1;
        },
    )
    .await;
    for _ in 0..5 {
        post(&tap.url(CHAT), BODY, &[]).await;
    }
    let m = tap.running.metrics.clone();
    wait_for("five refusals", || {
        m.render().contains("llmtap_traces_dead_lettered_total 5")
    })
    .await;
    let text = m.render();
    assert!(
        text.contains("llmtap_traces_dropped_total{reason=\"dead_letter_rotated\"} 2"),
        "{text}"
    );
    let dl = tap._tmp.path().join("dead-letter");
    let files: Vec<String> = std::fs::read_dir(&dl)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(files.len(), 3, "{files:?}");
    assert!(files.iter().any(|f| f == "dead-letter.jsonl"), "{files:?}");

    let out = tap._tmp.path().join("replayed");
    let cfg = tap::config(&provider.url(), &[], &out);
    let report = llmtap::pipeline::replay::replay(&cfg, std::slice::from_ref(&dl))
        .await
        .unwrap();
    assert_eq!(
        (report.lines, report.spans, report.exported),
        (3, 3, 3),
        "{report:?}"
    );
    tap.running.shutdown().await;
}

/// Replaying a dead-letter directory into a sink that refuses again, with
/// that same directory as the dead-letter directory, reads each line once
/// (the refusals appended meanwhile are not read back in a loop).
#[tokio::test]
async fn replaying_into_the_same_dead_letter_dir_terminates() {
    let collector = FakeProvider::start(|_| Reply::json(400, "no")).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = tap::config(
        &collector.url(),
        &[
            ("MLFLOW_TRACKING_URI", &collector.url()),
            ("MLFLOW_EXPERIMENT_ID", "1"),
        ],
        &tmp.path().join("traces"),
    );
    let dl = tmp.path().join("dead-letter");
    cfg.export.dead_letter_dir = dl.clone();
    cfg.export.batch_max_spans = 1;
    let first = llmtap::pipeline::dead_letter::DeadLetter::new(dl.clone(), 64 << 20, 10);
    let span = tap::otlp_span;

    for i in 1..=2 {
        let req = llmtap::otlp::request("svc", vec![span(i)]);
        first.write("mlflow", "HTTP 400", &req).await.unwrap();
    }
    let replay = llmtap::pipeline::replay::replay(&cfg, std::slice::from_ref(&dl));
    let report = tokio::time::timeout(Duration::from_secs(20), replay)
        .await
        .expect("replay ends")
        .unwrap();
    assert_eq!((report.lines, report.dead_lettered), (2, 2), "{report:?}");
    let text = std::fs::read_to_string(dl.join("dead-letter.jsonl")).unwrap();
    assert_eq!(text.lines().count(), 4, "two refused again, appended once");
}

/// An upstream credential llmtap adds (`LLMTAP_UPSTREAM_CREDENTIAL=env:...`)
/// reaches the provider and is printed nowhere: not in the config's `Debug`,
/// a log line (debug level), the span, a 502 body, or any file.
#[tokio::test]
async fn an_injected_credential_is_sent_and_never_printed() {
    const KEY: &str = "sk-injected-SECRET-5e0f";
    let logs = captured_logs();
    let provider = FakeProvider::start(|_| Reply::json(200, r#"{"id":"x","choices":[]}"#)).await;
    let env = [
        ("TEAM_KEY", KEY),
        ("LLMTAP_UPSTREAM_CREDENTIAL", "env:TEAM_KEY"),
        ("LLMTAP_UPSTREAM_CREDENTIAL_OVERRIDE", "true"),
    ];
    let shown = format!("{:?}", tap::config(&provider.url(), &env, Path::new("t")));
    assert!(
        shown.contains("TEAM_KEY") && shown.contains("<redacted>"),
        "{shown}"
    );
    assert!(!shown.contains("injected-SECRET"), "{shown}");

    let tap = Tap::start(&provider.url(), &env).await;
    let got = post(&tap.url(CHAT), BODY, &[]).await;
    assert_eq!(got.status, 200);
    assert_eq!(
        provider.seen()[0].headers["authorization"],
        format!("Bearer {KEY}")
    );
    let span = tap.span(&got.trace_id()).await;
    assert!(!span.0.to_string().contains("injected-SECRET"));

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let gone = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let tap2 = Tap::start(&gone, &env).await;
    let failed = post(&tap2.url(CHAT), BODY, &[]).await;
    assert_eq!(failed.status, 502);
    assert!(!String::from_utf8_lossy(&failed.body).contains("injected-SECRET"));
    tap2.span(&failed.trace_id()).await;
    tap.running.shutdown().await;
    tap2.running.shutdown().await;

    let logs = String::from_utf8_lossy(&logs.lock().unwrap()).into_owned();
    assert!(
        logs.contains("llmtap adds the upstream credential"),
        "{logs}"
    );
    assert!(!logs.contains("injected-SECRET"), "{logs}");
    assert_no_secret_on_disk(tap._tmp.path(), b"injected-SECRET");
    assert_no_secret_on_disk(tap2._tmp.path(), b"injected-SECRET");
}
