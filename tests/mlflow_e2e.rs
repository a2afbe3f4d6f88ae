//! End to end against a real `mlflow server` (installed by the test setup):
//! the official OpenAI Python SDK talks to llmtap, llmtap to a fake provider,
//! and every call must appear in MLflow as a trace with the right state,
//! usage, previews, span type and name — and no API key anywhere.

#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/mlflow.rs"]
mod mlflow;
#[path = "support/tap.rs"]
mod tap;

use std::time::Duration;

use fake_provider::{FakeProvider, Reply};
use serde_json::{json, Value};
use tap::{fixture, post, Tap};

const SECRET: &str = "sk-e2e-SECRET-9f8e7d6c5b4a";
const WAIT: Duration = Duration::from_secs(60);

/// A provider that answers like OpenAI: streams when asked, 401 for a bad model.
async fn provider() -> FakeProvider {
    let plain = fixture("openai_chat/plain.json");
    let stream = fixture("openai_chat/stream_include_usage.sse");
    let unauthorized = fixture("openai_chat/error_401.json");
    FakeProvider::start(move |seen| {
        let req: Value = serde_json::from_slice(&seen.body).unwrap_or(Value::Null);
        if req["model"] == "bad-model" {
            Reply::json(401, unauthorized.clone())
        } else if req["stream"] == true {
            Reply::sse(&stream)
        } else {
            Reply::json(200, plain.clone())
        }
    })
    .await
}

async fn tap_for(mlflow: &mlflow::Mlflow, provider: &FakeProvider, experiment: &str) -> Tap {
    Tap::start(
        &provider.url(),
        &[
            ("MLFLOW_TRACKING_URI", mlflow.uri()),
            ("MLFLOW_EXPERIMENT_NAME", experiment),
        ],
    )
    .await
}

fn usage(trace: &Value) -> Value {
    let text = trace["trace_info"]["trace_metadata"]["mlflow.trace.tokenUsage"]
        .as_str()
        .unwrap_or_else(|| panic!("no token usage in {trace}"));
    serde_json::from_str(text).unwrap()
}

const SDK_SCRIPT: &str = r#"
import json, os, sys
from openai import OpenAI
client = OpenAI(base_url=os.environ["LLMTAP_BASE_URL"], api_key=os.environ["OPENAI_API_KEY"], max_retries=0)
messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Capital of France?"}]
out = {}

raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages, user="alice")
c = raw.parse()
out["plain"] = {"trace": raw.headers.get("x-llmtap-trace-id"), "id": c.id, "content": c.choices[0].message.content,
                "usage": [c.usage.prompt_tokens, c.usage.completion_tokens, c.usage.total_tokens]}

raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages, stream=True,
                                                        stream_options={"include_usage": True})
text, usage = "", None
for chunk in raw.parse():
    if chunk.choices and chunk.choices[0].delta.content:
        text += chunk.choices[0].delta.content
    if chunk.usage:
        usage = [chunk.usage.prompt_tokens, chunk.usage.completion_tokens, chunk.usage.total_tokens]
out["stream"] = {"trace": raw.headers.get("x-llmtap-trace-id"), "content": text, "usage": usage}

try:
    client.chat.completions.create(model="bad-model", messages=messages)
    out["error"] = {"raised": False}
except Exception as e:
    out["error"] = {"raised": True, "status": getattr(e, "status_code", None), "message": str(e),
                    "trace": e.response.headers.get("x-llmtap-trace-id")}
