//! The MLflow sink against a scripted OTLP collector: the wire format
//! (protobuf, gzip, experiment header, auth), retries on transient answers,
//! and what happens to a batch the server refuses.

#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/tap.rs"]
mod tap;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use fake_provider::{FakeProvider, Reply, Seen};
use llmtap::config::Config;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use tap::{fixture, post, Tap};

const CHAT: &str = "/v1/chat/completions";

/// A collector answering `/v1/traces` with the scripted statuses in turn (then 200).
async fn collector(statuses: Vec<u16>) -> (FakeProvider, Arc<Mutex<Vec<Seen>>>) {
    let script = Arc::new(Mutex::new(statuses.into_iter()));
    let traces = Arc::new(Mutex::new(Vec::new()));
    let t = traces.clone();
    let c = FakeProvider::start(move |seen| {
        if seen.uri.ends_with("/v1/traces") {
            t.lock().unwrap().push(seen.clone());
            let status = script.lock().unwrap().next().unwrap_or(200);
            return Reply::json(
                status,
                if status == 200 {
                    ""
                } else {
                    "{\"error_code\":\"X\"}"
                },
            )
            .header("content-type", "application/x-protobuf");
        }
        Reply::json(404, "{}")
    })
    .await;
    (c, traces)
}

fn decode(seen: &Seen) -> ExportTraceServiceRequest {
    assert_eq!(seen.headers["content-type"], "application/x-protobuf");
    assert_eq!(seen.headers["content-encoding"], "gzip");
    tap::otlp_request(&seen.body)
}

/// The number of spans in each export the collector has seen, in order.
fn batch_sizes(traces: &Mutex<Vec<Seen>>) -> Vec<usize> {
    traces
        .lock()
        .unwrap()
        .iter()
        .map(|s| decode(s).resource_spans[0].scope_spans[0].spans.len())
        .collect()
}

async fn provider() -> FakeProvider {
    let plain = fixture("openai_chat/plain.json");
    FakeProvider::start(move |_| Reply::json(200, plain.clone())).await
}

/// A loopback URL where nothing listens: a tracking server that is down.
fn dead_uri() -> String {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    format!("http://{}", closed.local_addr().unwrap())
}

/// llmtap in front of `provider`, exporting to the tracking server at `sink`
/// (experiment 1), with `extra` env and `tweak` on its config.
async fn exporting_to(
    provider: &FakeProvider,
    sink: &str,
    extra: &[(&str, &str)],
    tweak: impl FnOnce(&mut Config),
) -> Tap {
    let mut env = vec![("MLFLOW_TRACKING_URI", sink), ("MLFLOW_EXPERIMENT_ID", "1")];
    env.extend_from_slice(extra);
    Tap::start_with(&provider.url(), &env, tweak).await
}

/// Makes `n` chat calls, each answered 200.
async fn served_calls(tap: &Tap, n: usize) {
    for _ in 0..n {
        assert_eq!(post(&tap.url(CHAT), b"{}", &[]).await.status, 200);
    }
}

