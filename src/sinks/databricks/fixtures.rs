//! Test spans of llmtap's canonical shape (what [`crate::trace`] writes and
//! [`crate::otlp`] encodes): a chat call, a stream, a provider error, an
//! embeddings call, a call without usage.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;

use crate::otlp::{request_with, to_span};
use crate::record::{AttrValue, SpanEvent, SpanRecord, SpanStatus};

/// 2025-11-24T16:00:00.123Z
pub const START: u64 = 1_764_000_000_123_456_789;

/// A batch as the pipeline sends it to Databricks by default: no
/// `service.name` (`context.mlflow_service_name_tag`), no environment.
pub fn batch(spans: Vec<Span>) -> ExportTraceServiceRequest {
    request_with(&[], spans)
}

fn record(trace_id: [u8; 16], span_id: [u8; 8], inputs: &str) -> SpanRecord {
    let mut r = SpanRecord {
        trace_id,
        span_id,
        parent_span_id: None,
        name: "Completions".into(),
        start_unix_nano: START,
        end_unix_nano: START + 1_250_000_000,
        status: SpanStatus::Ok,
        attributes: Vec::new(),
        events: Vec::new(),
    };
    r.set("mlflow.spanType", "CHAT_MODEL");
    r.set("mlflow.spanInputs", inputs);
    r
}

pub const CHAT_IN: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Capital of France?"}],"user":"alice"}"#;
const CHAT_OUT: &str = r#"{"id":"chatcmpl-1","object":"chat.completion","model":"gpt-4o-mini-2024-07-18","choices":[{"index":0,"message":{"role":"assistant","content":"Paris."},"finish_reason":"stop"}],"usage":{"prompt_tokens":9,"completion_tokens":3,"total_tokens":12}}"#;

fn common(r: &mut SpanRecord) {
    r.set("mlflow.llm.model", "gpt-4o-mini-2024-07-18");
    r.set("mlflow.llm.provider", "openai");
    r.set("mlflow.message.format", "openai");
    r.set("mlflow.traceTag.mlflow.traceName", "Completions");
    r.set("gen_ai.request.temperature", 0.7);
    r.set(
        "gen_ai.response.finish_reasons",
        AttrValue::StrArray(vec!["stop".into()]),
    );
    r.set("http.response.status_code", 200i64);
}

/// A plain chat call with usage, a user and a session.
pub fn chat_record(trace_id: [u8; 16], span_id: [u8; 8]) -> SpanRecord {
    let mut r = record(trace_id, span_id, CHAT_IN);
    r.set("mlflow.spanOutputs", CHAT_OUT);
    r.set(
        "mlflow.chat.tokenUsage",
        r#"{"input_tokens":9,"output_tokens":3,"total_tokens":12}"#,
    );
    r.set("user.id", "alice");
    r.set("session.id", "sess-42");
    r.set("mlflow.traceTag.team", "search");
    r.set("llmtap.stream", false);
    common(&mut r);
    r
}

pub fn chat_span(trace_id: [u8; 16], span_id: [u8; 8]) -> Span {
    to_span(&chat_record(trace_id, span_id))
}

/// A streamed call: outputs rebuilt into one completion, cache tokens.
pub fn stream_span() -> Span {
    let mut r = record([0x5e; 16], [0x51; 8], CHAT_IN);
    r.set(
        "mlflow.spanOutputs",
        r#"{"choices":[{"index":0,"message":{"role":"assistant","content":"The capital is Paris."}}]}"#,
    );
    r.set(
        "mlflow.chat.tokenUsage",
        r#"{"input_tokens":9,"output_tokens":6,"total_tokens":15,"cache_read_input_tokens":4}"#,
    );
    r.set("llmtap.stream", true);
    r.set("llmtap.time_to_first_token_ms", 182.5);
    common(&mut r);
    to_span(&r)
}

/// A provider error: HTTP 429, status ERROR, an `exception` event, no usage.
pub fn error_span() -> Span {
    let mut r = record([0xe0; 16], [0xe1; 8], CHAT_IN);
    r.set(
        "mlflow.spanOutputs",
        r#"{"error":{"message":"Rate limit reached","type":"requests"}}"#,
    );
    common(&mut r);
    r.status = SpanStatus::Error("HTTP 429: Rate limit reached".into());
    r.events.push(SpanEvent {
        name: "exception".into(),
        time_unix_nano: r.end_unix_nano,
        attributes: vec![
            ("exception.type".into(), "ProviderError".into()),
            (
                "exception.message".into(),
                "HTTP 429: Rate limit reached".into(),
            ),
        ],
    });
    to_span(&r)
}

/// An embeddings call (inputs summarised, outputs without vectors).
pub fn embeddings_span() -> Span {
    let mut r = record(
        [0xeb; 16],
        [0xeb; 8],
        r#"{"model":"text-embedding-3-small","input":"hello","encoding_format":"float"}"#,
    );
    r.name = "Embeddings".into();
    r.attributes[0].1 = "EMBEDDING".into();
    r.set(
        "mlflow.spanOutputs",
        r#"{"object":"list","data":[{"object":"embedding","index":0,"dimensions":1536}],"usage":{"prompt_tokens":1,"total_tokens":1}}"#,
    );
    r.set(
        "mlflow.chat.tokenUsage",
        r#"{"input_tokens":1,"output_tokens":0,"total_tokens":1}"#,
    );
    to_span(&r)
}

/// A call whose response carried no usage (and no body at all).
pub fn no_usage_span() -> Span {
    let mut r = record([0x0a; 16], [0x0b; 8], "not json: a truncated body");
    r.name = "Responses".into();
    to_span(&r)
}

/// A child span (only MLflow-made traces have them; llmtap's are roots).
pub fn child_span(trace_id: [u8; 16], span_id: [u8; 8], parent: [u8; 8]) -> Span {
    let mut r = chat_record(trace_id, span_id);
    r.parent_span_id = Some(parent);
    r.name = "tool".into();
    to_span(&r)
}
