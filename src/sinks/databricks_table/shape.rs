//! llmtap's spans in the shape MLflow's client sends to the Databricks OTLP
//! endpoint (`Span.to_otel_proto()`, recorded in
//! tests/fixtures/databricks/uc.json): every attribute holds its decoded
//! value — JSON objects as key/value lists, arrays as arrays, JSON strings
//! as plain strings — and `mlflow.traceRequestId` names the trace by its
//! v4 id (`trace:/catalog.schema/<hex>`). Databricks reads the spans table
//! back with `Span.from_otel_proto`, which expects exactly this.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, KeyValue, KeyValueList,
};
use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::Value;

use crate::sinks::databricks::span_doc::{attribute_text, REQUEST_ID};

/// The batch with every span reshaped; `trace_id` maps a span's hex trace
/// id to its MLflow trace id.
pub fn reshape(
    batch: &ExportTraceServiceRequest,
    trace_id: impl Fn(&str) -> String,
) -> ExportTraceServiceRequest {
    let mut out = batch.clone();
    for span in out
        .resource_spans
        .iter_mut()
        .flat_map(|r| r.scope_spans.iter_mut())
        .flat_map(|s| s.spans.iter_mut())
    {
        let id = trace_id(&crate::sinks::databricks::group::hex(&span.trace_id));
        reshape_span(span, &id);
    }
    out
}

fn reshape_span(span: &mut Span, mlflow_trace_id: &str) {
    let mut attrs = vec![KeyValue {
        key: REQUEST_ID.into(),
        value: Some(string(mlflow_trace_id)),
    }];
    for kv in span.attributes.drain(..) {
        if kv.key == REQUEST_ID {
            continue;
        }
        let value = kv.value.as_ref().map(|v| {
            let text = attribute_text(v);
            serde_json::from_str::<Value>(&text).map_or_else(|_| string(&text), |v| any(&v))
        });
        attrs.push(KeyValue { key: kv.key, value });
    }
    span.attributes = attrs;
}

fn string(s: &str) -> AnyValue {
    AnyValue {
        value: Some(any_value::Value::StringValue(s.to_string())),
    }
}

/// `_set_otel_proto_anyvalue` of a decoded JSON value (`null` stays unset).
pub fn any(v: &Value) -> AnyValue {
    use any_value::Value as V;
    let value = match v {
        Value::Null => None,
        Value::Bool(b) => Some(V::BoolValue(*b)),
        Value::Number(n) => Some(match n.as_i64() {
            Some(i) => V::IntValue(i),
            None => V::DoubleValue(n.as_f64().unwrap_or(0.0)),
        }),
        Value::String(s) => Some(V::StringValue(s.clone())),
        Value::Array(items) => Some(V::ArrayValue(ArrayValue {
            values: items.iter().map(any).collect(),
        })),
        Value::Object(map) => Some(V::KvlistValue(KeyValueList {
            values: map
                .iter()
                .map(|(k, v)| KeyValue {
                    key: k.clone(),
                    value: Some(any(v)),
                })
                .collect(),
        })),
    };
    AnyValue { value }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::databricks::fixtures::{batch, chat_span};

    fn attr<'a>(span: &'a Span, key: &str) -> &'a any_value::Value {
        span.attributes
            .iter()
            .find(|kv| kv.key == key)
            .and_then(|kv| kv.value.as_ref()?.value.as_ref())
            .unwrap_or_else(|| panic!("no {key}"))
    }

    #[test]
    fn attributes_hold_decoded_values_as_the_client_sends_them() {
        let req = reshape(&batch(vec![chat_span([0xab; 16], [1; 8])]), |hex| {
            format!("trace:/main.llmtap/{hex}")
        });
        let span = &req.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.attributes[0].key, REQUEST_ID);
        assert_eq!(
            attr(span, REQUEST_ID),
            &any_value::Value::StringValue(format!("trace:/main.llmtap/{}", "ab".repeat(16)))
        );
        assert_eq!(
            attr(span, "mlflow.spanType"),
            &any_value::Value::StringValue("CHAT_MODEL".into())
        );
        let any_value::Value::KvlistValue(usage) = attr(span, "mlflow.chat.tokenUsage") else {
            panic!("usage is a key/value list");
        };
        let input = usage
            .values
            .iter()
            .find(|kv| kv.key == "input_tokens")
            .unwrap();
        assert_eq!(
            input.value.as_ref().unwrap().value,
            Some(any_value::Value::IntValue(9))
        );
        assert!(matches!(
            attr(span, "mlflow.spanInputs"),
            any_value::Value::KvlistValue(_)
        ));
        assert_eq!(
            attr(span, "gen_ai.request.temperature"),
            &any_value::Value::DoubleValue(0.7)
        );
        assert_eq!(
            attr(span, "llmtap.stream"),
            &any_value::Value::BoolValue(false)
        );
        assert_eq!(
            attr(span, "user.id"),
            &any_value::Value::StringValue("alice".into())
        );
        // Ids, times, status and the resource are the span's own.
        assert_eq!(span.trace_id, vec![0xab; 16]);
        assert!(req.resource_spans[0].resource.is_some());
    }
}
