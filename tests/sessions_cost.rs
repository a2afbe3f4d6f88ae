//! Sessions and cost (issue 10, items 2 and 4), through the llmtap binary
//! into a real MLflow server: conversations recognised without a session
//! header land in one `mlflow.trace.session`; a given session wins; a
//! Responses chain is one session; history matching off splits them. Every
//! priced call carries `mlflow.llm.cost` (checked against the price table
//! and a `[[prices]]` override), an unknown model none (counted), /metrics
//! shows tokens and cost by model, and the optional `x-llmtap-cost-usd`
//! header comes on non-streamed responses only, and only when asked for.

#[path = "support/bin.rs"]
mod bin;
#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/mlflow.rs"]
mod mlflow;
#[path = "support/tap.rs"]
mod tap;

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use fake_provider::{FakeProvider, Reply, Seen};
use serde_json::{json, Value};
use tap::{fixture, post};

const WAIT: Duration = Duration::from_secs(60);
const CHAT: &str = "/v1/chat/completions";

/// A provider that answers like OpenAI: chat replies name the request's
/// model and echo its last message (so each conversation's history is its
/// own); Responses answers get fresh ids; streams are the recorded fixture.
async fn provider() -> FakeProvider {
    let next = Arc::new(AtomicU64::new(0));
    FakeProvider::start(move |seen: &Seen| {
        let req: Value = serde_json::from_slice(&seen.body).unwrap_or(Value::Null);
        let model = req["model"].as_str().unwrap_or("gpt-4o-mini").to_string();
        let n = next.fetch_add(1, Relaxed);
        if req["stream"] == true {
            return Reply::sse(&fixture("openai_chat/stream_include_usage.sse"));
        }
        if seen.uri.ends_with("/responses") {
            let body = json!({"id": format!("resp_{n}"), "object": "response", "model": model,
                "status": "completed", "output": [{"type": "message", "id": format!("msg_{n}"),
                "role": "assistant", "content": [{"type": "output_text", "text": "ok"}]}],
                "usage": {"input_tokens": 1000, "output_tokens": 100, "total_tokens": 1100}});
            return Reply::json(200, body.to_string());
        }
        let last = req["messages"]
            .as_array()
            .and_then(|m| m.last())
            .and_then(|m| m["content"].as_str())
            .unwrap_or("");
        let body = json!({"id": format!("chatcmpl-{n}"), "object": "chat.completion",
            "model": model, "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": format!("re: {last}")}}],
            "usage": {"prompt_tokens": 1000, "completion_tokens": 100, "total_tokens": 1100}});
        Reply::json(200, body.to_string())
    })
    .await
}

/// llmtap (the binary) tracing to the shared MLflow server, in a fresh
/// experiment.
async fn llmtap(
    launch: bin::Launch,
    provider: &FakeProvider,
    env: &[(&str, &str)],
) -> (bin::Bin, tempfile::TempDir) {
    let ml = mlflow::shared().await;
    let dir = tempfile::tempdir().unwrap();
    let (name, _) = ml.unique_experiment("sessions-cost").await;
    let mut all = vec![
        ("MLFLOW_TRACKING_URI", ml.uri()),
        ("MLFLOW_EXPERIMENT_NAME", name.as_str()),
    ];
    all.extend_from_slice(env);
    let bin = launch.start(&provider.url(), dir.path(), &all).await;
    (bin, dir)
}

/// A chat conversation as a client keeps it: every turn resends the
/// history with the assistant's replies appended.
struct Conversation {
    model: &'static str,
    messages: Vec<Value>,
}

impl Conversation {
    fn new(model: &'static str, system: &str) -> Self {
        Conversation {
            model,
            messages: vec![json!({"role": "system", "content": system})],
        }
    }