print(json.dumps(out))
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openai_sdk_calls_land_in_mlflow_as_autolog_shaped_traces() {
    let mlflow = mlflow::shared().await;
    let provider = provider().await;
    let tap = tap_for(mlflow, &provider, "e2e-openai-sdk").await;

    let base = tap.url("/v1");
    let out = mlflow
        .run_python(
            SDK_SCRIPT,
            &[("LLMTAP_BASE_URL", &base), ("OPENAI_API_KEY", SECRET)],
        )
        .await;
    assert!(
        out.status.success(),
        "OpenAI SDK script failed:\n{}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let got: Value = serde_json::from_slice(&out.stdout).expect("script prints JSON");

    // What the SDK saw is what the provider sent.
    assert_eq!(got["plain"]["id"], "chatcmpl-9nR6pLaInJsOnReSpOnSe00000abc");
    assert_eq!(
        got["plain"]["content"],
        "Hello! How can I assist you today?"
    );
    assert_eq!(got["plain"]["usage"], json!([19, 9, 28]));
    assert_eq!(got["stream"]["content"], "The capital of France is Paris.");
    assert_eq!(got["stream"]["usage"], json!([1342, 8, 1350]));
    assert_eq!(got["error"]["raised"], true);
    assert_eq!(got["error"]["status"], 401);
    assert_eq!(
        provider.seen()[0].headers["authorization"],
        format!("Bearer {SECRET}").as_str()
    );

    let plain_id = got["plain"]["trace"]
        .as_str()
        .expect("plain trace id header");
    let stream_id = got["stream"]["trace"]
        .as_str()
        .expect("stream trace id header");
    let error_id = got["error"]["trace"]
        .as_str()
        .expect("error trace id header");

    // The header's id is the id MLflow stores.
    let plain = mlflow.wait_trace(plain_id, WAIT).await;
    let info = &plain["trace_info"];
    assert_eq!(info["trace_id"], plain_id);
    assert_eq!(info["state"], "OK");
    // Summed once (gen_ai.usage.* does not double it); cached tokens as reported.
    assert_eq!(
        usage(&plain),
        json!({"input_tokens": 19, "output_tokens": 9, "total_tokens": 28, "cache_read_input_tokens": 0})
    );
    assert_eq!(info["request_preview"], "Capital of France?");
    assert_eq!(
        info["response_preview"],
        "Hello! How can I assist you today?"
    );
    assert_eq!(info["tags"]["mlflow.traceName"], "Completions");
    assert_eq!(
        info["tags"].get("service.name"),
        None,
        "service.name is opt-in for MLflow (context.mlflow_service_name_tag)"
    );
    assert_eq!(info["trace_metadata"]["mlflow.trace.user"], "alice");
    let experiment = mlflow
        .experiment_id_by_name("e2e-openai-sdk")
        .await
        .expect("experiment created");
    assert_eq!(
        info["trace_location"]["mlflow_experiment"]["experiment_id"],
        experiment.as_str()
    );

    let stream = mlflow.wait_trace(stream_id, WAIT).await;
    assert_eq!(stream["trace_info"]["state"], "OK");
    assert_eq!(
        usage(&stream),
        json!({"input_tokens": 1342, "output_tokens": 8, "total_tokens": 1350, "cache_read_input_tokens": 1280})
    );
    assert_eq!(
        stream["trace_info"]["response_preview"],
        "The capital of France is Paris."
    );

    let error = mlflow.wait_trace(error_id, WAIT).await;
    assert_eq!(error["trace_info"]["state"], "ERROR");
    assert!(
        error["trace_info"]["trace_metadata"]
            .get("mlflow.trace.tokenUsage")
            .is_none(),
        "no usage, never zero"
    );

    // The spans as the MLflow Python client reads them.
    let spans = mlflow.spans(&[plain_id, stream_id, error_id]).await;
    for id in [plain_id, stream_id, error_id] {
        let list = spans[id]
            .as_array()
            .unwrap_or_else(|| panic!("no spans for {id}: {spans}"));
        assert_eq!(list.len(), 1, "one root span per call");
        let span = &list[0];
        assert_eq!(span["name"], "Completions");
        assert_eq!(span["span_type"], "CHAT_MODEL");
        assert_eq!(span["parent_span_id"], Value::Null);
        assert_eq!(span["attributes"]["mlflow.message.format"], "openai");
        assert_eq!(
            span["attributes"]["mlflow.spanInputs"]["messages"][1]["content"],
            "Capital of France?"
        );
    }
    let stream_span = &spans[stream_id][0];
    assert_eq!(
        stream_span["attributes"]["mlflow.spanOutputs"]["choices"][0]["message"]["content"],
        "The capital of France is Paris."
    );
    assert_eq!(
        stream_span["attributes"]["mlflow.llm.model"],
        "gpt-4o-mini-2024-07-18"
    );
    let error_span = &spans[error_id][0];
    assert_eq!(error_span["status"]["code"], "STATUS_CODE_ERROR");
    assert!(
        error_span["events"].to_string().contains("exception"),
        "{error_span}"
    );

    // No credential anywhere MLflow stored.
    for id in [plain_id, stream_id, error_id] {
        let whole = mlflow.get_trace_with_spans(id).await.unwrap().to_string();
        assert!(!whole.contains(SECRET), "API key leaked into trace {id}");
    }
    assert!(!spans.to_string().contains(SECRET));
    tap.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_call_of_a_burst_is_one_trace_and_the_experiment_id_is_honoured() {
    let mlflow = mlflow::shared().await;
    let (_, experiment) = mlflow.unique_experiment("e2e-burst").await;
    let provider = provider().await;
    let tap = Tap::start(
        &provider.url(),
        &[
            ("MLFLOW_TRACKING_URI", mlflow.uri()),
            ("MLFLOW_EXPERIMENT_ID", &experiment),
        ],
    )
    .await;
    let request = serde_json::to_vec(&json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}], "stream": true})).unwrap();
    let mut calls = Vec::new();
    for _ in 0..40 {
        let url = tap.url("/v1/chat/completions");
        let request = request.clone();
        calls.push(tokio::spawn(async move {
            post(&url, &request, &[]).await.trace_id()
        }));
    }
    let mut ids = Vec::new();
    for c in calls {
        ids.push(c.await.unwrap());
    }
    let deadline = std::time::Instant::now() + WAIT;
    let found = loop {
        let found = mlflow.search_traces(&experiment).await;
        if found.len() >= ids.len() || std::time::Instant::now() > deadline {
            break found;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    };
    let mut stored: Vec<String> = found
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap().to_string())
        .collect();
    stored.sort();
    ids.sort();
    assert_eq!(stored, ids, "exactly one trace per call");
    assert!(found.iter().all(|t| t["state"] == "OK"));
    let m = tap::get(&tap.admin_url("/metrics")).await;
    assert!(String::from_utf8_lossy(&m.body).contains("llmtap_traces_exported_total 40"));
    assert_eq!(tap::get(&tap.admin_url("/readyz")).await.status, 200);
    tap.running.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replaying_trace_files_twice_gives_each_trace_once() {
    let mlflow = mlflow::shared().await;
    let (_, experiment) = mlflow.unique_experiment("e2e-replay").await;
    let provider = provider().await;
    // No tracking server: traces go to OTLP-JSON files.
    let tap = Tap::start(&provider.url(), &[]).await;
    let request =
        br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Capital of France?"}]}"#;
    let mut ids = Vec::new();
    for _ in 0..5 {
        ids.push(
            post(&tap.url("/v1/chat/completions"), request, &[])
                .await
                .trace_id(),
        );
    }
    let tap::Tap {
        running,
        trace_dir,
        _tmp: keep,
    } = tap;
    running.shutdown().await;
    for round in 0..2 {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_llmtap"))
            .arg("replay")
            .arg(&trace_dir)
            .env("MLFLOW_TRACKING_URI", mlflow.uri())
            .env("MLFLOW_EXPERIMENT_ID", &experiment)
            .env("LLMTAP_DEAD_LETTER_DIR", keep.path().join("dl"))
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "round {round}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(stdout.contains("5 spans, 5 exported"), "{stdout}");
    }
    let mut stored: Vec<String> = mlflow
        .search_traces(&experiment)
        .await
        .iter()
        .map(|t| t["trace_id"].as_str().unwrap().to_string())
        .collect();
    stored.sort();
    ids.sort();
    assert_eq!(stored, ids, "each trace exactly once after two replays");
    let trace = mlflow.wait_trace(&ids[0], WAIT).await;
    assert_eq!(usage(&trace)["total_tokens"], 28);
}