async fn wait_for(what: &str, mut ok: impl FnMut() -> bool) {
    for _ in 0..300 {
        if ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("timed out waiting for {what}");
}

#[tokio::test]
async fn spans_go_out_as_gzip_protobuf_with_experiment_and_bearer_auth() {
    let (collector, traces) = collector(vec![]).await;
    let provider = provider().await;
    let tap = Tap::start(
        &provider.url(),
        &[
            ("MLFLOW_TRACKING_URI", &collector.url()),
            ("MLFLOW_EXPERIMENT_ID", "42"),
            ("MLFLOW_TRACKING_TOKEN", "mlflow-token-xyz"),
            ("LLMTAP_SERVICE_NAME", "agent-7"),
            // MLflow gets service.name only when asked (autolog traces have none).
            ("LLMTAP_MLFLOW_SERVICE_NAME_TAG", "true"),
        ],
    )
    .await;
    let id = post(
        &tap.url(CHAT),
        b"{\"model\":\"gpt-4o-mini\",\"messages\":[]}",
        &[],
    )
    .await
    .trace_id();
    wait_for("an export", || !traces.lock().unwrap().is_empty()).await;
    let seen = traces.lock().unwrap()[0].clone();
    assert_eq!(seen.headers["x-mlflow-experiment-id"], "42");
    assert_eq!(seen.headers["authorization"], "Bearer mlflow-token-xyz");
    let req = decode(&seen);
    let rs = &req.resource_spans[0];
    let service = &rs.resource.as_ref().unwrap().attributes[0];
    assert_eq!(service.key, "service.name");
    assert_eq!(
        format!("{:?}", service.value),
        format!(
            "{:?}",
            Some(opentelemetry_proto::tonic::common::v1::AnyValue {
                value: Some(
                    opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(
                        "agent-7".into()
                    )
                )
            })
        )
    );
    let span = &rs.scope_spans[0].spans[0];
    let hex: String = span.trace_id.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(format!("tr-{hex}"), id);
    assert_eq!(span.name, "Completions");
    assert!(span.parent_span_id.is_empty(), "a root span");
    assert!(span.end_time_unix_nano >= span.start_time_unix_nano);
}

#[tokio::test]
async fn basic_auth_when_username_and_password_are_set() {
    let (collector, traces) = collector(vec![]).await;
    let provider = provider().await;
    let tap = exporting_to(
        &provider,
        &collector.url(),
        &[
            ("MLFLOW_TRACKING_USERNAME", "alice"),
            ("MLFLOW_TRACKING_PASSWORD", "pw"),
        ],
        |_| {},
    )
    .await;
    post(&tap.url(CHAT), b"{}", &[]).await;
    wait_for("an export", || !traces.lock().unwrap().is_empty()).await;
    // base64("alice:pw")
    assert_eq!(
        traces.lock().unwrap()[0].headers["authorization"],
        "Basic YWxpY2U6cHc="
    );
}

#[tokio::test]
async fn transient_failures_are_retried_until_accepted() {
    let (collector, traces) = collector(vec![503, 429, 500]).await;
    let provider = provider().await;
    let tap = exporting_to(&provider, &collector.url(), &[], |_| {}).await;
    let id = post(&tap.url(CHAT), b"{}", &[]).await.trace_id();
    wait_for("four attempts", || traces.lock().unwrap().len() >= 4).await;
    let m = &tap.running.metrics;
    wait_for("the success to be counted", || {
        m.render().contains("llmtap_traces_exported_total 1")
    })
    .await;
    let text = m.render();
    assert!(
        text.contains("llmtap_trace_export_retries_total 3")
            && text.contains("llmtap_trace_export_retries_by_reason_total{reason=\"http_5xx\"} 2")
            && text.contains("llmtap_trace_export_retries_by_reason_total{reason=\"http_429\"} 1"),
        "{text}"
    );
    // Every attempt carried the same span: MLflow's upsert keeps one trace.
    let ids: Vec<Vec<u8>> = traces
        .lock()
        .unwrap()
        .iter()
        .map(|s| {
            decode(s).resource_spans[0].scope_spans[0].spans[0]
                .trace_id
                .clone()
        })
        .collect();
    assert!(ids.windows(2).all(|w| w[0] == w[1]));
    let hex: String = ids[0].iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(format!("tr-{hex}"), id);
}

#[tokio::test]
async fn a_refused_batch_goes_to_the_dead_letter_file_not_retried() {
    let (collector, traces) = collector(vec![400]).await;
    let provider = provider().await;
    let tap = exporting_to(&provider, &collector.url(), &[], |_| {}).await;
    let id = post(&tap.url(CHAT), b"{}", &[]).await.trace_id();
    let m = tap.running.metrics.clone();
    wait_for("the refusal to be counted", || {
        m.render().contains("llmtap_traces_dead_lettered_total 1")
    })
    .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(traces.lock().unwrap().len(), 1, "not retried");
    let file = tap
        .trace_dir
        .parent()
        .unwrap()
        .join("dead-letter/dead-letter.jsonl");
    let line: serde_json::Value = serde_json::from_str(
        std::fs::read_to_string(&file)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    assert!(
        line["reason"].as_str().unwrap().contains("HTTP 400"),
        "{line}"
    );
    assert_eq!(
        line["request"]["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"],
        id[3..]
    );
    // The proxy keeps serving and later traces still go out.
    post(&tap.url(CHAT), b"{}", &[]).await;
    wait_for("the next export", || {
        m.render().contains("llmtap_traces_exported_total 1")
    })
    .await;
    assert_eq!(m.dropped_count("rejected"), 0, "nothing silently dropped");
}

#[tokio::test]
async fn a_batch_too_large_for_the_sink_is_sent_in_halves() {
    let (collector, traces) = collector(vec![413]).await;
    let provider = provider().await;
    let tap = exporting_to(&provider, &collector.url(), &[], |c| {
        c.export.batch_max_spans = 2;
        c.export.batch_interval = Duration::from_secs(30);
    })
    .await;
    post(&tap.url(CHAT), b"{}", &[]).await;
    post(&tap.url(CHAT), b"{}", &[]).await;
    let m = tap.running.metrics.clone();
    wait_for("both halves exported", || {
        m.render().contains("llmtap_traces_exported_total 2")
    })
    .await;
    let sizes = batch_sizes(&traces);
    assert_eq!(sizes, vec![2, 1, 1]);
}

#[tokio::test]
async fn a_dead_tracking_server_never_slows_the_proxy() {
    let dead = dead_uri();
    let provider = provider().await;
    let tap = Tap::start(
        &provider.url(),
        &[
            ("MLFLOW_TRACKING_URI", &dead),
            ("MLFLOW_EXPERIMENT_NAME", "x"),
        ],
    )
    .await;
    for _ in 0..20 {
        let got = post(&tap.url(CHAT), b"{}", &[]).await;
        assert_eq!(got.status, 200);
    }
    let m = tap.running.metrics.clone();
    wait_for("retries", || {
        m.render().contains("llmtap_trace_export_retries_total")
            && !m.render().contains("llmtap_trace_export_retries_total 0")
    })
    .await;
    assert_eq!(tap::get(&tap.admin_url("/readyz")).await.status, 503);
}

#[tokio::test]
async fn with_the_spool_a_dead_sink_drops_nothing() {
    let dead = dead_uri();
    let provider = provider().await;
    let tap = exporting_to(&provider, &dead, &[], |c| {
        c.export.queue_capacity = 2;
        c.export.batch_max_spans = 1;
    })
    .await;
    served_calls(&tap, 30).await;
    let m = tap.running.metrics.clone();
    wait_for("30 traces in the spool", || {
        m.render().contains("llmtap_spool_records_written_total 30")
    })
    .await;
    let text = m.render();
    assert!(text.contains("llmtap_spool_records 30"), "{text}");
    for reason in ["queue_full", "spool_full", "export_failed", "rejected"] {
        assert_eq!(m.dropped_count(reason), 0, "{reason}");
    }
}

/// With the spool off nothing touches the disk but the trace files: the
/// exchanges go through memory to the parse workers, every call is traced.
#[tokio::test]
async fn without_the_spool_traces_go_through_memory() {
    let provider = provider().await;
    let tap = Tap::start(&provider.url(), &[("LLMTAP_SPOOL", "false")]).await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(post(&tap.url(CHAT), b"{}", &[]).await.trace_id());
    }
    for id in &ids {
        tap.span(id).await;
    }
    assert_eq!(tap.spans().len(), 10, "one span per call");
    let text = tap.running.metrics.render();
    assert!(
        !text.contains("llmtap_journal_records") && !text.contains("llmtap_spool_records"),
        "no journal or spool with the spool off:\n{text}"
    );
}

#[tokio::test]
async fn a_full_queue_drops_traces_not_calls() {
    let dead = dead_uri();
    let provider = provider().await;
    // Without the spool, memory is all there is.
    let tap = exporting_to(&provider, &dead, &[("LLMTAP_SPOOL", "false")], |c| {
        c.export.queue_capacity = 2;
        c.export.batch_max_spans = 1;
        c.export.retry_initial = Duration::from_secs(30);
    })
    .await;
    served_calls(&tap, 30).await;
    let m = tap.running.metrics.clone();
    wait_for("drops", || m.dropped_count("queue_full") > 0).await;
    let text = m.render();
    assert!(
        text.contains("llmtap_requests_total{api=\"chat_completions\",status=\"200\"} 30"),
        "{text}"
    );
}

#[tokio::test]
async fn shutdown_with_a_dead_sink_leaves_traces_spooled_without_waiting_out_the_grace() {
    let dead = dead_uri();
    let provider = provider().await;
    let tap = exporting_to(&provider, &dead, &[], |c| {
        c.shutdown_grace = Duration::from_secs(60)
    })
    .await;
    for _ in 0..5 {
        post(&tap.url(CHAT), b"{}", &[]).await;
    }
    let tap::Tap {
        running,
        trace_dir,
        _tmp: keep,
    } = tap;
    let started = std::time::Instant::now();
    running.shutdown().await;
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}: the grace period was waited out",
        started.elapsed()
    );
    // The traces are still on disk for the next start.
    let spool_dir = trace_dir.parent().unwrap().join("spool");
    let settings = llmtap::config::SpoolSettings {
        dir: spool_dir,
        fsync_interval: None,
        max_bytes: 1 << 30,
        segment_bytes: 1 << 20,
        ready_threshold: 0.8,
        max_hold: Duration::from_secs(2),
    };
    let spool = llmtap::pipeline::spooled::open(&settings).unwrap();
    assert_eq!(spool.stats().records_pending, 5);
    drop(keep);
}