    /// Sends the next user turn; returns the trace id.
    async fn turn(&mut self, bin: &bin::Bin, text: &str, headers: &[(&str, &str)]) -> String {
        self.messages.push(json!({"role": "user", "content": text}));
        let body = json!({"model": self.model, "messages": self.messages});
        let got = post(&bin.url(CHAT), body.to_string().as_bytes(), headers).await;
        assert_eq!(got.status, 200);
        let reply: Value = serde_json::from_slice(&got.body).unwrap();
        self.messages.push(reply["choices"][0]["message"].clone());
        got.trace_id()
    }
}

/// The trace's `mlflow.trace.session` in MLflow.
async fn session_of(id: &str) -> String {
    let trace = mlflow::shared().await.wait_trace(id, WAIT).await;
    trace["trace_info"]["trace_metadata"]["mlflow.trace.session"]
        .as_str()
        .unwrap_or_else(|| panic!("no session on {id}: {trace}"))
        .to_string()
}

/// A span attribute as MLflow returns it (its values are JSON text).
async fn span_attribute(id: &str, key: &str) -> Option<Value> {
    let ml = mlflow::shared().await;
    ml.wait_trace(id, WAIT).await;
    let trace = ml.get_trace_with_spans(id).await.expect("the trace");
    let attrs = trace["spans"][0]["attributes"]
        .as_array()
        .cloned()
        .unwrap_or_else(|| panic!("no span attributes in {trace}"));
    let v = attrs.into_iter().find(|a| a["key"] == key)?;
    Some(plain(&v["value"]))
}

