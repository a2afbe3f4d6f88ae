//! The OTLP sink against a real Arize Phoenix (installed from PyPI by the
//! test setup, see `support/phoenix.rs`): spans built by llmtap's own trace
//! builder from recorded provider exchanges are sent by the sink, and read
//! back through Phoenix's REST API. What a user checks in Phoenix: the
//! messages, the model, the token counts, the status, the provider.
//!
//! Phoenix derives its OpenInference view from `gen_ai.*` by validating
//! `gen_ai.input.messages` / `gen_ai.output.messages` against the
//! conventions' JSON schema (one bad part drops them all), so the flattened
//! `llm.input_messages.*` it shows prove the GenAI structure is right.
//!
//! The last test runs the llmtap binary with only `OTEL_EXPORTER_OTLP_ENDPOINT`
//! set, in front of a fake provider: calls made through it land in Phoenix.

#[path = "support/bin.rs"]
mod bin;
#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/phoenix.rs"]
mod phoenix;
#[path = "support/tap.rs"]
mod tap;

use std::collections::HashMap;
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use llmtap::exchange::{CapturedBody, Exchange, ResponseHead};
use llmtap::route::Api;
use llmtap::sinks::otlp::{self, config};
use llmtap::sinks::{Context, Sink, Verdict};
use llmtap::tee::{BodyEnd, Capture};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use serde_json::Value;

const CAP: usize = 1 << 20;
const PROJECT: &str = "default";
const ARRIVAL: Duration = Duration::from_secs(30);

fn fixture(path: &str) -> Vec<u8> {
    let p = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn body(bytes: &[u8], ctype: &str) -> CapturedBody {
    CapturedBody {
        capture: Capture::whole(&Bytes::copy_from_slice(bytes), CAP),
        end: BodyEnd::Complete,
        content_type: Some(ctype.into()),
        content_encoding: None,
    }
}

/// One finished call: `request` JSON to `path`, answered `status` with `response`.
fn exchange(
    api: Api,
    provider: &'static str,
    path: &str,
    request: &str,
    status: u16,
    ctype: &str,
    response: &[u8],
) -> Exchange {
    let started = Instant::now();
    Exchange {
        trace_id: llmtap::exchange::new_trace_id(),
        span_id: llmtap::exchange::new_span_id(),
        api,
        provider,
        deployment: None,
        method: "POST".into(),
        path: path.into(),
        started_wall: SystemTime::now(),
        started,
        ended: started + Duration::from_millis(800),
        request: Some(body(request.as_bytes(), "application/json")),
        response_head: Some(ResponseHead {
            status,
            content_type: Some(ctype.into()),
            content_encoding: None,
            at: started,
            request_id: None,
        }),
        response: Some(body(response, ctype)),
        proxy_error: None,
        proxy_status: None,
        usage_hiding_failed: None,
        context: Default::default(),
        privacy: Default::default(),
    }
}

/// The canonical batch of one exchange, as the pipeline hands it to sinks.
fn batch(ex: &Exchange) -> (ExportTraceServiceRequest, String) {
    let (record, _) = llmtap::trace::build(ex, CAP);
    let req = llmtap::otlp::request("llmtap", vec![llmtap::otlp::to_span(&record)]);
    (req, hex(&ex.trace_id))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn ctx() -> Context {
    Context {
        connect_timeout: Duration::from_secs(5),
        timeout: Duration::from_secs(30),
        service_name: "llmtap".into(),
    }
}

/// The sink as `OTEL_EXPORTER_OTLP_*` configures it, plus `extra` variables.
fn sink(px: &phoenix::Phoenix, extra: &[(&str, &str)]) -> std::sync::Arc<dyn Sink> {
    let mut env: HashMap<String, String> = HashMap::new();
    env.insert("OTEL_EXPORTER_OTLP_ENDPOINT".into(), px.uri().into());
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    let cfg = config::from_env(&env)
        .expect("valid OTLP settings")
        .expect("the endpoint variable turns the sink on");
    otlp::build("phoenix", cfg, &ctx()).unwrap()
}

async fn send(sink: &dyn Sink, batch: &ExportTraceServiceRequest) {
    let a = sink.send(batch).await;
    assert_eq!(
        a.verdict,
        Verdict::Success,
        "Phoenix refused the batch: {}",
        a.reason
    );
}

fn attr<'a>(span: &'a Value, key: &str) -> &'a Value {
    &span["attributes"][key]
}

