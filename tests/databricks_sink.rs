//! The `databricks` and `databricks_table` sinks against the Databricks
//! workspace stand-in (tests/support/databricks.rs, checked against the
//! real MLflow client by its own tests): batches made by llmtap itself (a
//! fake provider behind an in-process llmtap writing OTLP-JSON files) are
//! sent straight to the sink built from the Databricks recipe's env vars,
//! and what the stand-in stored is checked as a user would check it in the
//! MLflow UI: state, previews, usage, user, the uploaded spans, feedback.

#[path = "support/databricks.rs"]
mod databricks;
#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/tap.rs"]
mod tap;

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use databricks::{Databricks, CLIENT_ID, CLIENT_SECRET, EXPERIMENT_ID, PAT, UPLOAD_HEADER};
use fake_provider::{FakeProvider, Reply};
use llmtap::sinks::databricks::config::DatabricksConfig;
use llmtap::sinks::databricks_table::config::DatabricksTableConfig;
use llmtap::sinks::{Assessment, Context, Sink, Verdict};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde_json::{json, Value};
use tap::{fixture, post, Tap};

const CHAT: &str = "/v1/chat/completions";

fn ctx() -> Context {
    Context {
        connect_timeout: Duration::from_secs(2),
        timeout: Duration::from_secs(5),
        service_name: "llmtap".into(),
    }
}

/// The recipe's env: a workspace, an experiment, a PAT; `HOME` empty so no
/// `~/.databrickscfg` is read.
fn env(
    dbx: &Databricks,
    home: &std::path::Path,
    extra: &[(&str, &str)],
) -> HashMap<String, String> {
    let mut env: HashMap<String, String> = [
        ("MLFLOW_TRACKING_URI", "databricks"),
        ("MLFLOW_EXPERIMENT_ID", EXPERIMENT_ID),
        ("DATABRICKS_TOKEN", PAT),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    env.insert("DATABRICKS_HOST".into(), dbx.host());
    env.insert("HOME".into(), home.display().to_string());
    for (k, v) in extra {
        if v.is_empty() {
            env.remove(*k);
        } else {
            env.insert(k.to_string(), v.to_string());
        }
    }
    env
}

fn sink(env: &HashMap<String, String>) -> Arc<dyn Sink> {
    let cfg = DatabricksConfig::from_env(env)
        .expect("valid config")
        .expect("MLFLOW_TRACKING_URI=databricks selects the sink");
    llmtap::sinks::databricks::build("databricks", cfg, &ctx()).expect("sink builds")
}

fn chat_body(q: &str, stream: bool) -> Vec<u8> {
    let mut v = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": q}],
        "user": "alice",
    });
    if stream {
        v["stream"] = json!(true);
        v["stream_options"] = json!({"include_usage": true});
    }
    serde_json::to_vec(&v).unwrap()
}

