//! The span document MLflow keeps for a trace on Databricks (uploaded to the
//! signed URL, mlflow-wire.md §8): `{"spans": [Span.to_dict(), ...]}`, as
//! MLflow's `Span.to_dict()` writes a span — ids base64, integer nanos,
//! status code names, every attribute value a JSON-encoded string,
//! `mlflow.traceRequestId` present, event attributes as plain values — and
//! `json.dumps(..., ensure_ascii=False)` serialises it.
//!
//! Attribute values follow what MLflow itself stores for an OTLP span
//! (`Span.from_otel_proto` then `sanitize_attributes`): a string that is
//! already JSON text of an object, array or string (`mlflow.spanInputs`,
//! `mlflow.chat.tokenUsage`) is kept as it is; any other value is
//! `json.dumps`-ed (`"CHAT_MODEL"` -> `"\"CHAT_MODEL\""`, `9` -> `"9"`).

use base64::Engine;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{status, Span};
use serde_json::{json, Map, Value};

use super::group::TraceSpans;
use crate::pydumps;

/// `mlflow.traceRequestId`: the MLflow trace id every span carries.
pub const REQUEST_ID: &str = "mlflow.traceRequestId";

/// The document for one trace, as a value; `mlflow_trace_id` is the trace's
/// MLflow id (`tr-<hex>`, or `trace:/<location>/<hex>` in Unity Catalog).
pub fn document(trace: &TraceSpans<'_>, mlflow_trace_id: &str) -> Value {
    let spans: Vec<Value> = trace
        .spans
        .iter()
        .map(|s| span_dict(s, mlflow_trace_id))
        .collect();
    json!({ "spans": spans })
}

/// The document's bytes, as the client uploads them.
pub fn document_bytes(doc: &Value) -> Vec<u8> {
    pydumps::dumps(doc, false).into_bytes()
}

/// One span as `Span.to_dict()` writes it.
pub fn span_dict(span: &Span, mlflow_trace_id: &str) -> Value {
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let mut attributes = attribute_map(&span.attributes);
    attributes.insert(
        REQUEST_ID.into(),
        Value::String(pydumps::dumps(mlflow_trace_id, false)),
    );
    let (code, message) = status_of(span);
    json!({
        "trace_id": b64(&span.trace_id),
        "span_id": b64(&span.span_id),
        "parent_span_id": if span.parent_span_id.is_empty() {
            Value::Null
        } else {
            Value::String(b64(&span.parent_span_id))
        },
        "name": span.name,
        "start_time_unix_nano": span.start_time_unix_nano,
        "end_time_unix_nano": span.end_time_unix_nano,
        "events": span.events.iter().map(|e| json!({
            "name": e.name,
            "time_unix_nano": e.time_unix_nano,
            "attributes": plain_map(&e.attributes),
        })).collect::<Vec<_>>(),
        "status": {"code": code, "message": message},
        "attributes": attributes,
        "links": [],
    })
}

/// `STATUS_CODE_OK` / `_ERROR` / `_UNSET` and the message.
fn status_of(span: &Span) -> (&'static str, String) {
    let st = span.status.clone().unwrap_or_default();
    let code = match status::StatusCode::try_from(st.code) {
        Ok(status::StatusCode::Ok) => "STATUS_CODE_OK",
        Ok(status::StatusCode::Error) => "STATUS_CODE_ERROR",
        _ => "STATUS_CODE_UNSET",
    };
    (code, st.message)
}

/// Span attributes: key -> JSON-encoded string.
pub fn attribute_map(attrs: &[KeyValue]) -> Map<String, Value> {
    attrs
        .iter()
        .map(|kv| {
            let text = kv.value.as_ref().map_or("null".into(), attribute_text);
            (kv.key.clone(), Value::String(text))
        })
        .collect()
}

/// Event attributes: key -> the plain value.
fn plain_map(attrs: &[KeyValue]) -> Map<String, Value> {
    attrs
        .iter()
        .map(|kv| (kv.key.clone(), kv.value.as_ref().map_or(Value::Null, plain)))
        .collect()
}

/// One attribute value as MLflow stores it (see the module header).
pub fn attribute_text(v: &AnyValue) -> String {
    match &v.value {
        Some(any_value::Value::StringValue(s)) if is_json_text(s) => s.clone(),
        _ => pydumps::dumps(&plain(v), false),
    }
}

/// Whether `s` is JSON text of an object, array or string.
fn is_json_text(s: &str) -> bool {
    matches!(s.trim_start().as_bytes().first(), Some(b'{' | b'[' | b'"'))
        && serde_json::from_str::<serde::de::IgnoredAny>(s).is_ok()
}

/// An OTLP value as a plain JSON value.
pub fn plain(v: &AnyValue) -> Value {
    use any_value::Value as V;
    match &v.value {
        None => Value::Null,
        Some(V::StringValue(s)) => Value::String(s.clone()),
        Some(V::BoolValue(b)) => Value::Bool(*b),
        Some(V::IntValue(i)) => json!(i),
        Some(V::DoubleValue(f)) => json!(f),
        Some(V::ArrayValue(a)) => Value::Array(a.values.iter().map(plain).collect()),
        Some(V::KvlistValue(kv)) => Value::Object(plain_map(&kv.values)),
        Some(V::BytesValue(b)) => {
            Value::String(base64::engine::general_purpose::STANDARD.encode(b))
        }
    }
}

/// A root-span attribute's stored text (what `TraceData.request` returns
/// for `mlflow.spanInputs`), if the span has it.
pub fn stored_attribute(span: &Span, key: &str) -> Option<String> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .map(attribute_text)
}

/// A string attribute's raw value (`user.id`, `mlflow.traceTag.*`).
pub fn string_attribute<'a>(span: &'a Span, key: &str) -> Option<&'a str> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| match kv.value.as_ref()?.value.as_ref()? {
            any_value::Value::StringValue(s) => Some(s.as_str()),
            _ => None,
        })
}

#[cfg(test)]
mod tests;
