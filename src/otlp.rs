//! [`SpanRecord`] to OTLP: protobuf spans for OTLP/HTTP, and OTLP-JSON for
//! the file sink. Uses the `opentelemetry-proto` types; no SDK.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{
    any_value, AnyValue, ArrayValue, InstrumentationScope, KeyValue,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{
    span, status, ResourceSpans, ScopeSpans, Span, Status,
};

use crate::record::{AttrValue, Attributes, SpanRecord, SpanStatus};

fn any(v: &AttrValue) -> AnyValue {
    let value = match v {
        AttrValue::Str(s) => any_value::Value::StringValue(s.clone()),
        AttrValue::Int(i) => any_value::Value::IntValue(*i),
        AttrValue::Double(f) => any_value::Value::DoubleValue(*f),
        AttrValue::Bool(b) => any_value::Value::BoolValue(*b),
        AttrValue::StrArray(items) => any_value::Value::ArrayValue(ArrayValue {
            values: items
                .iter()
                .map(|s| AnyValue {
                    value: Some(any_value::Value::StringValue(s.clone())),
                })
                .collect(),
        }),
    };
    AnyValue { value: Some(value) }
}

fn key_values(attrs: &Attributes) -> Vec<KeyValue> {
    attrs
        .iter()
        .map(|(k, v)| KeyValue {
            key: k.clone(),
            value: Some(any(v)),
        })
        .collect()
}

/// One OTLP span.
pub fn to_span(r: &SpanRecord) -> Span {
    let status = match &r.status {
        SpanStatus::Ok => Status {
            message: String::new(),
            code: status::StatusCode::Ok as i32,
        },
        SpanStatus::Error(m) => Status {
            message: m.clone(),
            code: status::StatusCode::Error as i32,
        },
    };
    Span {
        trace_id: r.trace_id.to_vec(),
        span_id: r.span_id.to_vec(),
        trace_state: String::new(),
        parent_span_id: r.parent_span_id.map(|p| p.to_vec()).unwrap_or_default(),
        flags: 0,
        name: r.name.clone(),
        kind: span::SpanKind::Client as i32,
        start_time_unix_nano: r.start_unix_nano,
        end_time_unix_nano: r.end_unix_nano,
        attributes: key_values(&r.attributes),
        dropped_attributes_count: 0,
        events: r
            .events
            .iter()
            .map(|e| span::Event {
                time_unix_nano: e.time_unix_nano,
                name: e.name.clone(),
                attributes: key_values(&e.attributes),
                dropped_attributes_count: 0,
            })
            .collect(),
        dropped_events_count: 0,
        links: Vec::new(),
        dropped_links_count: 0,
        status: Some(status),
    }
}

/// Wraps spans in one export request with llmtap's resource and scope.
pub fn request(service_name: &str, spans: Vec<Span>) -> ExportTraceServiceRequest {
    request_with(
        &[("service.name".to_string(), AttrValue::from(service_name))],
        spans,
    )
}

/// Wraps spans in one export request whose resource holds `attributes`
/// ([`crate::environment::resource`]) and llmtap's `telemetry.sdk.*`.
pub fn request_with(
    attributes: &[(String, AttrValue)],
    spans: Vec<Span>,
) -> ExportTraceServiceRequest {
    let mut attributes = attributes.to_vec();
    attributes.extend([
        ("telemetry.sdk.name".to_string(), AttrValue::from("llmtap")),
        (
            "telemetry.sdk.version".to_string(),
            AttrValue::from(env!("CARGO_PKG_VERSION")),
        ),
    ]);
    let resource = Resource {
        attributes: key_values(&attributes),
        dropped_attributes_count: 0,
        entity_refs: Vec::new(),
    };
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(resource),
            scope_spans: vec![ScopeSpans {
                scope: Some(InstrumentationScope {
                    name: "llmtap".into(),
                    version: env!("CARGO_PKG_VERSION").into(),
                    attributes: Vec::new(),
                    dropped_attributes_count: 0,
                }),
                spans,
                schema_url: String::new(),
            }],
            schema_url: String::new(),
        }],
    }
}

/// The OTLP-JSON text of an export request (one line, ids as lowercase hex).
pub fn to_json_line(req: &ExportTraceServiceRequest) -> String {
    serde_json::to_string(req).unwrap_or_else(|e| {
        // Serialising plain data cannot fail; keep the line well-formed if it ever does.
        format!("{{\"error\":{:?}}}", e.to_string())
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::SpanEvent;
    use prost::Message;

    fn record() -> SpanRecord {
        SpanRecord {
            trace_id: [0xab; 16],
            span_id: [0x01; 8],
            parent_span_id: None,
            name: "Completions".into(),
            start_unix_nano: 1_764_000_000_000_000_000,
            end_unix_nano: 1_764_000_001_250_000_000,
            status: SpanStatus::Error("HTTP 429: slow down".into()),
            attributes: vec![
                ("mlflow.spanType".into(), "CHAT_MODEL".into()),
                ("gen_ai.usage.input_tokens".into(), AttrValue::Int(9)),
                (
                    "gen_ai.response.finish_reasons".into(),
                    AttrValue::StrArray(vec!["stop".into()]),
                ),
            ],
            events: vec![SpanEvent {
                name: "exception".into(),
                time_unix_nano: 1,
                attributes: vec![("exception.message".into(), "slow down".into())],
            }],
        }
    }

    #[test]
    fn span_round_trips_through_protobuf() {
        let req = request("svc", vec![to_span(&record())]);
        let bytes = req.encode_to_vec();
        let back = ExportTraceServiceRequest::decode(bytes.as_slice()).unwrap();
        let span = &back.resource_spans[0].scope_spans[0].spans[0];
        assert_eq!(span.trace_id, vec![0xab; 16]);
        assert_eq!(span.kind, span::SpanKind::Client as i32);
        assert_eq!(span.status.as_ref().unwrap().code, 2);
        assert_eq!(span.attributes.len(), 3);
        assert_eq!(span.events[0].name, "exception");
        let res = back.resource_spans[0].resource.as_ref().unwrap();
        assert_eq!(res.attributes[0].key, "service.name");
    }

    #[test]
    fn json_line_uses_hex_ids_and_camel_case() {
        let line = to_json_line(&request("svc", vec![to_span(&record())]));
        assert!(!line.contains('\n'));
        assert!(
            line.contains("\"traceId\":\"abababababababababababababababab\""),
            "{line}"
        );
        assert!(line.contains("\"spanId\":\"0101010101010101\""), "{line}");
        assert!(line.contains("\"resourceSpans\""), "{line}");
        assert!(line.contains("\"stringValue\":\"CHAT_MODEL\""), "{line}");
    }
}