/// A span with trace id `[n; 16]`.
fn span(n: u8) -> opentelemetry_proto::tonic::trace::v1::Span {
    tap::otlp_span(n)
}

/// `llmtap replay` of a spool directory acknowledges exactly what was
/// delivered: a batch split in halves (413) whose first half is accepted and
/// second refused leaves the second half, and only it, in the spool.
#[tokio::test]
async fn replaying_a_spool_acks_only_the_spans_delivered() {
    use prost::Message;
    // 413 for the whole batch, 200 for its first half, 503 for the second.
    let (collector, traces) = collector(vec![413, 200, 503]).await;
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = tap::config(
        "http://127.0.0.1:1",
        &[
            ("MLFLOW_TRACKING_URI", &collector.url()),
            ("MLFLOW_EXPERIMENT_ID", "1"),
        ],
        &tmp.path().join("traces"),
    );
    cfg.export.batch_max_spans = 4;
    cfg.export.max_attempts = 1;
    let settings = cfg.spool.clone().unwrap();
    {
        let mut spool = llmtap::pipeline::spooled::open(&settings).unwrap();
        for n in 1..=4 {
            spool.append(&span(n).encode_to_vec()).unwrap();
        }
        spool.flush().unwrap();
    }
    let report = llmtap::pipeline::replay::replay(&cfg, std::slice::from_ref(&settings.dir))
        .await
        .unwrap();
    assert_eq!(
        (report.spans, report.exported, report.kept, report.dropped),
        (4, 2, 2, 0),
        "{report:?}"
    );
    let sizes = batch_sizes(&traces);
    assert_eq!(sizes, vec![4, 2, 2]);
    let mut spool = llmtap::pipeline::spooled::open(&settings).unwrap();
    assert_eq!(spool.stats().records_pending, 2, "the refused half stays");
    let left: Vec<Vec<u8>> = spool
        .next_batch(10, 1 << 20)
        .unwrap()
        .into_iter()
        .map(|(_, payload)| {
            opentelemetry_proto::tonic::trace::v1::Span::decode(payload.as_slice())
                .unwrap()
                .trace_id
        })
        .collect();
    assert_eq!(left, vec![vec![3u8; 16], vec![4u8; 16]]);
}

