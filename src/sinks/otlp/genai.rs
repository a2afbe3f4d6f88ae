//! The canonical (MLflow-autolog-shaped) span to a span that follows the
//! OpenTelemetry GenAI semantic conventions (`gen-ai-spans.md`, development
//! status, the names current in 2026):
//!
//! - name `{gen_ai.operation.name} {gen_ai.request.model}`, kind CLIENT;
//! - `gen_ai.operation.name`, `gen_ai.provider.name`, `gen_ai.request.*`
//!   (model, temperature, top_p, top_k, max_tokens, stop_sequences, seed,
//!   frequency/presence penalty, choice.count, encoding_formats),
//!   `gen_ai.request.stream` (semconv 1.41), `gen_ai.output.type`, `gen_ai.embeddings.dimension.count`,
//!   `gen_ai.response.{model,id,finish_reasons}`,
//!   `gen_ai.usage.{input,output}_tokens`,
//!   `gen_ai.usage.cache_{read,creation}.input_tokens`,
//!   `gen_ai.conversation.id` (from `session.id`, or a Responses
//!   `conversation`), `error.type` on a failure;
//! - the content, as JSON text (the conventions allow a string on spans):
//!   `gen_ai.input.messages`, `gen_ai.output.messages`,
//!   `gen_ai.system_instructions`, `gen_ai.tool.definitions` (the request's
//!   `tools` in the schema's flat shape, [`messages::tool_definitions`]);
//! - kept as they are: every attribute of the canonical span that is not
//!   `mlflow.*` — the `gen_ai.*` it already has, `user.id`, `session.id`,
//!   `http.*`, `url.path`, and every `llmtap.*` attribute (time to first
//!   token, stream, truncation and parse notes: they tell a reader the
//!   content may be incomplete);
//! - dropped: every `mlflow.*` attribute (the MLflow-shaped copies of the
//!   same facts: inputs, outputs, token usage, model, provider, trace tags).
//!
//! Status and events (the `exception` event) pass unchanged. Pure.

use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, ArrayValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{span, status, Span};
use serde_json::Value;

use super::messages::{self, Family};

/// Read access to a span's attributes by key.
pub struct Attrs<'a>(pub &'a [KeyValue]);

impl<'a> Attrs<'a> {
    pub fn get(&self, key: &str) -> Option<&'a any_value::Value> {
        self.0
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref())
            .and_then(|v| v.value.as_ref())
    }

    pub fn str(&self, key: &str) -> Option<&'a str> {
        match self.get(key)? {
            any_value::Value::StringValue(s) => Some(s),
            _ => None,
        }
    }

    pub fn int(&self, key: &str) -> Option<i64> {
        match self.get(key)? {
            any_value::Value::IntValue(i) => Some(*i),
            _ => None,
        }
    }

    /// A JSON-text attribute, parsed.
    pub fn json(&self, key: &str) -> Option<Value> {
        serde_json::from_str(self.str(key)?).ok()
    }
}

/// The API family of a canonical span.
pub fn family(a: &Attrs<'_>, name: &str) -> Family {
    match (name, a.str("gen_ai.operation.name")) {
        ("Messages", _) => Family::Anthropic,
        _ if a.str("mlflow.message.format") == Some("anthropic") => Family::Anthropic,
        ("Responses", _) => Family::Responses,
        (_, Some("embeddings")) => Family::Embeddings,
        (_, Some("text_completion")) => Family::Completions,
        _ => Family::Chat,
    }
}

/// A builder of the new attribute list.
#[derive(Default)]
pub struct Out(pub Vec<KeyValue>);

impl Out {
    pub fn put(&mut self, key: &str, value: any_value::Value) {
        self.0.retain(|kv| kv.key != key);
        self.0.push(KeyValue {
            key: key.to_string(),
            value: Some(AnyValue { value: Some(value) }),
        });
    }

