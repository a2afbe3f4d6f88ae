//! Several sinks at once, none holding another back (issue 9, item 2):
//! MLflow, a real Arize Phoenix (OTLP, GenAI conventions) and the trace
//! files; with MLflow down, Phoenix and the files still get every trace at
//! once; when MLflow comes back it gets every trace too, exactly once, from
//! its own spool. Spool on (the default) against a real `mlflow server`, and
//! spool off (memory) against a dead port.

// mlflow.rs and phoenix.rs each bring their own copy of support/venv.rs.
#![allow(clippy::duplicate_mod)]

#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/mlflow.rs"]
mod mlflow;
#[path = "support/phoenix.rs"]
mod phoenix;
#[path = "support/tap.rs"]
mod tap;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use fake_provider::{FakeProvider, Reply};
use serde_json::json;
use tap::{fixture, post, Tap};

const CHAT: &str = "/v1/chat/completions";

async fn provider() -> FakeProvider {
    let plain = fixture("openai_chat/plain.json");
    FakeProvider::start(move |_| Reply::json(200, plain.clone())).await
}

fn body(i: usize) -> Vec<u8> {
    json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": format!("call {i}")}]})
        .to_string()
        .into_bytes()
}

/// Makes `n` calls; their trace ids (`tr-...`).
async fn calls(tap: &Tap, n: usize) -> Vec<String> {
    let mut ids = Vec::new();
    for i in 0..n {
        let got = post(&tap.url(CHAT), &body(i), &[]).await;
        assert_eq!(got.status, 200);
        ids.push(got.trace_id());
    }
    ids
}

/// Trace ids (`tr-...`) in the tap's trace files.
fn in_files(tap: &Tap) -> HashSet<String> {
    tap.spans()
        .iter()
        .filter_map(|s| s["traceId"].as_str().map(|h| format!("tr-{h}")))
        .collect()
}

/// Waits until every id is in the trace files; how long that took.
async fn wait_files(tap: &Tap, ids: &[String], limit: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let have = in_files(tap);
        if ids.iter().all(|id| have.contains(id)) {
            return start.elapsed();
        }
        assert!(
            start.elapsed() < limit,
            "{} of {} traces in the files after {limit:?}",
            ids.iter().filter(|id| have.contains(*id)).count(),
            ids.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn metric(tap: &Tap, series: &str) -> f64 {
    let text = tap::get(&tap.admin_url("/metrics")).await.body;
    let text = String::from_utf8_lossy(&text);
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {series} in\n{text}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_mlflow_delays_nothing_at_phoenix_or_the_files_and_gets_everything_when_back() {
    let px = phoenix::shared().await;
    let mlflow = mlflow::Private::start().await;
    let (_, experiment) = mlflow.unique_experiment("multi-sink").await;
    mlflow.kill().await;
    let provider = provider().await;
    let tap = Tap::start(
        &provider.url(),
        &[
            ("LLMTAP_SINKS", "mlflow,otlp,file"),
            ("MLFLOW_TRACKING_URI", mlflow.uri()),
            ("MLFLOW_EXPERIMENT_ID", &experiment),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", px.uri()),
        ],
    )
    .await;

    let ids = calls(&tap, 20).await;
    let took = wait_files(&tap, &ids, Duration::from_secs(10)).await;
    eprintln!("MLflow down: all 20 traces in the files {took:?} after the last call");
    assert!(
        took < Duration::from_secs(3),
        "the files waited {took:?} for a dead MLflow"
    );
    let start = Instant::now();
    for id in &ids {
        let hex = id.trim_start_matches("tr-");
        px.wait_span("default", hex, Duration::from_secs(10)).await;
    }
    eprintln!(
        "MLflow down: all 20 traces in Phoenix {:?} later",
        start.elapsed()
    );
    assert_eq!(
        metric(&tap, "llmtap_sink_traces_exported_total{sink=\"otlp\"}").await,
        20.0
    );
    assert_eq!(
        metric(&tap, "llmtap_sink_traces_exported_total{sink=\"file\"}").await,
        20.0
    );
    assert_eq!(
        metric(&tap, "llmtap_sink_traces_exported_total{sink=\"mlflow\"}").await,
        0.0
    );
    assert_eq!(
        metric(&tap, "llmtap_sink_spool_records{sink=\"mlflow\"}").await,
        20.0,
        "MLflow's traces wait in its own spool"
    );
    assert!(metric(&tap, "llmtap_sink_export_retries_total{sink=\"mlflow\"}").await >= 1.0);
    let spool = tap.trace_dir.parent().unwrap().join("spool/sinks");
    for sink in ["mlflow", "otlp", "file"] {
        assert!(spool.join(sink).is_dir(), "no spool for {sink}");
    }

    mlflow.start_again().await;
    let start = Instant::now();
    loop {
        let have: HashSet<String> = mlflow
            .search_traces(&experiment)
            .await
            .iter()
            .filter_map(|t| t["trace_id"].as_str().map(str::to_string))
            .collect();
        if ids.iter().all(|id| have.contains(id)) {
            assert_eq!(have.len(), ids.len(), "exactly these traces, once each");
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "{} of 20 traces in MLflow 90 s after it came back",
            have.len()
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    assert_eq!(
        metric(&tap, "llmtap_sink_spool_records{sink=\"mlflow\"}").await,
        0.0
    );
    assert_eq!(in_files(&tap).len(), 20, "the files got each trace once");
    tap.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_off_a_dead_sink_does_not_hold_back_the_files() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = dead.local_addr().unwrap().port();
    drop(dead);
    let uri = format!("http://127.0.0.1:{port}");
    let provider = provider().await;
    let tap = Tap::start(
        &provider.url(),
        &[
            ("LLMTAP_SPOOL", "false"),
            ("LLMTAP_SINKS", "mlflow,file"),
            ("MLFLOW_TRACKING_URI", &uri),
            ("MLFLOW_EXPERIMENT_ID", "0"),
        ],
    )
    .await;
    let ids = calls(&tap, 10).await;
    let took = wait_files(&tap, &ids, Duration::from_secs(10)).await;
    assert!(
        took < Duration::from_secs(3),
        "the files waited {took:?} for a dead sink"
    );
    assert_eq!(
        metric(&tap, "llmtap_sink_traces_exported_total{sink=\"file\"}").await,
        10.0
    );
    assert!(metric(&tap, "llmtap_sink_export_retries_total{sink=\"mlflow\"}").await >= 1.0);
    tap.running.shutdown().await;
}
