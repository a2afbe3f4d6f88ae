//! Self-test of the MLflow test harness (`tests/support/mlflow.rs`).
//!
//! Starts the shared real `mlflow server` (installing its venv on first use),
//! sends one OTLP-JSON chat trace straight to `/v1/traces` (no llmtap code
//! involved), and checks it reads back through the REST and Python helpers.
//! Also checks that `supervise.py` kills the whole process group when its
//! stdin closes, which is what stops the server when a test process dies.
//! Run with `--nocapture` to see the JSON shapes MLflow returns.

#[path = "support/mlflow.rs"]
mod mlflow;

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// The chat trace of mlflow-wire.md section 4, with the given ids.
fn example_trace(trace_id: &str, span_id: &str) -> Value {
    let attr = |k: &str, v: &str| json!({ "key": k, "value": { "stringValue": v } });
    json!({"resourceSpans": [{
        "resource": {"attributes": [attr("service.name", "llmtap")]},
        "scopeSpans": [{
            "scope": {"name": "llmtap"},
            "spans": [{
                "traceId": trace_id,
                "spanId": span_id,
                "name": "Completions",
                "kind": 3,
                "startTimeUnixNano": "1764000000000000000",
                "endTimeUnixNano": "1764000001250000000",
                "status": {"code": 1},
                "attributes": [
                    attr("mlflow.spanType", "CHAT_MODEL"),
                    attr("mlflow.spanInputs", r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}]}"#),
                    attr("mlflow.spanOutputs", r#"{"object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"Hello!"},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}"#),
                    attr("mlflow.chat.tokenUsage", r#"{"input_tokens":9,"output_tokens":3,"total_tokens":12}"#),
                    attr("mlflow.message.format", "openai"),
                    attr("mlflow.llm.model", "gpt-4o-mini"),
                    attr("user.id", "alice"),
                    attr("session.id", "sess-42"),
                    attr("mlflow.traceTag.mlflow.traceName", "Completions"),
                    attr("mlflow.traceTag.env", "prod"),
                    // Probes for how plain values come back (documented in
                    // the harness notes): a numeric-looking string and an int.
                    attr("llmtap.probe.numeric_string", "123"),
                    attr("llmtap.probe.bool_string", "true"),
                    attr("llmtap.probe.null_string", "null"),
                    attr("llmtap.probe.quoted_string", r#""quoted""#),
                    attr("llmtap.probe.array_string", "[1,2]"),
                    attr("llmtap.probe.object_string", r#"{"a":1}"#),
                    attr("llmtap.probe.plain_string", "hello"),
                    {"key": "llmtap.probe.bool", "value": {"boolValue": true}},
                    {"key": "llmtap.probe.double", "value": {"doubleValue": 1.5}},
                    {"key": "llmtap.probe.array", "value": {"arrayValue": {"values": [{"stringValue": "x"}, {"intValue": "2"}]}}},
                    {"key": "llmtap.probe.kvlist", "value": {"kvlistValue": {"values": [{"key": "k", "value": {"stringValue": "v"}}]}}},
                    {"key": "llmtap.probe.int", "value": {"intValue": "7"}},
                ],
            }],
        }],
    }]})
}

#[tokio::test]
async fn otlp_trace_round_trips_through_real_mlflow() {
    let mlflow = mlflow::shared().await;
    eprintln!(
        "mlflow at {} (python {})",
        mlflow.uri(),
        mlflow.python().display()
    );

    let (name, experiment_id) = mlflow.unique_experiment("llmtap-harness").await;
    assert_eq!(
        mlflow.experiment_id_by_name(&name).await.as_deref(),
        Some(experiment_id.as_str())
    );
    assert_eq!(
        mlflow.create_experiment(&name).await,
        experiment_id,
        "create is idempotent"
    );
    assert_eq!(
        mlflow
            .experiment_id_by_name("llmtap-no-such-experiment")
            .await,
        None
    );

    let hex_trace = format!("{:032x}", fastrand::u128(1..));
    let hex_span = format!("{:016x}", fastrand::u64(1..));
    let trace_id = format!("tr-{hex_trace}");
    assert_eq!(
        mlflow.get_trace(&trace_id).await,
        None,
        "fresh id must not exist yet"
    );

    let (status, body) = mlflow
        .post_otlp_json(&experiment_id, &example_trace(&hex_trace, &hex_span))
        .await;
    assert_eq!(status, 200, "POST /v1/traces answered {status}: {body}");

    let trace = mlflow.wait_trace(&trace_id, Duration::from_secs(30)).await;
    eprintln!(
        "get_trace -> {}",
        serde_json::to_string_pretty(&trace).unwrap()
    );
    let info = &trace["trace_info"];
    assert_eq!(info["trace_id"], trace_id);
    assert_eq!(info["state"], "OK");
    let usage: Value = serde_json::from_str(
        info["trace_metadata"]["mlflow.trace.tokenUsage"]
            .as_str()
            .unwrap_or_else(|| panic!("no token usage metadata in {info}")),
    )
    .expect("token usage metadata is JSON text");
    assert_eq!(
        usage,
        json!({"input_tokens": 9, "output_tokens": 3, "total_tokens": 12})
    );
    assert_eq!(info["trace_metadata"]["mlflow.trace.user"], "alice");
    assert_eq!(info["trace_metadata"]["mlflow.trace.session"], "sess-42");
    assert_eq!(info["tags"]["mlflow.traceName"], "Completions");
    assert_eq!(info["tags"]["env"], "prod");
    assert_eq!(info["tags"]["service.name"], "llmtap");

    let found = mlflow.search_traces(&experiment_id).await;
    eprintln!(
        "search_traces -> {}",
        serde_json::to_string_pretty(&found).unwrap()
    );
    assert_eq!(
        found.len(),
        1,
        "one trace in the fresh experiment: {found:?}"
    );
    assert_eq!(found[0]["trace_id"], trace_id);

    let missing = format!("tr-{:032x}", fastrand::u128(1..));
    let spans = mlflow.spans(&[&trace_id, &missing]).await;
    eprintln!("spans -> {}", serde_json::to_string_pretty(&spans).unwrap());
    assert_eq!(spans[&missing], Value::Null, "unknown trace maps to null");
    let spans = spans[&trace_id]
        .as_array()
        .unwrap_or_else(|| panic!("no spans for {trace_id}: {spans}"));
    assert_eq!(spans.len(), 1, "one span: {spans:?}");
    let attrs = &spans[0]["attributes"];
    assert_eq!(attrs["mlflow.spanType"], "CHAT_MODEL", "span: {}", spans[0]);
    assert_eq!(spans[0]["name"], "Completions");
    assert_eq!(attrs["mlflow.chat.tokenUsage"]["input_tokens"], 9);
    assert_eq!(attrs["mlflow.spanInputs"]["messages"][0]["content"], "Hi");

    let full = mlflow
        .get_trace_with_spans(&trace_id)
        .await
        .expect("trace with spans");
    assert_eq!(full["trace_info"]["trace_id"], trace_id);
    assert_eq!(full["spans"].as_array().map(Vec::len), Some(1), "{full}");
    assert_eq!(mlflow.get_trace_with_spans(&missing).await, None);

    // The Python SDKs are importable from the venv.
    let out = mlflow
        .run_python(
            "import os, mlflow, openai, anthropic\n\
             print(mlflow.__version__, os.environ['MLFLOW_TRACKING_URI'], os.environ['PROBE'])",
            &[("PROBE", "yes")],
        )
        .await;
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "run_python failed: {}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        stdout.trim(),
        format!("{} {} yes", mlflow::MLFLOW_VERSION, mlflow.uri())
    );

    // A Host header of 127.0.0.1:PORT (what a client built from uri() sends)
    // is accepted by MLflow's security middleware, not just localhost.
    let (status, body) = mlflow
        .request(
            "GET",
            "/health",
            &[("host", &format!("127.0.0.1:{}", mlflow.port()))],
            "",
        )
        .await;
    assert_eq!((status, &body[..]), (200, &b"OK"[..]));
}

/// `supervise.py` must take the whole process group down when its stdin
/// closes (the test process died), and remove the --cleanup dir.
#[test]
fn supervisor_kills_process_group_on_stdin_eof() {
    let dir = tempfile::tempdir().expect("temp dir");
    let work = dir.path().join("work");
    std::fs::create_dir(&work).unwrap();
    let pids = dir.path().join("pids");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/python/supervise.py");
    let shell = format!(
        "sleep 300 & echo $! > {p}.tmp; echo $$ >> {p}.tmp; mv {p}.tmp {p}; wait",
        p = pids.display()
    );
    let mut child = Command::new("python3")
        .arg(&script)
        .arg("--cleanup")
        .arg(&work)
        .arg(dir.path().join("log"))
        .args(["--", "sh", "-c", &shell])
        .stdin(Stdio::piped())
        .spawn()
        .expect("python3 is needed for the MLflow tests (apt-get install python3 python3-venv)");
    let mut stdin = child.stdin.take().unwrap();

    let start = Instant::now();
    while !pids.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the supervised shell never started"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    let pids: Vec<u32> = std::fs::read_to_string(&pids)
        .unwrap()
        .lines()
        .map(|l| l.trim().parse().unwrap())
        .collect();
    assert_eq!(pids.len(), 2);
    for pid in &pids {
        assert!(
            Path::new(&format!("/proc/{pid}")).exists(),
            "pid {pid} should be running"
        );
    }
    assert!(
        child.try_wait().unwrap().is_none(),
        "supervisor must block on stdin"
    );

    stdin.flush().unwrap();
    drop(stdin);
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "supervisor did not exit on EOF"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "supervisor exit: {status}");
    for pid in &pids {
        // The killed processes may linger as zombies for a moment until
        // their parent (or init) reaps them; a zombie is dead.
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        let state = stat.rsplit(") ").next().and_then(|s| s.chars().next());
        assert!(
            stat.is_empty() || state == Some('Z'),
            "pid {pid} survived its supervisor: {stat}"
        );
    }
    assert!(!work.exists(), "--cleanup dir should be removed");
    let log = std::fs::read_to_string(dir.path().join("log")).unwrap_or_default();
    eprintln!("supervise.py log:\n{log}");
}