fn no_mlflow_noise(span: &Value) {
    let attrs = span["attributes"].as_object().expect("attributes");
    let noise: Vec<&String> = attrs.keys().filter(|k| k.starts_with("mlflow.")).collect();
    assert!(
        noise.is_empty(),
        "mlflow.* attributes reached Phoenix: {noise:?}"
    );
}

const CHAT_REQ: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Say hello"}],"temperature":0.2,"max_tokens":50,"seed":7,"tools":[{"type":"function","function":{"name":"wave","description":"Wave a hand","parameters":{"type":"object","properties":{}}}}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chat_calls_reach_phoenix_with_genai_attributes() {
    let px = phoenix::shared().await;
    eprintln!("phoenix started in {:?}", px.startup);
    let sink = sink(px, &[("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip")]);
    sink.probe()
        .await
        .expect("Phoenix's OTLP endpoint is ready");

    // A plain chat call.
    let plain = exchange(
        Api::ChatCompletions,
        "openai",
        "/v1/chat/completions",
        CHAT_REQ,
        200,
        "application/json",
        &fixture("openai_chat/plain.json"),
    );
    let (b, trace) = batch(&plain);
    send(&*sink, &b).await;
    let span = px.wait_span(PROJECT, &trace, ARRIVAL).await;
    assert_eq!(span["name"], "chat gpt-4o-mini");
    assert_eq!(
        span["span_kind"], "LLM",
        "Phoenix derived the kind from gen_ai.operation.name"
    );
    assert_eq!(span["status_code"], "OK");
    assert_eq!(attr(&span, "gen_ai.provider.name"), "openai");
    assert_eq!(attr(&span, "gen_ai.request.model"), "gpt-4o-mini");
    assert_eq!(
        attr(&span, "gen_ai.response.model"),
        "gpt-4o-mini-2024-07-18"
    );
    assert_eq!(attr(&span, "gen_ai.usage.input_tokens"), 19);
    assert_eq!(attr(&span, "gen_ai.usage.output_tokens"), 9);
    assert_eq!(attr(&span, "gen_ai.usage.cache_read.input_tokens"), 0);
    assert_eq!(attr(&span, "gen_ai.request.seed"), 7);
    // OpenAI's nested tool format, flattened to the schema Phoenix validates.
    let schema = attr(&span, "llm.tools.0.tool.json_schema");
    assert!(
        schema.to_string().contains("Wave a hand"),
        "{schema} in {span}"
    );
    // Phoenix's own view, derived from the GenAI messages.
    assert_eq!(attr(&span, "llm.model_name"), "gpt-4o-mini");
    assert_eq!(attr(&span, "llm.provider"), "openai");
    assert_eq!(attr(&span, "llm.token_count.prompt"), 19);
    assert_eq!(attr(&span, "llm.token_count.completion"), 9);
    assert_eq!(attr(&span, "llm.token_count.total"), 28);
    assert_eq!(attr(&span, "llm.input_messages.0.message.role"), "system");
    assert_eq!(
        attr(&span, "llm.input_messages.0.message.content"),
        "Be brief."
    );
    assert_eq!(attr(&span, "llm.input_messages.1.message.role"), "user");
    assert_eq!(
        attr(&span, "llm.input_messages.1.message.content"),
        "Say hello"
    );
    assert_eq!(
        attr(&span, "llm.output_messages.0.message.role"),
        "assistant"
    );
    assert_eq!(
        attr(&span, "llm.output_messages.0.message.content"),
        "Hello! How can I assist you today?"
    );
    no_mlflow_noise(&span);

    // A streamed chat call: the rebuilt response arrives whole.
    let req = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Tell me a fact"}]}"#;
    let streamed = exchange(
        Api::ChatCompletions,
        "openai",
        "/v1/chat/completions",
        req,
        200,
        "text/event-stream",
        &fixture("openai_chat/stream_include_usage.sse"),
    );
    let (b, trace) = batch(&streamed);
    send(&*sink, &b).await;
    let span = px.wait_span(PROJECT, &trace, ARRIVAL).await;
    assert_eq!(span["status_code"], "OK");
    assert_eq!(attr(&span, "gen_ai.request.stream"), true);
    assert_eq!(
        attr(&span, "llm.input_messages.0.message.content"),
        "Tell me a fact"
    );
    let text = attr(&span, "llm.output_messages.0.message.content");
    assert!(
        text.as_str().is_some_and(|t| t.len() > 10),
        "the streamed answer arrived: {text}"
    );
    assert!(attr(&span, "gen_ai.usage.output_tokens")
        .as_i64()
        .is_some_and(|n| n > 0));
    // llmtap's own facts pass through.
    assert_eq!(attr(&span, "llmtap.stream"), true);

    // A refused call: status ERROR, error.type, the exception event.
    let failed = exchange(
        Api::ChatCompletions,
        "openai",
        "/v1/chat/completions",
        CHAT_REQ,
        429,
        "application/json",
        &fixture("openai_chat/error_429.json"),
    );
    let (b, trace) = batch(&failed);
    send(&*sink, &b).await;
    let span = px.wait_span(PROJECT, &trace, ARRIVAL).await;
    assert_eq!(span["status_code"], "ERROR");
    assert!(
        span["status_message"]
            .as_str()
            .unwrap_or_default()
            .contains("RateLimitError: Error code: 429"),
        "{span}"
    );
    assert_eq!(attr(&span, "error.type"), "rate_limit_exceeded");
    let events = span["events"].as_array().expect("events");
    assert!(
        events.iter().any(|e| e["name"] == "exception"),
        "{events:?}"
    );
    no_mlflow_noise(&span);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn anthropic_tool_use_reaches_phoenix_with_openinference() {
    let px = phoenix::shared().await;
    let sink = sink(px, &[("LLMTAP_OTLP_SEMCONV", "genai+openinference")]);
    let req = r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"system":"You are a weather bot.","tools":[{"name":"get_weather","description":"Weather for a place","input_schema":{"type":"object","properties":{"location":{"type":"string"}}}}],"messages":[{"role":"user","content":"What's the weather in San Francisco?"}]}"#;
    let ex = exchange(
        Api::Messages,
        "anthropic",
        "/v1/messages",
        req,
        200,
        "application/json",
        &fixture("anthropic/plain_tool_use.json"),
    );
    let (b, trace) = batch(&ex);
    send(&*sink, &b).await;
    let span = px.wait_span(PROJECT, &trace, ARRIVAL).await;
    assert_eq!(span["name"], "chat claude-sonnet-4-5");
    assert_eq!(span["span_kind"], "LLM");
    assert_eq!(attr(&span, "gen_ai.provider.name"), "anthropic");
    assert_eq!(attr(&span, "llm.provider"), "anthropic");
    assert_eq!(attr(&span, "llm.model_name"), "claude-sonnet-4-5-20250929");
    assert_eq!(attr(&span, "llm.token_count.prompt"), 384);
    assert_eq!(attr(&span, "llm.token_count.completion"), 89);
    // The system prompt is input message 0 in Phoenix's view.
    assert_eq!(attr(&span, "llm.input_messages.0.message.role"), "system");
    assert_eq!(
        attr(&span, "llm.input_messages.0.message.content"),
        "You are a weather bot."
    );
    assert_eq!(
        attr(&span, "llm.input_messages.1.message.content"),
        "What's the weather in San Francisco?"
    );
    let call = "llm.output_messages.0.message.tool_calls.0.tool_call";
    assert_eq!(attr(&span, &format!("{call}.function.name")), "get_weather");
    assert_eq!(
        attr(&span, &format!("{call}.id")),
        "toolu_01A09q90qw90lq917835lq9"
    );
    let args = attr(&span, &format!("{call}.function.arguments"));
    assert!(args.to_string().contains("San Francisco, CA"), "{args}");
    // Phoenix read the tool definitions (it drops the list if one entry is off-schema).
    let schema = attr(&span, "llm.tools.0.tool.json_schema");
    assert!(schema.to_string().contains("get_weather"), "{schema}");
    // The explicit OpenInference input/output: the whole request and response.
    assert_eq!(attr(&span, "input.mime_type"), "application/json");
    assert!(attr(&span, "input.value")
        .to_string()
        .contains("weather bot"));
    assert!(attr(&span, "output.value")
        .to_string()
        .contains("toolu_01A09q90qw90lq917835lq9"));
    no_mlflow_noise(&span);
}