    pub fn str(&mut self, key: &str, v: impl Into<String>) {
        self.put(key, any_value::Value::StringValue(v.into()));
    }

    pub fn int(&mut self, key: &str, v: i64) {
        self.put(key, any_value::Value::IntValue(v));
    }

    pub fn strs(&mut self, key: &str, items: Vec<String>) {
        let values = items
            .into_iter()
            .map(|s| AnyValue {
                value: Some(any_value::Value::StringValue(s)),
            })
            .collect();
        self.put(key, any_value::Value::ArrayValue(ArrayValue { values }));
    }

    pub fn has(&self, key: &str) -> bool {
        self.0.iter().any(|kv| kv.key == key)
    }
}

/// The GenAI-conventions span of a canonical span, and its API family.
pub fn to_genai(s: &Span) -> (Span, Family) {
    let a = Attrs(&s.attributes);
    let mut out = Out::default();
    for kv in &s.attributes {
        if !kv.key.starts_with("mlflow.") {
            out.0.push(kv.clone());
        }
    }
    let family = family(&a, &s.name);
    let request = a.json("mlflow.spanInputs");
    let response = a.json("mlflow.spanOutputs");
    if !out.has("gen_ai.request.model") {
        if let Some(m) = a.str("mlflow.llm.model") {
            out.str("gen_ai.request.model", m);
        }
    }
    if let Some(req) = &request {
        request_params(&mut out, family, req);
    }
    usage(&mut out, &a);
    if let Some(session) = a.str("session.id") {
        out.str("gen_ai.conversation.id", session);
    }
    let mut conversation = request
        .as_ref()
        .map(|r| messages::from_request(family, r))
        .unwrap_or_default();
    if let Some(resp) = &response {
        conversation.output = messages::from_response(family, resp);
    }
    content(&mut out, &conversation, request.as_ref());
    let failed = s
        .status
        .as_ref()
        .is_some_and(|st| st.code == status::StatusCode::Error as i32);
    if failed {
        out.str("error.type", error_type(&a, response.as_ref()));
    }
    let op = a.str("gen_ai.operation.name").unwrap_or("chat");
    let name = match out_str(&out, "gen_ai.request.model") {
        Some(m) => format!("{op} {m}"),
        None => op.to_string(),
    };
    let span = Span {
        trace_id: s.trace_id.clone(),
        span_id: s.span_id.clone(),
        trace_state: s.trace_state.clone(),
        parent_span_id: s.parent_span_id.clone(),
        flags: s.flags,
        name,
        kind: span::SpanKind::Client as i32,
        start_time_unix_nano: s.start_time_unix_nano,
        end_time_unix_nano: s.end_time_unix_nano,
        attributes: out.0,
        dropped_attributes_count: s.dropped_attributes_count,
        events: s.events.clone(),
        dropped_events_count: s.dropped_events_count,
        links: s.links.clone(),
        dropped_links_count: s.dropped_links_count,
        status: s.status.clone(),
    };
    (span, family)
}

fn out_str<'a>(out: &'a Out, key: &str) -> Option<&'a str> {
    Attrs(&out.0).str(key)
}

