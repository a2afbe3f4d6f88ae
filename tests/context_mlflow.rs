//! Production context, end to end (issue 10, item 1): the llmtap binary
//! between a fake provider and a real `mlflow server`, and what a user
//! reads back over MLflow's REST API — user, session, trace name, tags and
//! metadata from the `x-llmtap-*` headers and from the request body, the
//! environment (`[environment]`, `OTEL_RESOURCE_ATTRIBUTES`) as trace tags,
//! the agent's and the provider's request ids as tags, no `service.name`
//! tag unless asked for, and the traceparent join mode.

#[path = "support/bin.rs"]
mod bin;
#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/mlflow.rs"]
mod mlflow;
#[path = "support/tap.rs"]
mod tap;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use bin::Launch;
use fake_provider::{FakeProvider, Reply};
use serde_json::{json, Value};
use tap::{fixture, post};

const WAIT: Duration = Duration::from_secs(60);

const LAUNCH: Launch = Launch {
    config_extra: "\n[environment]\ndeployment = \"prod\"\nversion = \"1.2.3\"\n",
    ..Launch::DEFAULT
};

/// OpenAI chat answers with `x-request-id`, Anthropic messages with `request-id`.
async fn provider() -> FakeProvider {
    let chat = fixture("openai_chat/plain.json");
    let messages = fixture("anthropic/plain.json");
    FakeProvider::start(move |seen| {
        if seen.uri.ends_with("/messages") {
            // Anthropic sends `request-id` and no `x-request-id`.
            let mut reply = Reply::json(200, messages.clone());
            reply.headers.retain(|(k, _)| k != "x-request-id");
            reply.header("request-id", "req_anthropic_1")
        } else {
            Reply::json(200, chat.clone()).header("x-request-id", "req_openai_1")
        }
    })
    .await
}

/// A fresh experiment, the provider, and llmtap sending to both.
struct Setup {
    experiment: String,
    provider: FakeProvider,
    tap: bin::Bin,
    _work: tempfile::TempDir,
}

/// Starts llmtap (with `env` besides the tracking server and a new
/// experiment named after `prefix`) in front of [`provider`].
async fn setup(mlflow: &mlflow::Mlflow, prefix: &str, env: &[(&str, &str)]) -> Setup {
    let (name, experiment) = mlflow.unique_experiment(prefix).await;
    let provider = provider().await;
    let work = tempfile::tempdir().unwrap();
    let mut all = vec![
        ("MLFLOW_TRACKING_URI", mlflow.uri()),
        ("MLFLOW_EXPERIMENT_NAME", name.as_str()),
    ];
    all.extend_from_slice(env);
    let tap = LAUNCH.start(&provider.url(), work.path(), &all).await;
    Setup {
        experiment,
        provider,
        tap,
        _work: work,
    }
}

