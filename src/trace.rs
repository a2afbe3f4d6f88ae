//! From a finished [`Exchange`] to its [`SpanRecord`]: decode the captured
//! copies, parse them, and map the result onto the attributes MLflow's own
//! autologging writes (mlflow-wire.md §4) plus the OpenTelemetry GenAI ones.
//!
//! Pure apart from reading the clock-free facts in the exchange; runs on a
//! parse worker, never on the request path.
//!
//! Memory is bounded by the capture cap, whatever the bodies hold: a
//! compressed body is decoded to at most the cap, and a decoded body is
//! parsed only when its estimated cost fits the parse budget
//! ([`crate::parse::budget`]); otherwise the span keeps the call's facts
//! and says why the body was not parsed.

use std::time::Duration;

use serde_json::Value;

use crate::exchange::{CapturedBody, Exchange};
use crate::parse::budget::{parse_budget, value_within, within};
use crate::parse::decode::decode_body;
use crate::parse::{
    anthropic, openai_chat, openai_completions, openai_embeddings, openai_responses, Outcome,
};
use crate::record::{AttrValue, SpanEvent, SpanRecord, SpanStatus};
use crate::route::Api;
use crate::tee::BodyEnd;

pub mod chunks;
pub mod facts;
mod params;
mod pyjson;
mod sdk_error;

/// `mlflow.spanLogLevel` of a span that ended well (Python's `logging.INFO`),
/// and of one that failed (`logging.ERROR`), as MLflow's autologging sets it.
const LOG_LEVEL_INFO: i64 = 20;
const LOG_LEVEL_ERROR: i64 = 40;

/// Why a body's parse was refused (`llmtap.<body>.unparsed`).
const OVER_BUDGET: &str = "parse_budget";

/// What the pipeline learns from building a span, besides the span.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Built {
    pub time_to_first_token: Option<Duration>,
    /// What sessions and cost need ([`facts`]).
    pub call: facts::CallFacts,
}

/// A decoded body copy.
struct Decoded {
    text: Vec<u8>,
    /// Wire bytes the body carried.
    total: u64,
    /// Why the text is not the whole body, if it is not.
    truncated: Option<&'static str>,
    /// Whether a content coding was undone.
    encoded: bool,
    note: Option<String>,
}

/// Decodes a captured body to at most `cap` bytes (compression bombs stop there).
fn decode(body: &CapturedBody, cap: usize) -> Decoded {
    let raw = body.capture.bytes();
    let (text, decoded_cut, note) = match decode_body(body.content_encoding.as_deref(), &raw, cap) {
        Ok((text, cut)) => (text, cut, None),
        Err(e) => {
            let n = raw.len().min(cap);
            (
                raw.get(..n).unwrap_or_default().to_vec(),
                raw.len() > n,
                Some(e.to_string()),
            )
        }
    };
    let c = &body.capture;
    let truncated = match (c.truncated(), decoded_cut) {
        (true, _) => Some(
            c.skipped()
                .or(c.cut())
                .map_or("capture_cap", |why| why.as_str()),
        ),
        (false, true) => Some("decoded_cap"),
        (false, false) => None,
    };
    let encoded = body.content_encoding.as_deref().is_some_and(|e| {
        e.split(',')
            .any(|t| !t.trim().is_empty() && !t.trim().eq_ignore_ascii_case("identity"))
    });
    Decoded {
        text,
        total: c.total_bytes,
        truncated,
        encoded,
        note,
    }
}

/// The size facts of one body: `llmtap.<which>.bytes` (on the wire), and
/// when the copy is short, `.truncated` and `.truncated_reason`;
/// `.decoded_bytes` when a content coding was undone.
fn body_facts(span: &mut SpanRecord, which: &str, d: &Decoded) {
    span.set(format!("llmtap.{which}.bytes"), d.total);
    if let Some(why) = d.truncated {
        span.set(format!("llmtap.{which}.truncated"), true);
        span.set(format!("llmtap.{which}.truncated_reason"), why);
    }
    if d.encoded {
        span.set(format!("llmtap.{which}.decoded_bytes"), d.text.len() as u64);
    }
    if let Some(note) = &d.note {
        span.set(format!("llmtap.{which}.decode_error"), note.as_str());
    }
}