/// The request parameters the canonical span does not carry yet.
fn request_params(out: &mut Out, family: Family, req: &Value) {
    let num = |k: &str| req.get(k).and_then(Value::as_f64);
    for (k, attr) in [
        ("frequency_penalty", "gen_ai.request.frequency_penalty"),
        ("presence_penalty", "gen_ai.request.presence_penalty"),
        ("top_k", "gen_ai.request.top_k"),
    ] {
        if let Some(f) = num(k) {
            out.put(attr, any_value::Value::DoubleValue(f));
        }
    }
    if !out.has("gen_ai.request.max_tokens") {
        if let Some(n) = req.get("max_output_tokens").and_then(Value::as_i64) {
            out.int("gen_ai.request.max_tokens", n);
        }
    }
    if let Some(stream) = req.get("stream").and_then(Value::as_bool) {
        out.put("gen_ai.request.stream", any_value::Value::BoolValue(stream));
    }
    if let Some(seed) = req.get("seed").and_then(Value::as_i64) {
        out.int("gen_ai.request.seed", seed);
    }
    if let Some(n) = req.get("n").and_then(Value::as_i64).filter(|n| *n != 1) {
        out.int("gen_ai.request.choice.count", n);
    }
    let stop = req.get("stop").or(req.get("stop_sequences"));
    match stop {
        Some(Value::String(s)) => out.strs("gen_ai.request.stop_sequences", vec![s.clone()]),
        Some(Value::Array(items)) => {
            let v = items
                .iter()
                .filter_map(Value::as_str)
                .map(String::from)
                .collect();
            out.strs("gen_ai.request.stop_sequences", v);
        }
        _ => {}
    }
    let format = req
        .get("response_format")
        .or(req.get("text").and_then(|t| t.get("format")))
        .and_then(|f| f.get("type"))
        .and_then(Value::as_str);
    match format {
        Some("json_object" | "json_schema") => out.str("gen_ai.output.type", "json"),
        Some("text") => out.str("gen_ai.output.type", "text"),
        _ => {}
    }
    if family == Family::Embeddings {
        if let Some(f) = req.get("encoding_format").and_then(Value::as_str) {
            out.strs("gen_ai.request.encoding_formats", vec![f.to_string()]);
        }
        if let Some(d) = req.get("dimensions").and_then(Value::as_i64) {
            out.int("gen_ai.embeddings.dimension.count", d);
        }
    }
    let conversation = req
        .get("conversation")
        .and_then(|c| c.as_str().or(c.get("id").and_then(Value::as_str)));
    if let Some(c) = conversation {
        out.str("gen_ai.conversation.id", c);
    }
}

/// Cache counters from `mlflow.chat.tokenUsage` (input tokens already
/// include them, as the conventions want).
fn usage(out: &mut Out, a: &Attrs<'_>) {
    let Some(u) = a.json("mlflow.chat.tokenUsage") else {
        return;
    };
    for (k, attr) in [
        (
            "cache_read_input_tokens",
            "gen_ai.usage.cache_read.input_tokens",
        ),
        (
            "cache_creation_input_tokens",
            "gen_ai.usage.cache_creation.input_tokens",
        ),
    ] {
        if let Some(n) = u.get(k).and_then(Value::as_i64) {
            out.int(attr, n);
        }
    }
}

/// The content attributes, as JSON text; absent when there is nothing.
fn content(out: &mut Out, c: &messages::Conversation, req: Option<&Value>) {
    let put = |out: &mut Out, key: &str, v: &[Value]| {
        if !v.is_empty() {
            out.str(key, Value::Array(v.to_vec()).to_string());
        }
    };
    put(out, "gen_ai.system_instructions", &c.system);
    put(out, "gen_ai.input.messages", &c.input);
    put(out, "gen_ai.output.messages", &c.output);
    if let Some(t) = req.and_then(messages::tool_definitions) {
        out.str("gen_ai.tool.definitions", t.to_string());
    }
}

/// `error.type`: the provider's error code (OpenAI `error.code`), else its
/// error type (`error.type`, Anthropic's too) when the body names one, else
/// the HTTP status, else llmtap's class (`UpstreamError`,
/// `ClientDisconnected`, `IncompleteStream`, ...).
fn error_type(a: &Attrs<'_>, response: Option<&Value>) -> String {
    let provider = response.and_then(|r| {
        let e = r.get("error")?;
        e.get("code")
            .filter(|c| c.is_string())
            .or(e.get("type"))
            .and_then(Value::as_str)
            .map(str::to_string)
    });
    if let Some(t) = provider {
        return t;
    }
    match a.int("http.response.status_code") {
        Some(code) if code >= 400 => code.to_string(),
        _ => a.str("llmtap.error.type").unwrap_or("_OTHER").to_string(),
    }
}