/// What llmtap traced for one call of each kind: (batch, ids by kind).
async fn llmtap_batch() -> (ExportTraceServiceRequest, HashMap<&'static str, String>) {
    let provider = FakeProvider::start(|seen| {
        let body = String::from_utf8_lossy(&seen.body).to_string();
        if seen.uri.ends_with("/embeddings") {
            Reply::json(200, fixture("openai_embeddings/plain.json"))
        } else if body.contains("\"stream\":true") {
            Reply::sse(&fixture("openai_chat/stream_include_usage.sse"))
        } else if body.contains("rate me") {
            Reply::json(429, fixture("openai_chat/error_429.json"))
        } else if body.contains("no usage") {
            Reply::json(200, r#"{"id":"x","choices":[{"index":0,"message":{"role":"assistant","content":"ok"}}]}"#)
        } else {
            Reply::json(200, fixture("openai_chat/plain.json"))
        }
    })
    .await;
    let tap = Tap::start(&provider.url(), &[]).await;
    let mut ids = HashMap::new();
    for (kind, path, body) in [
        ("plain", CHAT, chat_body("Capital of France?", false)),
        ("stream", CHAT, chat_body("Capital of France?", true)),
        ("error", CHAT, chat_body("rate me", false)),
        ("no_usage", CHAT, chat_body("no usage", false)),
        (
            "embeddings",
            "/v1/embeddings",
            br#"{"model":"text-embedding-3-small","input":"hello"}"#.to_vec(),
        ),
    ] {
        let got = post(&tap.url(path), &body, &[]).await;
        ids.insert(kind, got.trace_id());
    }
    for id in ids.values() {
        tap.span(id).await;
    }
    let batch = read_batch(&tap.trace_dir);
    // A graceful stop, so no background writer outlives the test's runtime.
    tap.running.shutdown().await;
    (batch, ids)
}

/// Every OTLP-JSON line under `dir`, merged into one export request.
fn read_batch(dir: &std::path::Path) -> ExportTraceServiceRequest {
    let mut out: Option<ExportTraceServiceRequest> = None;
    for f in tap::files_under(dir) {
        for line in std::fs::read_to_string(&f).unwrap().lines() {
            let req: ExportTraceServiceRequest =
                serde_json::from_str(line).expect("OTLP-JSON line");
            match &mut out {
                None => out = Some(req),
                Some(o) => {
                    let spans = req
                        .resource_spans
                        .into_iter()
                        .flat_map(|r| r.scope_spans)
                        .flat_map(|s| s.spans);
                    o.resource_spans[0].scope_spans[0].spans.extend(spans);
                }
            }
        }
    }
    out.expect("llmtap wrote traces")
}

fn no_rejections(dbx: &Databricks) {
    assert!(
        dbx.rejections().is_empty(),
        "the stand-in refused: {:?}",
        dbx.rejections()
    );
}

#[tokio::test]
async fn pat_traces_arrive_as_the_mlflow_client_sends_them() {
    let dbx = Databricks::start().await;
    let home = tempfile::tempdir().unwrap();
    let (batch, ids) = llmtap_batch().await;
    let sink = sink(&env(&dbx, home.path(), &[]));

    let attempt = sink.send(&batch).await;
    assert_eq!(attempt.verdict, Verdict::Success, "{attempt:?}");
    no_rejections(&dbx);
    assert_eq!(dbx.traces().len(), 5);

    let plain = dbx.trace(&ids["plain"]).expect("the plain call's trace");
    assert_eq!(plain.field("state"), Some("OK"));
    assert_eq!(plain.field("request_preview"), Some("Capital of France?"));
    assert!(plain
        .field("response_preview")
        .is_some_and(|p| !p.is_empty()));
    assert_eq!(plain.metadata("mlflow.trace.user"), Some("alice"));
    let usage: Value =
        serde_json::from_str(plain.metadata("mlflow.trace.tokenUsage").unwrap()).unwrap();
    assert_eq!(usage["total_tokens"], 28);
    // Databricks computes no cost: the sink sends the trace's, the sum of
    // its spans' `mlflow.llm.cost` (19 in, 9 out at the table's gpt-4o-mini rates).
    let rates = llmtap::cost::builtin().price("gpt-4o-mini").unwrap().base;
    let cost: Value =
        serde_json::from_str(plain.metadata("mlflow.trace.cost").expect("trace cost")).unwrap();
    let (input, output) = (19.0 * rates.input / 1e6, 9.0 * rates.output / 1e6);
    for (key, want) in [
        ("input_cost", input),
        ("output_cost", output),
        ("total_cost", input + output),
    ] {
        let got = cost[key].as_f64().unwrap();
        assert!((got - want).abs() < 1e-12, "{key}: {got} != {want}");
    }
    assert!(plain
        .metadata("mlflow.trace.session")
        .is_some_and(|s| !s.is_empty()));
    assert_eq!(plain.tag("mlflow.traceName"), Some("Completions"));
    let spans = plain.spans.as_ref().expect("span document uploaded");
    assert_eq!(spans["spans"][0]["name"], "Completions");
    let inputs: Value = serde_json::from_str(
        spans["spans"][0]["attributes"]["mlflow.spanInputs"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    assert_eq!(inputs["messages"][1]["content"], "Capital of France?");

    let stream = dbx.trace(&ids["stream"]).unwrap();
    assert_eq!(
        stream.field("response_preview"),
        Some("The capital of France is Paris.")
    );
    let error = dbx.trace(&ids["error"]).unwrap();
    assert_eq!(error.field("state"), Some("ERROR"));
    assert!(
        error.metadata("mlflow.trace.tokenUsage").is_none(),
        "no usage, never zero"
    );
    assert!(
        error.metadata("mlflow.trace.cost").is_none(),
        "no usage, no cost: never zero"
    );
    assert!(error
        .spans
        .as_ref()
        .unwrap()
        .to_string()
        .contains("exception"));
    assert!(dbx
        .trace(&ids["no_usage"])
        .unwrap()
        .metadata("mlflow.trace.tokenUsage")
        .is_none());
    assert_eq!(
        dbx.trace(&ids["embeddings"])
            .unwrap()
            .tag("mlflow.traceName"),
        Some("Embeddings")
    );

    // The span documents went to the signed URLs with the signed header
    // and without the workspace token; every API call carried it.
    let puts = dbx.requests_to("/signed/");
    assert_eq!(puts.len(), 5);
    for put in &puts {
        assert!(!put.authorized, "the upload must not carry Authorization");
        assert_eq!(put.headers[UPLOAD_HEADER.0], UPLOAD_HEADER.1);
    }
    assert!(dbx.requests_to("/api/").iter().all(|r| r.authorized));
}

#[tokio::test]
async fn oauth_token_expiry_mid_load_loses_nothing_and_refreshes_once() {
    let dbx = Databricks::start().await;
    let home = tempfile::tempdir().unwrap();
    let (batch, _) = llmtap_batch().await;
    let env = env(
        &dbx,
        home.path(),
        &[
            ("DATABRICKS_TOKEN", ""),
            ("DATABRICKS_CLIENT_ID", CLIENT_ID),
            ("DATABRICKS_CLIENT_SECRET", CLIENT_SECRET),
        ],
    );
    let sink = sink(&env);
    assert_eq!(sink.send(&batch).await.verdict, Verdict::Success);
    assert_eq!(dbx.token_grants(), 1, "one token for the whole batch");

    // The workspace expires the token while traces keep coming.
    dbx.expire_all_tokens();
    let (batch2, ids2) = llmtap_batch().await;
    let a = sink.send(&batch2).await;
    assert_eq!(a.verdict, Verdict::Success, "{a:?}");
    assert_eq!(dbx.token_grants(), 2, "exactly one refresh");
    assert_eq!(dbx.traces().len(), 10, "nothing lost");
    for id in ids2.values() {
        assert!(dbx.trace(id).unwrap().spans.is_some(), "{id} complete");
    }
    // The only refusals are the expired token's, each followed by success.
    let refused = dbx.rejections();
    assert!(
        refused
            .iter()
            .all(|r| r.status == 401 && r.message.contains("Token expired")),
        "{refused:?}"
    );
}

#[tokio::test]
async fn a_429_is_retried_after_the_servers_hint_and_nothing_is_sent_twice() {
    let dbx = Databricks::start().await;
    let home = tempfile::tempdir().unwrap();
    let (batch, _) = llmtap_batch().await;
    let sink = sink(&env(&dbx, home.path(), &[]));

    dbx.throttle_next(1, 7);
    let a = sink.send(&batch).await;
    assert_eq!(
        a.verdict,
        Verdict::Retry {
            after: Some(Duration::from_secs(7))
        },
        "{a:?}"
    );
    assert_eq!(a.class, "http_429");
    assert_eq!(dbx.traces().len(), 4, "the other traces went through");

    let a = sink.send(&batch).await;
    assert_eq!(a.verdict, Verdict::Success, "{a:?}");
    let traces = dbx.traces();
    assert_eq!(traces.len(), 5);
    for t in &traces {
        assert_eq!((t.starts, t.uploads), (1, 1), "{} sent once", t.trace_id);
    }
}

#[tokio::test]
async fn a_failed_upload_keeps_the_batch_and_the_resend_completes_it() {
    let dbx = Databricks::start().await;
    let home = tempfile::tempdir().unwrap();
    let (batch, _) = llmtap_batch().await;
    let sink = sink(&env(&dbx, home.path(), &[]));

    dbx.fail_next("/signed/", 503, 1);
    let a = sink.send(&batch).await;
    assert!(matches!(a.verdict, Verdict::Retry { .. }), "{a:?}");
    let orphan: Vec<_> = dbx
        .traces()
        .into_iter()
        .filter(|t| t.spans.is_none())
        .collect();
    assert_eq!(orphan.len(), 1, "one trace has its info but no spans yet");

    let a = sink.send(&batch).await;
    assert_eq!(a.verdict, Verdict::Success, "{a:?}");
    for t in dbx.traces() {
        assert!(t.spans.is_some(), "{} complete", t.trace_id);
        assert_eq!(t.uploads, 1);
    }
    let again = dbx.trace(&orphan[0].trace_id).unwrap();
    assert_eq!(again.starts, 2, "its info was sent again, harmlessly");
}

#[tokio::test]
async fn a_workspace_in_trouble_costs_one_call_not_one_per_trace() {
    let dbx = Databricks::start().await;
    let home = tempfile::tempdir().unwrap();
    let (batch, _) = llmtap_batch().await;
    let mut cfg = DatabricksConfig::from_env(&env(&dbx, home.path(), &[]))
        .unwrap()
        .unwrap();
    cfg.max_in_flight = 1;
    let sink = llmtap::sinks::databricks::build("databricks", cfg, &ctx()).unwrap();

    dbx.fail_next("/api/3.0/mlflow/traces", 503, 1);
    let a = sink.send(&batch).await;
    assert!(matches!(a.verdict, Verdict::Retry { .. }), "{a:?}");
    assert_eq!(
        dbx.requests_to("/api/3.0/mlflow/traces").len(),
        1,
        "no further trace is started after the workspace failed one"
    );
    assert_eq!(sink.send(&batch).await.verdict, Verdict::Success);
    assert_eq!(dbx.traces().len(), 5);
}

#[tokio::test]
async fn a_profile_named_by_the_tracking_uri_is_enough() {
    let dbx = Databricks::start().await;
    let home = tempfile::tempdir().unwrap();
    std::fs::write(
        home.path().join(".databrickscfg"),
        format!(
            "[DEFAULT]\nhost = https://wrong.example.com\n\n[prod]\nhost = {}\ntoken = {PAT}\n",
            dbx.host()
        ),
    )
    .unwrap();
    let (batch, ids) = llmtap_batch().await;
    let env = env(
        &dbx,
        home.path(),
        &[
            ("MLFLOW_TRACKING_URI", "databricks://prod"),
            ("DATABRICKS_HOST", ""),
            ("DATABRICKS_TOKEN", ""),
        ],
    );
    let sink = sink(&env);
    assert_eq!(sink.send(&batch).await.verdict, Verdict::Success);
    assert!(dbx.trace(&ids["plain"]).unwrap().spans.is_some());
}

#[tokio::test]
async fn an_unreachable_workspace_is_transient_and_nothing_is_lost() {
    let dbx = Databricks::start().await;
    let home = tempfile::tempdir().unwrap();
    let (batch, _) = llmtap_batch().await;
    let sink = sink(&env(&dbx, home.path(), &[]));
    dbx.stop().await;
    let a = sink.send(&batch).await;
    assert!(matches!(a.verdict, Verdict::Retry { .. }), "{a:?}");
    assert_eq!(a.class, "connect", "{a:?}");
    dbx.set_outage(true);
    dbx.restart().await;
    let a = sink.send(&batch).await;
    assert_eq!(
        a.verdict,
        Verdict::Retry {
            after: Some(Duration::from_secs(1))
        },
        "{a:?}"
    );
    dbx.set_outage(false);
    assert_eq!(sink.send(&batch).await.verdict, Verdict::Success);
    assert_eq!(dbx.traces().len(), 5);
    assert!(dbx.traces().iter().all(|t| t.spans.is_some()));
}

#[tokio::test]
async fn an_experiment_named_by_path_is_looked_up_or_created() {
    let dbx = Databricks::start().await;
    let home = tempfile::tempdir().unwrap();
    let (batch, ids) = llmtap_batch().await;
    let name = "/Users/llmtap@example.com/new-agent";
    let sink = sink(&env(
        &dbx,
        home.path(),
        &[
            ("MLFLOW_EXPERIMENT_ID", ""),
            ("MLFLOW_EXPERIMENT_NAME", name),
        ],
    ));
    assert_eq!(sink.send(&batch).await.verdict, Verdict::Success);
    let exp = dbx
        .experiments()
        .into_iter()
        .find(|e| e.name == name)
        .expect("created");
    let t = dbx.trace(&ids["plain"]).unwrap();
    assert_eq!(
        t.info["trace_location"]["mlflow_experiment"]["experiment_id"],
        exp.id
    );
    assert_eq!(
        dbx.requests_to("/api/2.0/mlflow/experiments/create").len(),
        1
    );

    // A name without a workspace path is refused up front, naming the setting.
    let bad = env(
        &dbx,
        home.path(),
        &[
            ("MLFLOW_EXPERIMENT_ID", ""),
            ("MLFLOW_EXPERIMENT_NAME", "agent"),
        ],
    );
    let errors = DatabricksConfig::from_env(&bad).unwrap_err();
    assert!(errors[0].contains("MLFLOW_EXPERIMENT_NAME"), "{errors:?}");
}

#[tokio::test]
async fn feedback_is_an_assessment_on_the_trace() {
    let dbx = Databricks::start().await;
    let home = tempfile::tempdir().unwrap();
    let (batch, ids) = llmtap_batch().await;
    let sink = sink(&env(&dbx, home.path(), &[]));
    assert_eq!(sink.send(&batch).await.verdict, Verdict::Success);
    let a = Assessment {
        trace_id: ids["plain"].clone(),
        name: "user_feedback".into(),
        source_type: "HUMAN".into(),
        source_id: "alice".into(),
        value: json!(true),
        rationale: Some("answered".into()),
        metadata: Default::default(),
    };
    let got = sink.assess(&a).await;
    assert_eq!(got.verdict, Verdict::Success, "{got:?}");
    let stored = dbx.assessments();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["trace_id"], ids["plain"]);
    assert_eq!(stored[0]["feedback"]["value"], true);
    assert_eq!(stored[0]["source"]["source_id"], "alice");
}

#[tokio::test]
async fn probe_and_errors_never_show_the_token() {
    let dbx = Databricks::start().await;
    let home = tempfile::tempdir().unwrap();
    let good = sink(&env(&dbx, home.path(), &[]));
    assert_eq!(good.probe().await, Ok(()));
    assert!(!good.describe().contains(PAT));

    let wrong = "dapi-wrong-0123456789abcdef";
    let bad = sink(&env(&dbx, home.path(), &[("DATABRICKS_TOKEN", wrong)]));
    let err = bad.probe().await.unwrap_err();
    assert!(err.contains("401"), "{err}");
    let (batch, _) = llmtap_batch().await;
    let a = bad.send(&batch).await;
    assert_eq!(
        a.verdict,
        Verdict::DontRetry,
        "a refused token is not retried forever: {a:?}"
    );
    for text in [err, a.reason, bad.describe()] {
        assert!(!text.contains(wrong) && !text.contains(PAT), "{text}");
    }
}

#[tokio::test]
async fn uc_table_rows_and_v4_trace_info() {
    let dbx = Databricks::start().await;
    let home = tempfile::tempdir().unwrap();
    let (batch, ids) = llmtap_batch().await;
    let env = env(
        &dbx,
        home.path(),
        &[("MLFLOW_TRACING_DESTINATION", "main.llmtap")],
    );
    let cfg = DatabricksTableConfig::from_env(&env)
        .unwrap()
        .expect("a UC destination");
    let sink = llmtap::sinks::databricks_table::build("uc", cfg, &ctx()).expect("sink builds");
    let a = sink.send(&batch).await;
    assert_eq!(a.verdict, Verdict::Success, "{a:?}");
    no_rejections(&dbx);

    let rows = dbx.otlp_rows();
    assert_eq!(rows.len(), 5, "one row per span");
    assert!(rows
        .iter()
        .all(|r| r.table == "main.llmtap.mlflow_experiment_trace_otel_spans"));
    let infos = dbx.v4_infos();
    assert_eq!(infos.len(), 5);
    let hex = ids["plain"].strip_prefix("tr-").unwrap();
    let plain = infos
        .iter()
        .find(|i| i["trace_id"] == hex)
        .expect("plain trace info");
    assert_eq!(plain["state"], "OK");
    assert_eq!(plain["request_preview"], "Capital of France?");
    assert_eq!(plain["trace_metadata"]["mlflow.trace_schema.version"], "4");
    assert_eq!(plain["trace_metadata"]["mlflow.trace.user"], "alice");
    let ours = rows
        .iter()
        .find(|r| llmtap::sinks::databricks::group::hex(&r.span.trace_id) == hex)
        .unwrap();
    let rid = ours
        .span
        .attributes
        .iter()
        .find(|kv| kv.key == "mlflow.traceRequestId")
        .unwrap();
    assert_eq!(
        rid.value.as_ref().unwrap().value,
        Some(
            opentelemetry_proto::tonic::common::v1::any_value::Value::StringValue(format!(
                "trace:/main.llmtap/{hex}"
            ))
        )
    );
}