/// An OTLP proto-JSON value as plain JSON (MLflow returns JSON objects as
/// `kvlist_value`, strings as the JSON text they were stored as).
fn plain(v: &Value) -> Value {
    if let Some(text) = v.get("string_value").and_then(Value::as_str) {
        return serde_json::from_str(text).unwrap_or_else(|_| json!(text));
    }
    if let Some(kv) = v.get("kvlist_value") {
        let pairs = kv["values"].as_array().cloned().unwrap_or_default();
        let map = pairs
            .iter()
            .map(|p| {
                (
                    p["key"].as_str().unwrap_or("").to_string(),
                    plain(&p["value"]),
                )
            })
            .collect();
        return Value::Object(map);
    }
    for k in ["double_value", "bool_value"] {
        if let Some(x) = v.get(k) {
            return x.clone();
        }
    }
    match v.get("int_value") {
        Some(Value::String(n)) => json!(n.parse::<i64>().unwrap_or(0)),
        Some(n) => n.clone(),
        None => v.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conversations_are_recognised_without_a_session_header() {
    let provider = provider().await;
    let (mut bin, _dir) = llmtap(bin::Launch::DEFAULT, &provider, &[]).await;
    let mut a = Conversation::new("gpt-4o-mini", "You plan trips.");
    let mut b = Conversation::new("gpt-4o-mini", "You fix bikes.");
    let a1 = a.turn(&bin, "Three days in Lisbon?", &[]).await;
    let b1 = b.turn(&bin, "My chain skips.", &[]).await;
    let a2 = a.turn(&bin, "And a day trip?", &[]).await;
    let b2 = b.turn(&bin, "Which tool?", &[]).await;
    let a3 = a.turn(&bin, "Where to eat?", &[]).await;
    let mut c = Conversation::new("gpt-4o-mini", "You plan trips.");
    let given = [("x-llmtap-session", "ticket-4711")];
    let c1 = c.turn(&bin, "Three days in Lisbon?", &given).await;
    // The given session wins even over a remembered history.
    let c2 = c.turn(&bin, "And a day trip?", &given).await;

    // A coding agent's own session header (Codex's `session_id`) is used
    // as it is, and still reaches the provider.
    let mut d = Conversation::new("gpt-4o-mini", "You write code.");
    let d1 = d
        .turn(&bin, "Fix the build.", &[("session_id", "codex-77")])
        .await;
    let sent = provider.seen().last().unwrap().headers.clone();
    assert_eq!(sent.get("session_id").unwrap(), "codex-77");

    // A Responses chain: each call names the previous answer's id.
    let mut previous: Option<String> = None;
    let mut chain = Vec::new();
    for text in ["hi", "more", "and more"] {
        let mut body = json!({"model": "gpt-4o", "input": text});
        if let Some(p) = &previous {
            body["previous_response_id"] = json!(p);
        }
        let got = post(&bin.url("/v1/responses"), body.to_string().as_bytes(), &[]).await;
        assert_eq!(got.status, 200);
        let answer: Value = serde_json::from_slice(&got.body).unwrap();
        previous = answer["id"].as_str().map(str::to_string);
        chain.push(got.trace_id());
    }

    let sa = session_of(&a1).await;
    assert_eq!(session_of(&a2).await, sa, "turn 2 of A");
    assert_eq!(session_of(&a3).await, sa, "turn 3 of A");
    let sb = session_of(&b1).await;
    assert_ne!(sb, sa, "the interleaved conversation is another session");
    assert_eq!(session_of(&b2).await, sb);
    assert_eq!(session_of(&c1).await, "ticket-4711");
    assert_eq!(session_of(&c2).await, "ticket-4711");
    let source = span_attribute(&a2, "llmtap.session.source").await;
    assert_eq!(source, Some(json!("history_prefix")));
    let source = span_attribute(&c1, "llmtap.session.source").await;
    assert_eq!(source, Some(json!("given")));
    assert_eq!(session_of(&d1).await, "codex-77");
    let source = span_attribute(&d1, "llmtap.session.source").await;
    assert_eq!(source, Some(json!("agent_header")));
    let s0 = session_of(&chain[0]).await;
    assert!(![&sa, &sb].contains(&&s0));
    for id in &chain[1..] {
        assert_eq!(
            session_of(id).await,
            s0,
            "the Responses chain is one session"
        );
    }
    let metrics = tap::get(&bin.admin_url("/metrics")).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("llmtap_session_entries{map=\"responses\"} 3"),
        "{text}"
    );
    bin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_history_off_each_turn_is_its_own_session() {
    let provider = provider().await;
    let env = [("LLMTAP_SESSION_HISTORY", "false")];
    let (mut bin, _dir) = llmtap(bin::Launch::DEFAULT, &provider, &env).await;
    let mut a = Conversation::new("gpt-4o-mini", "You plan trips.");
    let t1 = a.turn(&bin, "Three days in Lisbon?", &[]).await;
    let t2 = a.turn(&bin, "And a day trip?", &[]).await;
    let (s1, s2) = (session_of(&t1).await, session_of(&t2).await);
    assert_ne!(s1, s2, "no history matching: no shared session");
    assert_eq!(
        span_attribute(&t2, "llmtap.session.source").await,
        Some(json!("new"))
    );
    bin.stop().await;
}

/// `{"input_cost","output_cost","total_cost"}` for 1000 input and 100
/// output tokens at `input` / `output` USD per million.
fn expected_cost(input: f64, output: f64) -> (f64, f64) {
    (1000.0 * input / 1e6, 100.0 * output / 1e6)
}

fn assert_cost(got: &Value, (input, output): (f64, f64), what: &str) {
    for (key, want) in [
        ("input_cost", input),
        ("output_cost", output),
        ("total_cost", input + output),
    ] {
        let v = got[key].as_f64().unwrap_or_else(|| panic!("{what}: {got}"));
        assert!((v - want).abs() < 1e-12, "{what} {key}: {v} != {want}");
    }
}

/// The launch with a `[[prices]]` override for a house model.
const PRICED: bin::Launch = bin::Launch {
    config_extra: "\n[[prices]]\nmodel = \"house-model\"\ninput = 1.0\noutput = 2.0\n",
    ..bin::Launch::DEFAULT
};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn priced_calls_carry_their_cost_and_unknown_models_none() {
    let provider = provider().await;
    let env = [("LLMTAP_COST_HEADER", "true")];
    let (mut bin, _dir) = llmtap(PRICED, &provider, &env).await;
    let chat =
        |model: &str| json!({"model": model, "messages": [{"role": "user", "content": "hi"}]});
    let known = post(
        &bin.url(CHAT),
        chat("gpt-4o-mini").to_string().as_bytes(),
        &[],
    )
    .await;
    let unknown = post(
        &bin.url(CHAT),
        chat("llmtap-no-such-model").to_string().as_bytes(),
        &[],
    )
    .await;
    let house = post(
        &bin.url(CHAT),
        chat("house-model").to_string().as_bytes(),
        &[],
    )
    .await;
    let stream_req = json!({"model": "gpt-4o-mini", "stream": true,
        "stream_options": {"include_usage": true}, "messages": [{"role": "user", "content": "hi"}]});
    let stream = post(&bin.url(CHAT), stream_req.to_string().as_bytes(), &[]).await;

    let rates = llmtap::cost::builtin().price("gpt-4o-mini").unwrap().base;
    let want = expected_cost(rates.input, rates.output);
    let cost = span_attribute(&known.trace_id(), "mlflow.llm.cost").await;
    assert_cost(&cost.expect("a known model's cost"), want, "gpt-4o-mini");
    let header = known
        .headers
        .get("x-llmtap-cost-usd")
        .expect("the cost header");
    let header: f64 = header.to_str().unwrap().parse().unwrap();
    assert!((header - (want.0 + want.1)).abs() < 1e-12, "{header}");
    let body: Value = serde_json::from_slice(&known.body).unwrap();
    assert_eq!(body["model"], "gpt-4o-mini", "the held body went out whole");

    // The override prices a model the table does not know.
    let cost = span_attribute(&house.trace_id(), "mlflow.llm.cost").await;
    assert_cost(
        &cost.expect("the override's cost"),
        expected_cost(1.0, 2.0),
        "house-model",
    );
    let trace = mlflow::shared()
        .await
        .wait_trace(&house.trace_id(), WAIT)
        .await;
    let trace_cost = trace["trace_info"]["trace_metadata"]["mlflow.trace.cost"]
        .as_str()
        .map(|t| serde_json::from_str::<Value>(t).unwrap());
    assert_cost(
        &trace_cost.expect("trace cost"),
        expected_cost(1.0, 2.0),
        "trace",
    );

    assert_eq!(
        span_attribute(&unknown.trace_id(), "mlflow.llm.cost").await,
        None
    );
    assert!(unknown.headers.get("x-llmtap-cost-usd").is_none());
    assert!(
        stream.headers.get("x-llmtap-cost-usd").is_none(),
        "streams get no header"
    );
    assert!(span_attribute(&stream.trace_id(), "mlflow.llm.cost")
        .await
        .is_some());

    let metrics = tap::get(&bin.admin_url("/metrics")).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("llmtap_cost_unpriced_total{provider=\"openai\"} 1\n"),
        "{text}"
    );
    assert!(
        text.contains("llmtap_tokens_total{model=\"house-model\",kind=\"input\"} 1000\n"),
        "{text}"
    );
    assert!(
        text.contains("llmtap_tokens_total{model=\"house-model\",kind=\"output\"} 100\n"),
        "{text}"
    );
    assert!(
        text.contains("llmtap_cost_usd_total{model=\"house-model\",kind=\"output\"} 0.0002\n"),
        "{text}"
    );
    assert!(
        text.contains("llmtap_cost_usd_total{model=\"gpt-4o-mini\",kind=\"input\"}"),
        "{text}"
    );
    assert!(
        !text.contains("llmtap-no-such-model"),
        "unknown names never become labels"
    );
    bin.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cost_header_is_off_by_default() {
    let provider = provider().await;
    let (mut bin, _dir) = llmtap(bin::Launch::DEFAULT, &provider, &[]).await;
    let body = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]});
    let got = post(&bin.url(CHAT), body.to_string().as_bytes(), &[]).await;
    assert_eq!(got.status, 200);
    assert!(got.headers.get("x-llmtap-cost-usd").is_none());
    // The span is priced all the same.
    assert!(span_attribute(&got.trace_id(), "mlflow.llm.cost")
        .await
        .is_some());
    bin.stop().await;
}