/// Without a usable spool — switched off, or its directory cannot be opened
/// — traces live in memory only: a dead sink is retried `export.max_attempts`
/// times, then the batch is dropped and counted, never retried for ever.
#[tokio::test]
async fn without_a_spool_a_dead_sink_is_given_up_after_max_attempts_and_counted() {
    let dead = dead_uri();
    let provider = provider().await;
    let not_a_dir = tempfile::NamedTempFile::new().unwrap();
    let not_a_dir = not_a_dir.path().display().to_string();
    for spool in [
        ("LLMTAP_SPOOL", "false"),
        ("LLMTAP_SPOOL_DIR", not_a_dir.as_str()),
    ] {
        let tap = exporting_to(&provider, &dead, &[spool], |c| c.export.max_attempts = 3).await;
        served_calls(&tap, 2).await;
        let m = tap.running.metrics.clone();
        wait_for("the drops", || m.dropped_count("export_failed") == 2).await;
        let text = m.render();
        assert!(
            text.contains("llmtap_traces_dropped_total{reason=\"export_failed\"} 2"),
            "{spool:?}: {text}"
        );
        // Two attempts retried, the third given up on, per batch.
        let retries = text
            .lines()
            .find_map(|l| l.strip_prefix("llmtap_trace_export_retries_total "))
            .unwrap();
        assert!(
            ["2", "4"].contains(&retries),
            "{spool:?}: {retries} retries"
        );
        assert!(!text.contains("llmtap_spool_records"), "{spool:?}: {text}");
        tap.running.shutdown().await;
    }
}

