//! User feedback end to end: `POST /llmtap/v1/feedback` on llmtap's proxy
//! port becomes an assessment on the trace in a real `mlflow server`, read
//! back over MLflow's REST API and with the Python client; it waits out an
//! MLflow outage and a `kill -9` of llmtap; an id MLflow never gets ends in
//! the feedback dead-letter file, counted; bad bodies are refused with a
//! message, and nothing under `/llmtap/` ever reaches the provider. The
//! Databricks sink's feedback goes to the workspace stand-in.

#[path = "support/bin.rs"]
mod bin;
#[path = "support/databricks.rs"]
mod databricks;
#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/mlflow.rs"]
mod mlflow;
#[path = "support/tap.rs"]
mod tap;

use std::time::{Duration, Instant};

use fake_provider::{FakeProvider, Reply};
use serde_json::{json, Value};
use tap::{fixture, get, post, Tap};

const FEEDBACK: &str = "/llmtap/v1/feedback";
const WAIT: Duration = Duration::from_secs(90);

/// A provider answering every chat call like OpenAI.
async fn provider() -> FakeProvider {
    let plain = fixture("openai_chat/plain.json");
    FakeProvider::start(move |_| Reply::json(200, plain.clone())).await
}

/// One chat call through llmtap at `base`; its `x-llmtap-trace-id`.
async fn chat(base: &str) -> String {
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let got = post(
        &format!("{base}/v1/chat/completions"),
        body.to_string().as_bytes(),
        &[],
    )
    .await;
    assert_eq!(got.status, 200);
    got.trace_id()
}

/// POSTs feedback; the status and the JSON answer.
async fn send(base: &str, body: &Value) -> (u16, Value) {
    let got = post(
        &format!("{base}{FEEDBACK}"),
        body.to_string().as_bytes(),
        &[],
    )
    .await;
    let v = serde_json::from_slice(&got.body).unwrap_or(Value::Null);
    (got.status.as_u16(), v)
}