fn is_event_stream(body: &CapturedBody) -> bool {
    body.content_type
        .as_deref()
        .is_some_and(|c| c.trim_start().starts_with("text/event-stream"))
}

fn unix_nanos(ex: &Exchange, at: std::time::Instant) -> u64 {
    let at = ex.started_wall + at.saturating_duration_since(ex.started);
    at.duration_since(std::time::UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Builds the root span of one exchange; `cap` is the capture cap.
/// The call's context headers as span attributes: the session
/// (`session.id`, which MLflow turns into `mlflow.trace.session`), tags
/// (`mlflow.traceTag.<key>`, trace tags in MLflow), metadata
/// (`llmtap.metadata.<key>`; OTLP cannot set MLflow trace metadata), and
/// the request-tracking ids as tags.
fn set_context(span: &mut SpanRecord, c: &crate::context::CallContext) {
    if let Some(s) = &c.session {
        span.set("session.id", s.as_str());
    }
    for (k, v) in &c.tags {
        span.set(format!("mlflow.traceTag.{k}"), v.as_str());
    }
    for (k, v) in &c.metadata {
        span.set(format!("{}{k}", crate::context::METADATA_ATTR), v.as_str());
    }
    if let Some(id) = &c.client_request_id {
        span.set("mlflow.traceTag.llmtap.client_request_id", id.as_str());
    }
    if let Some(tp) = &c.traceparent {
        span.set("llmtap.traceparent", tp.as_str());
    }
    if c.dropped > 0 {
        span.set("llmtap.context.dropped", c.dropped as i64);
    }
}

/// What the request body adds to the headers' context: its `metadata`
/// entries (`llmtap.metadata.<key>`, a header's value wins) and OpenAI's
/// `prompt_cache_key` as a trace tag.
fn set_body_context(
    span: &mut SpanRecord,
    headers: &crate::context::CallContext,
    body: &crate::context::body::BodyContext,
) {
    for (k, v) in &body.metadata {
        if !headers.metadata.iter().any(|(hk, _)| hk == k) {
            span.set(format!("{}{k}", crate::context::METADATA_ATTR), v.as_str());
        }
    }
    if let Some(key) = &body.prompt_cache_key {
        span.set("mlflow.traceTag.llmtap.prompt_cache_key", key.as_str());
    }
    if body.dropped > 0 {
        span.set("llmtap.context.body_dropped", body.dropped as i64);
    }
}

pub fn build(ex: &Exchange, cap: usize) -> (SpanRecord, Built) {
    let budget = parse_budget(cap);
    let request = ex.request.as_ref().map(|b| decode(b, cap));
    let request_fits = request
        .as_ref()
        .is_none_or(|d| value_within(&d.text, budget));
    let request_json: Option<Value> = request
        .as_ref()
        .filter(|_| request_fits)
        .and_then(|d| serde_json::from_slice(&d.text).ok());
    let api = ex.api.resolve(request_json.as_ref());
    let mut span = SpanRecord {
        trace_id: ex.trace_id,
        span_id: ex.span_id,
        // Set only when the call joined the agent's trace (`traceparent`).
        parent_span_id: crate::context::traceparent::parent_span(
            ex.context.traceparent.as_deref(),
            &ex.trace_id,
        ),
        name: api.span_name().to_string(),
        start_unix_nano: unix_nanos(ex, ex.started),
        end_unix_nano: unix_nanos(ex, ex.ended),
        status: SpanStatus::Ok,
        attributes: Vec::with_capacity(32),
        events: Vec::new(),
    };
    let mut built = Built::default();
    span.set("mlflow.spanType", api.span_type());

    if let Some(req) = &request {
        set_request(&mut span, api, req, request_json.as_ref(), request_fits);
    }
    let skipped = [&ex.request, &ex.response]
        .into_iter()
        .flatten()
        .find_map(|b| b.capture.skipped());
    if let Some(why) = skipped {
        span.set("llmtap.capture.skipped", why.as_str());
    }
    let req_field = |k: &str| request_json.as_ref().and_then(|v| v.get(k));
    let request_model = req_field("model").and_then(Value::as_str);
    let streamed_request = req_field("stream").and_then(Value::as_bool) == Some(true);
    if let Some(tools) = req_field("tools").filter(|t| t.as_array().is_some_and(|a| !a.is_empty()))
    {
        span.set("mlflow.chat.tools", tools.to_string());
    }

    let response = ex.response.as_ref().map(|b| (b, decode(b, cap)));
    let read = match &response {
        Some((body, dec)) => read_response(&mut span, ex, api, body, dec, budget),
        None => ResponseRead::default(),
    };
    let (outcome, stream, response_partial) = (read.outcome, read.stream, read.partial);
    built.time_to_first_token = read.time_to_first_token;
    span.set("llmtap.stream", stream || streamed_request);

    set_llm(&mut span, ex, api, request_model, &outcome);
    set_who(&mut span, ex, request_json.as_ref());

    set_genai(&mut span, api, ex.provider, request_json.as_ref(), &outcome);
    set_http(&mut span, ex);

    let response_text = response.as_ref().map_or(&[][..], |(_, d)| &d.text[..]);
    let failed = failure(ex, api, &outcome, stream, response_partial, response_text);
    set_failure(&mut span, failed);
    built.call = facts::CallFacts::of(api, request_json, &outcome, ex.deployment.as_deref());
    (span, built)
}

/// MLflow's LLM attributes: token usage, model, provider, message format,
/// trace name.
fn set_llm(
    span: &mut SpanRecord,
    ex: &Exchange,
    api: Api,
    request_model: Option<&str>,
    outcome: &Outcome,
) {
    if let Some(usage) = &outcome.usage {
        span.set("mlflow.chat.tokenUsage", usage.to_mlflow_json().to_string());
        span.set("gen_ai.usage.input_tokens", usage.input_tokens);
        span.set("gen_ai.usage.output_tokens", usage.output_tokens);
        if let Some(r) = usage.reasoning_tokens {
            span.set("llmtap.usage.reasoning_tokens", r);
        }
    }
    // OpenAI's autologging names the model the response names; Anthropic's
    // the one the request asked for (gen_ai.response.model keeps the other).
    let (first, second) = match api {
        Api::Messages => (request_model, outcome.model.as_deref()),
        _ => (outcome.model.as_deref(), request_model),
    };
    if let Some(m) = first.or(second).or(ex.deployment.as_deref()) {
        span.set("mlflow.llm.model", m);
    }
    span.set("mlflow.llm.provider", ex.provider);
    span.set("mlflow.message.format", api.message_format());
    span.set(
        "mlflow.traceTag.mlflow.traceName",
        ex.context.trace_name.as_deref().unwrap_or(api.span_name()),
    );
}

/// Who and what the call was for: the user (the header, else the body's
/// `user`, `safety_identifier`, Anthropic's `metadata.user_id`), the
/// context headers and body fields, the provider's request id.
fn set_who(span: &mut SpanRecord, ex: &Exchange, request: Option<&Value>) {
    let body_context = request.map(crate::context::body::read).unwrap_or_default();
    if let Some(user) = ex.context.user.as_deref().or(body_context.user.as_deref()) {
        span.set("user.id", user);
    }
    set_context(span, &ex.context);
    set_body_context(span, &ex.context, &body_context);
    if let Some(id) = ex
        .response_head
        .as_ref()
        .and_then(|h| h.request_id.as_deref())
    {
        span.set("mlflow.traceTag.llmtap.provider_request_id", id);
    }
}

/// The request's attributes: inputs (embeddings' token arrays summarised),
/// the OpenAI request parameters, body facts, the over-budget mark.
fn set_request(span: &mut SpanRecord, api: Api, req: &Decoded, json: Option<&Value>, fits: bool) {
    let inputs = match (api, json) {
        // Token-array inputs can run to megabytes: summarised.
        (Api::Embeddings, Some(v)) => {
            crate::pydumps::dumps(&openai_embeddings::request_summary(v), false)
        }
        _ => python_style(&req.text, fits, json.is_some()),
    };
    span.set("mlflow.spanInputs", inputs);
    if fits && params::recorded(api) {
        span.attributes.extend(params::attributes(&req.text));
    }
    body_facts(span, "request", req);
    if !fits {
        span.set("llmtap.request.unparsed", OVER_BUDGET);
    }
}

/// What reading the response gave [`build`].
#[derive(Default)]
struct ResponseRead {
    outcome: Outcome,
    stream: bool,
    /// Cut or over budget: only a whole, parsed stream can lack its end.
    partial: bool,
    time_to_first_token: Option<Duration>,
}

/// Parses the response (within `budget`) and sets its attributes: outputs
/// (streams rebuilt, embeddings without vectors), body facts, time to first
/// token.
fn read_response(
    span: &mut SpanRecord,
    ex: &Exchange,
    api: Api,
    body: &CapturedBody,
    dec: &Decoded,
    budget: usize,
) -> ResponseRead {
    let stream = is_event_stream(body);
    let fits = within(&dec.text, stream, budget);
    let mut read = ResponseRead {
        stream,
        partial: dec.truncated.is_some() || !fits,
        ..ResponseRead::default()
    };
    if fits {
        read.outcome = parse_response(api, &dec.text, stream);
    } else {
        span.set("llmtap.response.unparsed", OVER_BUDGET);
    }
    match &read.outcome.response {
        // Streams are reconstructed; embeddings lose their vectors.
        Some(v) if stream || api == Api::Embeddings => {
            span.set("mlflow.spanOutputs", crate::pydumps::dumps(v, false))
        }
        // A whole JSON body (not SSE) that parsed needs no second check.
        Some(_) if read.outcome.stream.is_none() => {
            span.set("mlflow.spanOutputs", python_style(&dec.text, fits, true))
        }
        _ if !dec.text.is_empty() => {
            span.set("mlflow.spanOutputs", python_style(&dec.text, fits, false))
        }
        _ => {}
    }
    body_facts(span, "response", dec);
    // Token offsets index the decoded text; frame times index wire bytes.
    let identity = body.content_encoding.as_deref().is_none_or(|e| {
        e.split(',')
            .all(|t| t.trim().is_empty() || t.trim().eq_ignore_ascii_case("identity"))
    });
    if let (Some(facts), true, true) = (&read.outcome.stream, stream, identity) {
        let first = facts
            .first_token_offset
            .and_then(|o| body.capture.arrival_of(o as u64));
        if let Some(at) = first {
            let ttft = at.saturating_duration_since(ex.started);
            read.time_to_first_token = Some(ttft);
            span.set("llmtap.time_to_first_token_ms", ttft.as_secs_f64() * 1000.0);
        }
    }
    read
}

/// OpenTelemetry GenAI semantic conventions.
fn set_genai(
    span: &mut SpanRecord,
    api: Api,
    provider: &str,
    request: Option<&Value>,
    outcome: &Outcome,
) {
    let req_field = |k: &str| request.and_then(|v| v.get(k));
    span.set("gen_ai.operation.name", api.operation());
    span.set("gen_ai.provider.name", provider);
    if let Some(m) = req_field("model").and_then(Value::as_str) {
        span.set("gen_ai.request.model", m);
    }
    for (key, attr) in [
        ("temperature", "gen_ai.request.temperature"),
        ("top_p", "gen_ai.request.top_p"),
    ] {
        if let Some(f) = req_field(key).and_then(Value::as_f64) {
            span.set(attr, f);
        }
    }
    let max_tokens = req_field("max_completion_tokens").or(req_field("max_tokens"));
    if let Some(n) = max_tokens.and_then(Value::as_u64) {
        span.set("gen_ai.request.max_tokens", n);
    }
    if let Some(m) = &outcome.model {
        span.set("gen_ai.response.model", m.as_str());
    }
    if let Some(id) = &outcome.response_id {
        span.set("gen_ai.response.id", id.as_str());
    }
    if !outcome.finish_reasons.is_empty() {
        span.set(
            "gen_ai.response.finish_reasons",
            AttrValue::StrArray(outcome.finish_reasons.clone()),
        );
    }
}

/// HTTP facts: method, path, status, a usage-hiding failure.
fn set_http(span: &mut SpanRecord, ex: &Exchange) {
    span.set("http.request.method", ex.method.as_str());
    span.set("url.path", ex.path.as_str());
    let status = ex
        .response_head
        .as_ref()
        .map(|h| h.status)
        .or(ex.proxy_status);
    if let Some(s) = status {
        span.set("http.response.status_code", i64::from(s));
    }
    if let Some(reason) = &ex.usage_hiding_failed {
        span.set("llmtap.usage_hiding.failed", reason.as_str());
    }
}

/// The log level, and for a failed call its exception event and status.
fn set_failure(span: &mut SpanRecord, failed: Option<(&'static str, String)>) {
    let level = match failed {
        Some(_) => LOG_LEVEL_ERROR,
        None => LOG_LEVEL_INFO,
    };
    span.set("mlflow.spanLogLevel", level);
    if let Some((kind, message)) = failed {
        span.set("llmtap.error.type", kind);
        span.events.push(SpanEvent {
            name: "exception".into(),
            time_unix_nano: span.end_unix_nano,
            attributes: vec![
                ("exception.type".into(), kind.into()),
                ("exception.message".into(), message.clone().into()),
            ],
        });
        // Anthropic's autologging writes "<class>: <message>"; OpenAI's writes
        // none, which llmtap does not copy (other backends show this one).
        span.status = SpanStatus::Error(format!("{kind}: {message}"));
    }
}

/// A body as text for `mlflow.spanInputs` / `mlflow.spanOutputs`: JSON in
/// `json.dumps` style (`", "`, `": "`, the body's own key order), as the
/// MLflow client serialises autologged values, so the server's previews
/// read the same; anything else, or a body past the parse budget
/// (`restyle` false), as it came. `parsed`: serde_json read exactly this
/// text as JSON already, so it is not checked again.
fn python_style(text: &[u8], restyle: bool, parsed: bool) -> String {
    let raw = String::from_utf8_lossy(text);
    let styled = match (restyle, parsed) {
        (false, _) => None,
        (true, true) => pyjson::dumps_parsed(&raw),
        (true, false) => pyjson::dumps(&raw),
    };
    styled.unwrap_or_else(|| raw.into_owned())
}

/// The response parser of each API.
pub(crate) fn parse_response(api: Api, body: &[u8], stream: bool) -> Outcome {
    match api {
        Api::ChatCompletions | Api::Invocations => openai_chat::parse(body, stream),
        Api::Responses => openai_responses::parse(body, stream),
        Api::Messages => anthropic::parse(body, stream),
        Api::Completions => openai_completions::parse(body, stream),
        Api::Embeddings => openai_embeddings::parse(body, stream),
    }
}

/// Decides whether the call failed, and how to say so: (exception type,
/// message), worded as the provider's SDK words it where the SDK would have
/// seen the failure (an error status, an error event in the stream);
/// `body` is the decoded response text.
fn failure(
    ex: &Exchange,
    api: Api,
    outcome: &Outcome,
    stream: bool,
    truncated: bool,
    body: &[u8],
) -> Option<(&'static str, String)> {
    if let Some(e) = &ex.proxy_error {
        return Some(("UpstreamError", e.clone()));
    }
    let status = ex.response_head.as_ref().map(|h| h.status).unwrap_or(0);
    let provider_msg = outcome.error.as_ref().map(|e| e.message.clone());
    if status >= 400 {
        return Some((
            sdk_error::class(api, status),
            sdk_error::message(api, status, body),
        ));
    }
    match ex.response.as_ref().map(|b| &b.end) {
        Some(BodyEnd::Error(e)) => {
            return Some(("UpstreamError", format!("response body failed: {e}")));
        }
        Some(BodyEnd::Cancelled) => {
            return Some((
                "ClientDisconnected",
                "client disconnected before the response ended".into(),
            ));
        }
        _ => {}
    }
    if let Some(msg) = provider_msg {
        // An error event in a 200 stream: openai raises `APIError(message)`,
        // anthropic `APIStatusError` (its text is the event's repr, of which
        // llmtap keeps only the message).
        return Some((sdk_error::stream_class(api), msg));
    }
    let saw_end = outcome.stream.as_ref().is_some_and(|s| s.saw_end);
    if stream && !saw_end && !truncated {
        return Some((
            "IncompleteStream",
            format!("stream ended without {}", api.stream_end_marker()),
        ));
    }
    None
}

#[cfg(test)]
mod tests;