/// Without the spool, what the shutdown grace period leaves undelivered —
/// the batch being retried and the spans still queued — is counted as
/// dropped (`reason="shutdown"`), not lost silently.
#[tokio::test]
async fn without_the_spool_shutdown_counts_what_the_grace_period_leaves() {
    let dead = dead_uri();
    let provider = provider().await;
    let tap = exporting_to(&provider, &dead, &[("LLMTAP_SPOOL", "false")], |c| {
        c.export.batch_max_spans = 1;
        c.export.retry_initial = Duration::from_secs(30);
        c.export.retry_max = Duration::from_secs(30);
        c.shutdown_grace = Duration::from_millis(500);
    })
    .await;
    served_calls(&tap, 3).await;
    let m = tap.running.metrics.clone();
    wait_for("one batch retried, two spans queued", || {
        let text = m.render();
        text.contains("llmtap_trace_export_retries_total 1")
            && text.contains("llmtap_export_queue_depth 2")
    })
    .await;
    tap.running.shutdown().await;
    assert_eq!(m.dropped_count("shutdown"), 3);
    assert!(m
        .render()
        .contains("llmtap_traces_dropped_total{reason=\"shutdown\"} 3"));
}

/// `/readyz` probes the tracking server at most once a second: a burst of
/// concurrent hits makes one `/health` call, and a burst after that second
/// makes one more.
#[tokio::test]
async fn readyz_bursts_share_one_probe_of_the_tracking_server() {
    let health = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let h = health.clone();
    let server = FakeProvider::start(move |seen| {
        if seen.uri.ends_with("/health") {
            h.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            return Reply::json(200, "OK");
        }
        Reply::json(200, "{}")
    })
    .await;
    let provider = provider().await;
    let tap = exporting_to(&provider, &server.url(), &[], |_| {}).await;
    let burst = || async {
        let hits = (0..20).map(|_| {
            let url = tap.admin_url("/readyz");
            async move { tap::get(&url).await }
        });
        for got in futures_util::future::join_all(hits).await {
            assert_eq!(got.status, 200, "{:?}", got.body);
        }
    };
    burst().await;
    assert_eq!(health.load(std::sync::atomic::Ordering::SeqCst), 1);
    tokio::time::sleep(llmtap::admin::PROBE_TTL + Duration::from_millis(100)).await;
    burst().await;
    assert_eq!(health.load(std::sync::atomic::Ordering::SeqCst), 2);
}

/// A shutdown that interrupts a batch keeps only its undelivered spans in
/// the spool: the half the sink accepted is acknowledged, not sent again.
#[tokio::test]
async fn shutdown_mid_batch_keeps_only_the_undelivered_spans_spooled() {
    // 413 for the batch of 4, 200 for its first half, then 503 for ever.
    let mut script = vec![413, 200];
    script.extend([503; 1000]);
    let (collector, _traces) = collector(script).await;
    let provider = provider().await;
    let tap = exporting_to(&provider, &collector.url(), &[], |c| {
        c.export.batch_max_spans = 4;
        c.export.batch_interval = Duration::from_secs(30);
    })
    .await;
    served_calls(&tap, 4).await;
    let m = tap.running.metrics.clone();
    wait_for("the second half retried", || {
        let text = m.render();
        text.contains("llmtap_traces_exported_total 2")
            && !text.contains("llmtap_trace_export_retries_total 0")
    })
    .await;
    let tap::Tap {
        running,
        trace_dir,
        _tmp: keep,
    } = tap;
    running.shutdown().await;
    // The same spool directory the tap used.
    let settings = tap::config("http://x", &[], &trace_dir).spool.unwrap();
    let spool = llmtap::pipeline::spooled::open(&settings).unwrap();
    assert_eq!(spool.stats().records_pending, 2, "only the refused half");
    drop(keep);
}