/// The MLflow sink's `assess` (the `Sink` trait's feedback path) attaches an
/// assessment to a trace llmtap delivered, as MLflow's own
/// `mlflow.log_feedback` does.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feedback_through_the_sink_lands_on_the_trace() {
    use llmtap::sinks::{mlflow as mlflow_sink, Assessment, Context, Verdict};
    let mlflow = mlflow::shared().await;
    let (_, experiment) = mlflow.unique_experiment("e2e-feedback").await;
    let provider = provider().await;
    let tap = Tap::start(
        &provider.url(),
        &[
            ("MLFLOW_TRACKING_URI", mlflow.uri()),
            ("MLFLOW_EXPERIMENT_ID", &experiment),
        ],
    )
    .await;
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let id = post(
        &tap.url("/v1/chat/completions"),
        body.to_string().as_bytes(),
        &[],
    )
    .await
    .trace_id();
    mlflow.wait_trace(&id, WAIT).await;
    let mut env = llmtap::config::Env::new();
    env.insert("MLFLOW_TRACKING_URI".into(), mlflow.uri().into());
    env.insert("MLFLOW_EXPERIMENT_ID".into(), experiment.clone());
    let mut l = llmtap::config::Layers {
        env: &env,
        file: toml::Table::new(),
        errors: vec![],
    };
    let cfg = mlflow_sink::config::shortcut(&mut l).expect("an MLflow sink");
    let ctx = Context {
        connect_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(30),
        service_name: "llmtap".into(),
    };
    let sink = mlflow_sink::build("mlflow", cfg, &ctx).unwrap();
    let a = Assessment {
        trace_id: id.clone(),
        name: "user_feedback".into(),
        source_type: "HUMAN".into(),
        source_id: "alice".into(),
        value: json!(true),
        rationale: Some("right answer".into()),
        metadata: Default::default(),
    };
    let sent = sink.assess(&a).await;
    assert_eq!(sent.verdict, Verdict::Success, "{}", sent.reason);
    let trace = mlflow.get_trace(&id).await.expect("the trace");
    let assessments = trace["trace_info"]["assessments"]
        .as_array()
        .unwrap_or_else(|| panic!("no assessments on {trace}"));
    let got = &assessments[0];
    assert_eq!(got["assessment_name"], "user_feedback");
    assert_eq!(got["source"]["source_id"], "alice");
    assert_eq!(got["feedback"]["value"], true);
    assert_eq!(got["rationale"], "right answer");
    tap.running.shutdown().await;
}