/// A provider that answers like OpenAI: streams when asked, 401 for a bad model.
async fn provider() -> fake_provider::FakeProvider {
    let plain = fixture("openai_chat/plain.json");
    let stream = fixture("openai_chat/stream_include_usage.sse");
    let unauthorized = fixture("openai_chat/error_401.json");
    fake_provider::FakeProvider::start(move |seen| {
        let req: Value = serde_json::from_slice(&seen.body).unwrap_or(Value::Null);
        if req["model"] == "bad-model" {
            fake_provider::Reply::json(401, unauthorized.clone())
        } else if req["stream"] == true {
            fake_provider::Reply::sse(&stream)
        } else {
            fake_provider::Reply::json(200, plain.clone())
        }
    })
    .await
}

/// The OTLP trace id (hex) of llmtap's `x-llmtap-trace-id` (`tr-<hex>`).
fn otlp_trace_id(got: &tap::Got) -> String {
    got.trace_id().trim_start_matches("tr-").to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_binary_sends_chat_calls_to_phoenix() {
    let px = phoenix::shared().await;
    let provider = provider().await;
    let dir = tempfile::tempdir().unwrap();
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", px.uri())];
    let mut llmtap = bin::Launch::DEFAULT
        .start(&provider.url(), dir.path(), &env)
        .await;
    let url = llmtap.url("/v1/chat/completions");

    let plain = tap::post(&url, CHAT_REQ.as_bytes(), &[]).await;
    assert_eq!(plain.status, 200);
    let streamed_req = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Tell me a fact"}]}"#;
    let streamed = tap::post(&url, streamed_req.as_bytes(), &[]).await;
    assert_eq!(streamed.status, 200);
    let bad = r#"{"model":"bad-model","messages":[{"role":"user","content":"Hi"}]}"#;
    let refused = tap::post(&url, bad.as_bytes(), &[]).await;
    assert_eq!(refused.status, 401);

    let span = px.wait_span(PROJECT, &otlp_trace_id(&plain), ARRIVAL).await;
    assert_eq!(span["name"], "chat gpt-4o-mini");
    assert_eq!(span["status_code"], "OK");
    assert_eq!(
        attr(&span, "llm.input_messages.1.message.content"),
        "Say hello"
    );
    assert_eq!(
        attr(&span, "llm.output_messages.0.message.content"),
        "Hello! How can I assist you today?"
    );
    assert_eq!(
        attr(&span, "gen_ai.response.model"),
        "gpt-4o-mini-2024-07-18"
    );
    assert_eq!(attr(&span, "llm.token_count.total"), 28);
    no_mlflow_noise(&span);

    let span = px
        .wait_span(PROJECT, &otlp_trace_id(&streamed), ARRIVAL)
        .await;
    assert_eq!(span["status_code"], "OK");
    let text = attr(&span, "llm.output_messages.0.message.content");
    assert!(text.as_str().is_some_and(|t| t.len() > 10), "{text}");
    assert!(
        attr(&span, "llmtap.time_to_first_token_ms").is_number(),
        "{span}"
    );

    let span = px
        .wait_span(PROJECT, &otlp_trace_id(&refused), ARRIVAL)
        .await;
    assert_eq!(span["status_code"], "ERROR");
    assert_eq!(attr(&span, "error.type"), "invalid_api_key");

    // The caller's API key is nowhere in what Phoenix holds.
    let all = serde_json::to_string(&px.spans(PROJECT).await).unwrap();
    assert!(
        !all.contains("sk-test-SECRET"),
        "an API key reached Phoenix"
    );
    let ready = tap::get(&llmtap.admin_url("/readyz")).await;
    assert_eq!(ready.status, 200, "{:?}", ready.body);
    llmtap.stop().await;
}