/// Polls the trace until `ready` holds (metadata arrives after the spans).
async fn trace_where(mlflow: &mlflow::Mlflow, id: &str, ready: impl Fn(&Value) -> bool) -> Value {
    let start = Instant::now();
    loop {
        let t = mlflow.wait_trace(id, WAIT).await;
        if ready(&t["trace_info"]) {
            return t["trace_info"].clone();
        }
        assert!(
            start.elapsed() < WAIT,
            "trace {id} never got what was expected: {t}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn s<'a>(v: &'a Value, map: &str, key: &str) -> Option<&'a str> {
    v[map][key].as_str()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_reaches_mlflow_as_metadata_and_tags() {
    let mlflow = mlflow::shared().await;
    let env = [
        ("OTEL_RESOURCE_ATTRIBUTES", "team=search,note=a%20b"),
        ("LLMTAP_REGION", "eu-west-1"),
    ];
    let Setup {
        experiment,
        provider,
        mut tap,
        _work,
    } = setup(mlflow, "context", &env).await;
    let chat = tap.url("/v1/chat/completions");

    // Headers, with a body that says otherwise: the headers win.
    let body = json!({"model": "gpt-4o-mini", "user": "body-user",
        "metadata": {"order": "O-9", "ticket": "from-body"},
        "messages": [{"role": "user", "content": "hi"}]});
    let headed = post(
        &chat,
        body.to_string().as_bytes(),
        &[
            ("x-llmtap-user", "alice"),
            ("x-llmtap-session", "sess-42"),
            ("x-llmtap-trace-name", "triage"),
            ("x-llmtap-tag-env", "staging"),
            ("x-llmtap-metadata-ticket", "T-1"),
            ("x-request-id", "req-client-7"),
        ],
    )
    .await;
    assert_eq!(headed.status, 200);
    // The body alone: safety_identifier names the user; no metadata here.
    let body = json!({"model": "gpt-4o-mini", "safety_identifier": "sid-hash-1",
        "prompt_cache_key": "pk-1", "messages": [{"role": "user", "content": "hi"}]});
    let safety = post(&chat, body.to_string().as_bytes(), &[]).await;
    // Anthropic: metadata.user_id names the user.
    let body = json!({"model": "claude-sonnet-4-5", "max_tokens": 64,
        "metadata": {"user_id": "anthropic-user"},
        "messages": [{"role": "user", "content": "hi"}]});
    let anthropic = post(&tap.url("/v1/messages"), body.to_string().as_bytes(), &[]).await;
    assert_eq!(
        (safety.status.as_u16(), anthropic.status.as_u16()),
        (200, 200)
    );

    for seen in provider.seen() {
        let ours: Vec<_> = seen
            .headers
            .keys()
            .filter(|k| k.as_str().starts_with("x-llmtap-"))
            .collect();
        assert!(
            ours.is_empty(),
            "llmtap headers reached the provider: {ours:?}"
        );
    }

    let info = trace_where(mlflow, &headed.trace_id(), |i| {
        i["trace_metadata"]["ticket"].is_string()
    })
    .await;
    assert_eq!(info["state"], "OK");
    assert_eq!(
        s(&info, "trace_metadata", "mlflow.trace.user"),
        Some("alice")
    );
    assert_eq!(
        s(&info, "trace_metadata", "mlflow.trace.session"),
        Some("sess-42")
    );
    assert_eq!(
        s(&info, "trace_metadata", "ticket"),
        Some("T-1"),
        "header wins"
    );
    assert_eq!(
        s(&info, "trace_metadata", "order"),
        Some("O-9"),
        "body metadata"
    );
    assert_eq!(
        s(&info, "trace_metadata", "mlflow.source.name"),
        Some("llmtap")
    );
    assert_eq!(
        s(&info, "trace_metadata", "mlflow.source.type"),
        Some("UNKNOWN")
    );
    assert!(
        info["trace_metadata"]["mlflow.trace.tokenUsage"].is_string(),
        "the metadata call keeps the span-derived usage: {info}"
    );
    assert!(
        info["request_preview"]
            .as_str()
            .is_some_and(|p| p.contains("hi")),
        "the metadata call keeps the preview: {info}"
    );
    assert_eq!(info["client_request_id"], "req-client-7");
    assert_eq!(s(&info, "tags", "mlflow.traceName"), Some("triage"));
    assert_eq!(s(&info, "tags", "env"), Some("staging"));
    assert_eq!(
        s(&info, "tags", "llmtap.client_request_id"),
        Some("req-client-7")
    );
    assert_eq!(
        s(&info, "tags", "llmtap.provider_request_id"),
        Some("req_openai_1")
    );
    assert_eq!(
        s(&info, "tags", "deployment.environment.name"),
        Some("prod")
    );
    assert_eq!(s(&info, "tags", "service.version"), Some("1.2.3"));
    assert_eq!(s(&info, "tags", "cloud.region"), Some("eu-west-1"));
    assert_eq!(s(&info, "tags", "team"), Some("search"));
    assert_eq!(s(&info, "tags", "note"), Some("a b"));
    assert_eq!(
        info["tags"].get("service.name"),
        None,
        "opt-in only: {info}"
    );

    let info = mlflow.wait_trace(&safety.trace_id(), WAIT).await["trace_info"].clone();
    assert_eq!(
        s(&info, "trace_metadata", "mlflow.trace.user"),
        Some("sid-hash-1")
    );
    assert_eq!(s(&info, "tags", "llmtap.prompt_cache_key"), Some("pk-1"));
    assert_eq!(
        info["trace_metadata"].get("mlflow.source.name"),
        None,
        "no metadata, no second call"
    );

    // A retried batch re-sends the spans after the metadata call: an upsert
    // that keeps the metadata.
    let hex = headed.trace_id()[3..].to_string();
    let stored = mlflow
        .get_trace_with_spans(&headed.trace_id())
        .await
        .expect("the trace");
    let span_b64 = stored["spans"][0]["span_id"].as_str().unwrap_or("");
    let raw = base64::engine::general_purpose::STANDARD
        .decode(span_b64)
        .unwrap_or_default();
    let span_hex: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(span_hex.len(), 16, "{stored}");
    let (status, text) = mlflow
        .post_otlp_json(&experiment, &agent_root(&hex, &span_hex))
        .await;
    assert_eq!(status, 200, "{text}");
    let again = mlflow.wait_trace(&headed.trace_id(), WAIT).await["trace_info"].clone();
    assert_eq!(
        s(&again, "trace_metadata", "ticket"),
        Some("T-1"),
        "{again}"
    );
    assert_eq!(
        s(&again, "trace_metadata", "mlflow.trace.user"),
        Some("alice")
    );

    let info = mlflow.wait_trace(&anthropic.trace_id(), WAIT).await["trace_info"].clone();
    assert_eq!(
        s(&info, "trace_metadata", "mlflow.trace.user"),
        Some("anthropic-user")
    );
    assert_eq!(
        s(&info, "tags", "llmtap.provider_request_id"),
        Some("req_anthropic_1")
    );
    tap.stop().await;
}

const TRACE_HEX: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_HEX: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn join_mode_puts_the_span_under_the_agents_parent() {
    let mlflow = mlflow::shared().await;
    let env = [
        ("LLMTAP_JOIN_TRACEPARENT", "true"),
        ("LLMTAP_MLFLOW_SERVICE_NAME_TAG", "true"),
        ("LLMTAP_MLFLOW_SOURCE_METADATA", "true"),
    ];
    let Setup {
        experiment,
        provider: _provider,
        mut tap,
        _work,
    } = setup(mlflow, "context-join", &env).await;
    let chat = tap.url("/v1/chat/completions");
    let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    let traceparent = format!("00-{TRACE_HEX}-{PARENT_HEX}-01");
    let joined = post(&chat, body, &[("traceparent", &traceparent)]).await;
    assert_eq!(
        joined.trace_id(),
        format!("tr-{TRACE_HEX}"),
        "the agent's trace id"
    );
    let own = post(&chat, body, &[("traceparent", "00-not-a-valid-one-01")]).await;
    assert_ne!(own.trace_id(), joined.trace_id());

    // The agent exports its own root span to the same MLflow, as this mode expects.
    let (status, text) = mlflow
        .post_otlp_json(&experiment, &agent_root(TRACE_HEX, PARENT_HEX))
        .await;
    assert_eq!(status, 200, "{text}");
    let joined_trace = joined.trace_id();
    let start = Instant::now();
    let spans = loop {
        let t = mlflow.wait_trace(&joined_trace, WAIT).await;
        let spans = mlflow
            .get_trace_with_spans(&joined_trace)
            .await
            .map(|t| t["spans"].clone())
            .unwrap_or(Value::Null);
        if spans.as_array().is_some_and(|a| a.len() == 2) {
            break spans;
        }
        assert!(
            start.elapsed() < WAIT,
            "llmtap's span never joined: {t} {spans}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let b64 = |v: &Value| {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or(""))
            .unwrap_or_default();
        raw.iter().map(|b| format!("{b:02x}")).collect::<String>()
    };
    let ours = spans
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["name"] == "Completions")
        .unwrap_or_else(|| panic!("no llmtap span in {spans}"));
    assert_eq!(b64(&ours["parent_span_id"]), PARENT_HEX, "{ours}");
    assert_eq!(b64(&ours["trace_id"]), TRACE_HEX);

    let info = mlflow.wait_trace(&own.trace_id(), WAIT).await["trace_info"].clone();
    assert_eq!(
        s(&info, "tags", "service.name"),
        Some("llmtap"),
        "opted in: {info}"
    );
    // Source metadata on every trace, asked for: a call with no metadata.
    let info = trace_where(mlflow, &own.trace_id(), |i| {
        s(i, "trace_metadata", "mlflow.source.name").is_some()
    })
    .await;
    assert_eq!(
        s(&info, "trace_metadata", "mlflow.source.name"),
        Some("llmtap"),
        "{info}"
    );
    assert_eq!(
        s(&info, "trace_metadata", "mlflow.source.type"),
        Some("UNKNOWN")
    );
    assert!(
        tap.log().contains("invalid traceparent ignored"),
        "the bad traceparent is logged"
    );
    let metrics = tap::get(&tap.admin_url("/metrics")).await;
    let text = String::from_utf8_lossy(&metrics.body);
    assert!(
        text.contains("\nllmtap_traceparent_invalid_total 1\n"),
        "counted: {text}"
    );
    tap.stop().await;
}

/// The agent's own root span of the trace, as its OTLP exporter sends it.
fn agent_root(trace: &str, span: &str) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64;
    json!({"resourceSpans": [{"resource": {"attributes": []}, "scopeSpans": [{"spans": [{
        "traceId": trace, "spanId": span, "name": "agent", "kind": 1,
        "startTimeUnixNano": (now - 5_000_000_000).to_string(),
        "endTimeUnixNano": now.to_string(), "status": {"code": 1}
    }]}]}]})
}

/// A tracking-server stand-in: `/v1/traces` always 200, StartTraceV3
/// answered with the scripted statuses in turn (then 200); both recorded.
async fn stand_in(statuses: Vec<u16>) -> (FakeProvider, Arc<Mutex<Vec<fake_provider::Seen>>>) {
    let script = Arc::new(Mutex::new(statuses.into_iter()));
    let seen = Arc::new(Mutex::new(Vec::new()));
    let log = seen.clone();
    let server = FakeProvider::start(move |s| {
        log.lock().unwrap().push(s.clone());
        if s.uri.ends_with("/v1/traces") {
            return Reply::json(200, "").header("content-type", "application/x-protobuf");
        }
        let status = script.lock().unwrap().next().unwrap_or(200);
        Reply::json(status, "{\"error_code\":\"X\"}")
    })
    .await;
    (server, seen)
}

fn calls_to(seen: &Mutex<Vec<fake_provider::Seen>>, path: &str) -> Vec<Value> {
    seen.lock()
        .unwrap()
        .iter()
        .filter(|s| s.uri.ends_with(path))
        .map(|s| serde_json::from_slice(&s.body).unwrap_or(Value::Null))
        .collect()
}

async fn until(what: &str, ok: impl Fn() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "timed out: {what}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_call_failures_retry_or_are_dropped_by_class() {
    const START: &str = "/api/3.0/mlflow/traces";
    let chat = fixture("openai_chat/plain.json");
    let provider = FakeProvider::start(move |_| Reply::json(200, chat.clone())).await;
    let body = br#"{"model":"gpt-4o-mini","messages":[]}"#;
    for (script, otlp_posts, verdict) in [(vec![503], 2, "retried"), (vec![400], 1, "dropped")] {
        let (server, seen) = stand_in(script).await;
        let tap = tap::Tap::start(
            &provider.url(),
            &[
                ("MLFLOW_TRACKING_URI", &server.url()),
                ("MLFLOW_EXPERIMENT_ID", "1"),
            ],
        )
        .await;
        // Without metadata: spans only.
        post(&tap.url("/v1/chat/completions"), body, &[]).await;
        let m = &tap.running.metrics;
        until("the plain trace", || {
            m.render().contains("llmtap_traces_exported_total 1\n")
        })
        .await;
        assert!(calls_to(&seen, START).is_empty(), "no metadata, no call");
        let with = post(
            &tap.url("/v1/chat/completions"),
            body,
            &[("x-llmtap-metadata-ticket", "T-1")],
        )
        .await;
        until("the trace with metadata", || {
            m.render().contains("llmtap_traces_exported_total 2\n")
        })
        .await;
        let starts = calls_to(&seen, START);
        assert_eq!(starts.len(), otlp_posts, "{verdict}: {starts:?}");
        let info = &starts[0]["trace"]["trace_info"];
        assert_eq!(info["trace_id"], with.trace_id().as_str());
        assert_eq!(info["trace_metadata"]["ticket"], "T-1");
        assert_eq!(
            info["trace_location"]["mlflow_experiment"]["experiment_id"],
            "1"
        );
        // The spans went once, plus once more when the batch was retried.
        assert_eq!(
            calls_to(&seen, "/v1/traces").len(),
            1 + otlp_posts,
            "{verdict}"
        );
        assert!(m.render().contains("llmtap_traces_dead_lettered_total 0\n"));
        tap.running.shutdown().await;
    }
}
