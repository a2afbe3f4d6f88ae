//! Trace metadata that OTLP cannot set: a call's `x-llmtap-metadata-*` and
//! body `metadata` entries (span attributes `llmtap.metadata.<key>`) and the
//! source metadata MLflow's autologging writes (`mlflow.source.name`,
//! `mlflow.source.type`). MLflow 3.17's OTLP ingestion derives only user,
//! session, token usage and cost metadata from spans
//! (`SqlAlchemyStore.log_spans`), so these go through StartTraceV3
//! (mlflow-wire.md §6), sent AFTER the trace's spans were accepted: on a
//! trace that exists, StartTraceV3 merges metadata and tags and overwrites
//! only state, times and client request id (which it carries, equal to the
//! span-derived ones); name, previews, user, session and usage stay.
//!
//! Cost: one extra call per trace that carries such metadata, none for the
//! others; source metadata rides along on those calls only, unless the
//! sink's `source_metadata` asks for it on every trace (one call each). Spans with a
//! parent (joined to the agent's trace) get none: the trace is the agent's.
//!
//! Pure: spans in, request bodies out.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value;
use opentelemetry_proto::tonic::trace::v1::{status, Span};
use serde_json::{json, Map, Value};

use crate::sinks::databricks::protojson::{duration_ms, timestamp_ms};
use crate::sinks::databricks::span_doc::string_attribute;

use crate::context::METADATA_ATTR;
/// `mlflow.source.name`: what wrote the trace, as far as llmtap knows.
pub const SOURCE_NAME: &str = "llmtap";
/// `mlflow.source.type` (MLflow's `SourceType`): llmtap cannot know where
/// the agent runs (notebook, job, local script).
pub const SOURCE_TYPE: &str = "UNKNOWN";

/// The trace metadata a span carries (`llmtap.metadata.<key>`, string
/// values), without keys in MLflow's reserved `mlflow.` namespace. The
/// Databricks sink reads the same.
pub fn custom_metadata(span: &Span) -> Vec<(&str, &str)> {
    span.attributes
        .iter()
        .filter_map(|kv| {
            let key = kv.key.strip_prefix(METADATA_ATTR)?;
            if key.is_empty() || key.starts_with("mlflow.") {
                return None;
            }
            match kv.value.as_ref()?.value.as_ref()? {
                any_value::Value::StringValue(s) => Some((key, s.as_str())),
                _ => None,
            }
        })
        .collect()
}

/// The StartTraceV3 bodies for the root spans of `req` that carry trace
/// metadata (every root span with `always`: source metadata on each), each
/// with its MLflow trace id.
pub fn start_trace_bodies(
    req: &ExportTraceServiceRequest,
    experiment_id: &str,
    always: bool,
) -> Vec<(String, Value)> {
    req.resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .flat_map(|s| &s.spans)
        .filter(|s| s.parent_span_id.is_empty())
        .filter_map(|s| body(s, experiment_id, always))
        .collect()
}

fn body(span: &Span, experiment_id: &str, always: bool) -> Option<(String, Value)> {
    let custom = custom_metadata(span);
    if custom.is_empty() && !always {
        return None;
    }
    let trace_id = <[u8; 16]>::try_from(span.trace_id.as_slice()).ok()?;
    let id = crate::exchange::mlflow_trace_id(&trace_id);
    let mut metadata: Map<String, Value> = custom
        .into_iter()
        .map(|(k, v)| (k.to_string(), Value::String(v.to_string())))
        .collect();
    metadata.insert("mlflow.source.name".into(), SOURCE_NAME.into());
    metadata.insert("mlflow.source.type".into(), SOURCE_TYPE.into());
    let start_ms = (span.start_time_unix_nano / 1_000_000) as i64;
    let duration = (span
        .end_time_unix_nano
        .saturating_sub(span.start_time_unix_nano)
        / 1_000_000) as i64;
    let failed = span
        .status
        .as_ref()
        .is_some_and(|s| s.code == status::StatusCode::Error as i32);
    let mut info = json!({
        "trace_id": id,
        "trace_location": {
            "type": "MLFLOW_EXPERIMENT",
            "mlflow_experiment": {"experiment_id": experiment_id},
        },
        "request_time": timestamp_ms(start_ms),
        "execution_duration": duration_ms(duration),
        "state": if failed { "ERROR" } else { "OK" },
        "trace_metadata": metadata,
    });
    if let Some(c) = string_attribute(span, "mlflow.traceTag.llmtap.client_request_id") {
        info["client_request_id"] = c.into();
    }
    Some((id, json!({ "trace": { "trace_info": info } })))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{SpanRecord, SpanStatus};

    fn span(attrs: &[(&str, &str)], parent: Option<[u8; 8]>, failed: bool) -> Span {
        let mut r = SpanRecord {
            trace_id: [0xab; 16],
            span_id: [1; 8],
            parent_span_id: parent,
            name: "Completions".into(),
            start_unix_nano: 1_764_000_000_123_000_000,
            end_unix_nano: 1_764_000_001_373_000_000,
            status: if failed {
                SpanStatus::Error("HTTP 500".into())
            } else {
                SpanStatus::Ok
            },
            attributes: vec![],
            events: vec![],
        };
        for (k, v) in attrs {
            r.set(*k, *v);
        }
        crate::otlp::to_span(&r)
    }

    #[test]
    fn only_traces_with_metadata_get_a_start_trace_call() {
        let req = crate::otlp::request(
            "svc",
            vec![
                span(
                    &[
                        ("llmtap.metadata.ticket", "T-1"),
                        ("llmtap.metadata.mlflow.trace.user", "spoof"),
                        ("mlflow.traceTag.llmtap.client_request_id", "req-7"),
                    ],
                    None,
                    true,
                ),
                span(&[("mlflow.traceTag.env", "prod")], None, false),
                span(&[("llmtap.metadata.ticket", "T-2")], Some([2; 8]), false),
            ],
        );
        let bodies = start_trace_bodies(&req, "7", false);
        assert_eq!(bodies.len(), 1, "{bodies:?}");
        let (id, body) = &bodies[0];
        assert_eq!(id, &format!("tr-{}", "ab".repeat(16)));
        let info = &body["trace"]["trace_info"];
        assert_eq!(info["trace_id"], id.as_str());
        assert_eq!(
            info["trace_location"]["mlflow_experiment"]["experiment_id"],
            "7"
        );
        assert_eq!(info["request_time"], "2025-11-24T16:00:00.123Z");
        assert_eq!(info["execution_duration"], "1.250s");
        assert_eq!(info["state"], "ERROR");
        assert_eq!(info["client_request_id"], "req-7");
        assert_eq!(
            info["trace_metadata"],
            json!({"ticket": "T-1", "mlflow.source.name": "llmtap", "mlflow.source.type": "UNKNOWN"})
        );
        assert!(info.get("tags").is_none() && info.get("request_preview").is_none());

        // Asked for on every trace: the other root span gets source metadata
        // alone; the child (in the agent's trace) still none.
        let bodies = start_trace_bodies(&req, "7", true);
        assert_eq!(bodies.len(), 2, "{bodies:?}");
        assert_eq!(
            bodies[1].1["trace"]["trace_info"]["trace_metadata"],
            json!({"mlflow.source.name": "llmtap", "mlflow.source.type": "UNKNOWN"})
        );
    }
}