/// The value of one exact metric line (labels included), 0 if absent.
async fn metric(admin_url: &str, series: &str) -> f64 {
    let text = String::from_utf8_lossy(&get(admin_url).await.body).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Polls until `series` reaches `want`.
async fn wait_metric(admin_url: &str, series: &str, want: f64) {
    let start = Instant::now();
    loop {
        let got = metric(admin_url, series).await;
        if got >= want {
            return;
        }
        assert!(
            start.elapsed() < WAIT,
            "{series} stayed at {got}, wanted {want}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Polls MLflow until the trace carries `n` assessments; returns them.
async fn wait_assessments(mlflow: &mlflow::Mlflow, id: &str, n: usize) -> Vec<Value> {
    let start = Instant::now();
    loop {
        let got = mlflow
            .get_trace(id)
            .await
            .and_then(|t| t["trace_info"]["assessments"].as_array().cloned())
            .unwrap_or_default();
        if got.len() >= n {
            return got;
        }
        assert!(
            start.elapsed() < WAIT,
            "trace {id} has {} assessments after {WAIT:?}, wanted {n}: {got:?}",
            got.len()
        );
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
}

/// POSTs `body` as `text/plain`; the status.
async fn post_text(url: &str, body: &str) -> u16 {
    let req = http::Request::post(url)
        .header("content-type", "text/plain")
        .body(http_body_util::Full::new(bytes::Bytes::from(
            body.to_string(),
        )))
        .unwrap();
    let resp = tap::client().request(req).await.expect("POST");
    resp.status().as_u16()
}

fn named<'a>(all: &'a [Value], name: &str) -> &'a Value {
    all.iter()
        .find(|a| a["assessment_name"] == name)
        .unwrap_or_else(|| panic!("no assessment {name:?} in {all:?}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_lands_on_the_trace_with_every_value_type() {
    let mlflow = mlflow::shared().await;
    let (_, experiment) = mlflow.unique_experiment("feedback").await;
    let provider = provider().await;
    // Two sinks: MLflow takes feedback, the file sink counts it unsupported.
    let tap = Tap::start(
        &provider.url(),
        &[
            ("MLFLOW_TRACKING_URI", mlflow.uri()),
            ("MLFLOW_EXPERIMENT_ID", &experiment),
            ("LLMTAP_SINKS", "mlflow,file"),
        ],
    )
    .await;
    let base = tap.url("");
    let id = chat(&base).await;
    assert!(id.starts_with("tr-") && id.len() == 35, "{id}");
    let bodies = [
        json!({"trace_id": id, "value": true, "comment": "right answer", "user": "alice"}),
        json!({"trace_id": id, "name": "rating", "value": 0.75}),
        // The bare 32 hex digits (an OpenTelemetry trace id) work too.
        json!({"trace_id": &id[3..], "name": "label", "value": "helpful", "user": "bob"}),
        json!({"trace_id": id, "name": "detail", "value": {"score": 4, "why": "short"}}),
    ];
    for b in &bodies {
        let (status, answer) = send(&base, b).await;
        assert_eq!(status, 202, "{answer}");
        assert_eq!(answer["trace_id"], id.as_str());
        assert_eq!(answer["sinks"], json!(["mlflow"]));
    }
    let all = wait_assessments(mlflow, &id, 4).await;
    let thumbs = named(&all, "user_feedback");
    assert_eq!(thumbs["feedback"]["value"], true);
    assert_eq!(thumbs["rationale"], "right answer");
    assert_eq!(thumbs["source"]["source_type"], "HUMAN");
    assert_eq!(thumbs["source"]["source_id"], "alice");
    assert_eq!(named(&all, "rating")["feedback"]["value"], 0.75);
    assert_eq!(named(&all, "rating")["source"]["source_id"], "anonymous");
    assert_eq!(named(&all, "label")["feedback"]["value"], "helpful");
    assert_eq!(named(&all, "label")["source"]["source_id"], "bob");
    // MLflow keeps an object as a protobuf Struct: its numbers are doubles.
    assert_eq!(
        named(&all, "detail")["feedback"]["value"],
        json!({"score": 4.0, "why": "short"})
    );

    // As the Python client reads them.
    let script = format!(
        "import json, mlflow\n\
         t = mlflow.get_trace({id:?})\n\
         print(json.dumps({{a.name: [a.value, a.rationale, a.source.source_type, a.source.source_id] for a in t.info.assessments}}))\n"
    );
    let out = mlflow.run_python(&script, &[]).await;
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let py: Value = serde_json::from_str(stdout.lines().last().unwrap_or("")).unwrap();
    assert_eq!(
        py["user_feedback"],
        json!([true, "right answer", "HUMAN", "alice"])
    );
    assert_eq!(py["rating"][0], 0.75);
    assert_eq!(py["label"][0], "helpful");
    assert_eq!(py["detail"][0], json!({"score": 4.0, "why": "short"}));

    let m = tap.admin_url("/metrics");
    wait_metric(
        &m,
        r#"llmtap_feedback_total{sink="mlflow",outcome="delivered"}"#,
        4.0,
    )
    .await;
    assert_eq!(
        metric(
            &m,
            r#"llmtap_feedback_total{sink="mlflow",outcome="accepted"}"#
        )
        .await,
        4.0
    );
    assert_eq!(
        metric(&m, r#"llmtap_feedback_pending{sink="mlflow"}"#).await,
        0.0
    );
    assert_eq!(
        metric(
            &m,
            r#"llmtap_feedback_total{sink="file",outcome="unsupported"}"#
        )
        .await,
        4.0
    );
    let seen: Vec<String> = provider.seen().iter().map(|s| s.uri.clone()).collect();
    assert_eq!(seen, ["/v1/chat/completions"]);
    tap.running.shutdown().await;
}

/// MLflow is down when the call is made and when its feedback is sent;
/// llmtap is killed (-9) with both still undelivered; a new llmtap on the
/// same spool delivers the trace and the feedback once MLflow is back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_waits_out_an_outage_and_a_kill_9() {
    let mlflow = mlflow::Private::start().await;
    let (_, experiment) = mlflow.unique_experiment("feedback-outage").await;
    let provider = provider().await;
    let work = tempfile::tempdir().unwrap();
    let dir = work.path().join("llmtap");
    let env = [
        ("MLFLOW_TRACKING_URI", mlflow.uri()),
        ("MLFLOW_EXPERIMENT_ID", experiment.as_str()),
        ("LLMTAP_SPOOL_FSYNC", "always"),
    ];
    let launch = bin::Launch::DEFAULT;
    let mut first = launch.start(&provider.url(), &dir, &env).await;
    mlflow.kill().await;
    let id = chat(&first.base()).await;
    let body = json!({"trace_id": id, "value": false, "comment": "wrong", "user": "carol"});
    let (status, answer) = send(&first.base(), &body).await;
    assert_eq!(status, 202, "{answer}");
    // Accepted means stored: the item is on disk before the kill.
    let stored = tap::files_under(&dir.join("spool/feedback/mlflow"));
    assert_eq!(stored.len(), 1, "{stored:?}");
    wait_metric(
        &first.admin_url("/metrics"),
        r#"llmtap_feedback_total{sink="mlflow",outcome="accepted"}"#,
        1.0,
    )
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    first.kill9();

    let second = launch.start(&provider.url(), &dir, &env).await;
    mlflow.start_again().await;
    let all = wait_assessments(&mlflow, &id, 1).await;
    assert_eq!(all.len(), 1, "delivered once: {all:?}");
    assert_eq!(all[0]["assessment_name"], "user_feedback");
    assert_eq!(all[0]["feedback"]["value"], false);
    assert_eq!(all[0]["rationale"], "wrong");
    assert_eq!(all[0]["source"]["source_id"], "carol");
    mlflow.wait_trace(&id, WAIT).await;
    wait_metric(
        &second.admin_url("/metrics"),
        r#"llmtap_feedback_total{sink="mlflow",outcome="delivered"}"#,
        1.0,
    )
    .await;
    let start = Instant::now();
    while !tap::files_under(&dir.join("spool/feedback/mlflow")).is_empty() {
        assert!(start.elapsed() < WAIT, "the delivered item's file stays");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut second = second;
    second.stop().await;
}

/// MLflow never gets a trace with this id: after `feedback.max_wait` of 404s
/// the feedback is in the dead-letter file and counted; meanwhile it fills
/// `feedback.max_pending` (1 here) and more feedback is answered 503.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_trace_id_ends_in_the_dead_letter_file() {
    let mlflow = mlflow::shared().await;
    let (_, experiment) = mlflow.unique_experiment("feedback-unknown").await;
    let provider = provider().await;
    let tap = Tap::start(
        &provider.url(),
        &[
            ("MLFLOW_TRACKING_URI", mlflow.uri()),
            ("MLFLOW_EXPERIMENT_ID", &experiment),
            ("LLMTAP_FEEDBACK_MAX_WAIT", "2s"),
            ("LLMTAP_FEEDBACK_MAX_PENDING", "1"),
        ],
    )
    .await;
    let unknown = "tr-00000000000000000000000000c0ffee";
    let (status, answer) = send(
        &tap.url(""),
        &json!({"trace_id": unknown, "value": 1, "user": "dave"}),
    )
    .await;
    assert_eq!(status, 202, "{answer}");
    // The one pending item (retried for 2 s) fills feedback.max_pending.
    let other = json!({"trace_id": "tr-00000000000000000000000000000bad", "value": 2});
    let (status, answer) = send(&tap.url(""), &other).await;
    assert_eq!(status, 503, "{answer}");
    let message = answer["error"]["message"].as_str().unwrap();
    assert!(message.contains("feedback.max_pending"), "{message}");
    let m = tap.admin_url("/metrics");
    wait_metric(
        &m,
        r#"llmtap_feedback_total{sink="mlflow",outcome="dead_lettered"}"#,
        1.0,
    )
    .await;
    assert_eq!(
        metric(&m, r#"llmtap_feedback_pending{sink="mlflow"}"#).await,
        0.0
    );
    assert_eq!(
        metric(
            &m,
            r#"llmtap_feedback_total{sink="mlflow",outcome="over_capacity"}"#
        )
        .await,
        1.0
    );
    // Room again once it is dead-lettered.
    let (status, answer) = send(&tap.url(""), &other).await;
    assert_eq!(status, 202, "{answer}");
    let root = tap.trace_dir.parent().unwrap().to_path_buf();
    let file = root.join("dead-letter/feedback/mlflow.jsonl");
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let line: Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
    assert_eq!(line["sink"], "mlflow");
    assert_eq!(line["feedback"]["trace_id"], unknown);
    assert_eq!(line["feedback"]["user"], "dave");
    let reason = line["reason"].as_str().unwrap();
    assert!(
        reason.contains("still had no trace") && reason.contains("404"),
        "{reason}"
    );
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(&file).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
    }
    assert!(provider.seen().is_empty());
    tap.running.shutdown().await;
}

/// Bad bodies get a 4xx with a message naming the problem; other methods,
/// content types and `/llmtap/` paths are refused too; a sink with no place
/// for feedback (files) makes a good body a 501; the provider sees none of it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_feedback_is_refused_and_never_forwarded() {
    let provider = provider().await;
    let tap = Tap::start(&provider.url(), &[]).await;
    let base = tap.url("");
    let id = "tr-0123456789abcdef0123456789abcdef";
    let cases: [(&[u8], &str); 8] = [
        (b"{\"trace_id\": ", "not JSON"),
        (b"[]", "JSON object"),
        (br#"{"value": true}"#, "trace_id is required"),
        (br#"{"trace_id": "", "value": true}"#, "trace_id is empty"),
        (br#"{"trace_id": "abc", "value": true}"#, "not a trace id"),
        (
            br#"{"trace_id": "tr-0123456789abcdef0123456789abcdef", "value": [1]}"#,
            "not an array",
        ),
        (
            br#"{"trace_id": "tr-0123456789abcdef0123456789abcdef"}"#,
            "value is required",
        ),
        (
            br#"{"trace_id": "tr-0123456789abcdef0123456789abcdef", "value": 1, "comment": {}}"#,
            "comment must be a string",
        ),
    ];
    for (body, says) in cases {
        let got = post(&format!("{base}{FEEDBACK}"), body, &[]).await;
        let text = String::from_utf8_lossy(&got.body);
        assert_eq!(got.status, 400, "{text}");
        let v: Value = serde_json::from_str(&text).unwrap();
        let message = v["error"]["message"].as_str().unwrap();
        assert!(message.contains(says), "{message:?} should say {says:?}");
    }
    let big = format!(
        r#"{{"trace_id": "{id}", "value": "{}"}}"#,
        "x".repeat(70_000)
    );
    let got = post(&format!("{base}{FEEDBACK}"), big.as_bytes(), &[]).await;
    assert_eq!(got.status, 400);
    assert!(String::from_utf8_lossy(&got.body).contains("larger than"));
    let got = get(&format!("{base}{FEEDBACK}")).await;
    assert_eq!(got.status, 405);
    assert_eq!(got.headers["allow"], "POST");
    let good = json!({"trace_id": id, "value": true}).to_string();
    assert_eq!(post_text(&format!("{base}{FEEDBACK}"), &good).await, 415);
    let got = post(&format!("{base}/llmtap/v2/anything"), good.as_bytes(), &[]).await;
    assert_eq!(got.status, 404);
    let got = post(&format!("{base}{FEEDBACK}"), good.as_bytes(), &[]).await;
    assert_eq!(got.status, 501, "{}", String::from_utf8_lossy(&got.body));
    assert!(String::from_utf8_lossy(&got.body).contains("no configured sink takes feedback"));
    let m = tap.admin_url("/metrics");
    assert_eq!(
        metric(&m, r#"llmtap_feedback_total{sink="",outcome="invalid"}"#).await,
        11.0
    );
    assert_eq!(
        metric(
            &m,
            r#"llmtap_feedback_total{sink="file",outcome="unsupported"}"#
        )
        .await,
        1.0
    );
    assert!(
        provider.seen().is_empty(),
        "the provider saw llmtap's own requests"
    );
    // Everything else is still proxied.
    chat(&base).await;
    assert_eq!(provider.seen().len(), 1);
    tap.running.shutdown().await;
}

/// On Databricks (the workspace stand-in, which validates the body as the
/// real API does) feedback sent right after the call — typically before its
/// trace is delivered, so the first answers may be 404 — ends as an
/// assessment on the trace.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_reaches_databricks_as_an_assessment() {
    let dbx = databricks::Databricks::start().await;
    let home = tempfile::tempdir().unwrap();
    let provider = provider().await;
    let host = dbx.host();
    let env = [
        ("MLFLOW_TRACKING_URI", "databricks"),
        ("DATABRICKS_HOST", host.as_str()),
        ("MLFLOW_EXPERIMENT_ID", databricks::EXPERIMENT_ID),
        ("HOME", home.path().to_str().unwrap()),
        ("DATABRICKS_TOKEN", databricks::PAT),
    ];
    let tap = Tap::start(&provider.url(), &env).await;
    let base = tap.url("");
    let id = chat(&base).await;
    let body =
        json!({"trace_id": id, "name": "thumbs", "value": "up", "comment": "ok", "user": "erin"});
    let (status, answer) = send(&base, &body).await;
    assert_eq!(status, 202, "{answer}");
    let start = Instant::now();
    let stored = loop {
        let got = dbx.assessments();
        if !got.is_empty() {
            break got;
        }
        assert!(start.elapsed() < WAIT, "no assessment reached the stand-in");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(stored.len(), 1, "{stored:?}");
    let a = &stored[0];
    assert_eq!(a["trace_id"], id.as_str());
    assert_eq!(a["assessment_name"], "thumbs");
    assert_eq!(a["feedback"]["value"], "up");
    assert_eq!(a["rationale"], "ok");
    assert_eq!(a["source"]["source_type"], "HUMAN");
    assert_eq!(a["source"]["source_id"], "erin");
    // The only refusals: "no such trace" while it was still on its way.
    for r in dbx.rejections() {
        assert!(
            r.status == 404 && r.message.contains("RESOURCE_DOES_NOT_EXIST"),
            "{r:?}"
        );
    }
    tap.running.shutdown().await;
}
