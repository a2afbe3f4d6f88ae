//! The trace info MLflow's client sends for a finished trace (StartTraceV3
//! on an experiment, CreateTraceInfo v4 on a Unity Catalog location), built
//! from the trace's spans exactly as the client builds it for the same
//! trace (`tracing/processor/base_mlflow.py`, `tracing/utils/truncation.py`,
//! `add_size_stats_to_trace_metadata`, `TraceInfo.to_proto`). Databricks
//! derives nothing from the spans: state, previews, usage, user and session
//! live here or nowhere.
//!
//! Cost: Databricks computes none, so the client computes it and sends
//! `mlflow.trace.cost` (the sum of the spans' `mlflow.llm.cost`, which the
//! parse stage sets on every priced call: `crate::pipeline::enrich`).

use opentelemetry_proto::tonic::common::v1::{any_value, KeyValue};
use opentelemetry_proto::tonic::trace::v1::{status, Span};
use serde_json::{json, Map, Value};

use super::aggregate;
use super::group::TraceSpans;
use super::preview::{cut, cut_with_suffix, preview, METADATA_MAX, TAG_KEY_MAX, TAG_VALUE_MAX};
use super::protojson::{duration_ms, timestamp_ms};
use super::span_doc::{stored_attribute, string_attribute};
use crate::pydumps::{ascii_len, dumps, Ordered};

/// Where a trace lives, and how that shapes its info.
#[derive(Debug, Clone, PartialEq)]
pub enum Location {
    /// An MLflow experiment (StartTraceV3, trace ids `tr-<hex>`).
    Experiment(String),
    /// A Unity Catalog schema (`catalog.schema`; v4, ids `trace:/catalog.schema/<hex>`).
    UcSchema { catalog: String, schema: String },
    /// A Unity Catalog table prefix (`catalog.schema.prefix`) whose spans
    /// table the workspace named `spans_table`.
    UcTablePrefix {
        catalog: String,
        schema: String,
        prefix: String,
        spans_table: String,
    },
}

/// The UC schema's spans and logs tables (`UCSchemaLocation` defaults).
pub const UC_SCHEMA_SPANS_TABLE: &str = "mlflow_experiment_trace_otel_spans";
pub const UC_SCHEMA_LOGS_TABLE: &str = "mlflow_experiment_trace_otel_logs";

impl Location {
    /// The location id of v4 trace ids and endpoints, `None` for an experiment.
    pub fn v4_id(&self) -> Option<String> {
        match self {
            Location::Experiment(_) => None,
            Location::UcSchema { catalog, schema } => Some(format!("{catalog}.{schema}")),
            Location::UcTablePrefix {
                catalog,
                schema,
                prefix,
                ..
            } => Some(format!("{catalog}.{schema}.{prefix}")),
        }
    }

    /// The MLflow trace id of the trace with this hex OTLP id.
    pub fn trace_id(&self, hex: &str) -> String {
        match self.v4_id() {
            None => format!("tr-{hex}"),
            Some(loc) => format!("trace:/{loc}/{hex}"),
        }
    }

    fn json(&self) -> Value {
        match self {
            Location::Experiment(id) => json!({
                "type": "MLFLOW_EXPERIMENT",
                "mlflow_experiment": {"experiment_id": id},
            }),
            Location::UcSchema { catalog, schema } => json!({
                "type": "UC_SCHEMA",
                "uc_schema": {
                    "catalog_name": catalog,
                    "schema_name": schema,
                    "otel_spans_table_name": UC_SCHEMA_SPANS_TABLE,
                    "otel_logs_table_name": UC_SCHEMA_LOGS_TABLE,
                },
            }),
            Location::UcTablePrefix {
                catalog,
                schema,
                prefix,
                spans_table,
            } => json!({
                "type": "UC_TABLE_PREFIX",
                "uc_table_prefix": {
                    "catalog_name": catalog,
                    "schema_name": schema,
                    "table_prefix": prefix,
                    "spans_table_name": spans_table,
                },
            }),
        }
    }

    fn schema_version(&self) -> &'static str {
        match self {
            Location::Experiment(_) => "3",
            _ => "4",
        }
    }
}

/// The trace info in its protobuf-JSON wire form (the body of CreateTraceInfo
/// v4; StartTraceV3 wraps it, see [`start_trace_v3_body`]). `doc` is the
/// trace's span document ([`super::span_doc::document`]), whose size the
/// client records in the metadata.
pub fn build(trace: &TraceSpans<'_>, loc: &Location, doc: &Value) -> Value {
    let root = trace.root();
    let hex = trace.hex_id();
    let start_ms = (root.start_time_unix_nano / 1_000_000) as i64;
    let duration = (root
        .end_time_unix_nano
        .saturating_sub(root.start_time_unix_nano)
        / 1_000_000) as i64;
    let mut info = Map::new();
    let wire_id = match loc {
        Location::Experiment(_) => loc.trace_id(&hex),
        _ => hex.clone(),
    };
    info.insert("trace_id".into(), wire_id.into());
    info.insert("trace_location".into(), loc.json());
    let max = super::preview::PREVIEW_MAX_DBX;
    if let Some(req) = stored_attribute(root, "mlflow.spanInputs") {
        info.insert("request_preview".into(), preview(&req, "user", max).into());
    }
    if let Some(resp) = stored_attribute(root, "mlflow.spanOutputs") {
        info.insert(
            "response_preview".into(),
            preview(&resp, "assistant", max).into(),
        );
    }
    info.insert("request_time".into(), timestamp_ms(start_ms).into());
    info.insert("execution_duration".into(), duration_ms(duration).into());
    info.insert("state".into(), state(root).into());
    let mut meta = metadata(trace, loc);
    info.insert("tags".into(), tags(root, trace.resource));
    add_size_stats(&mut meta, &info, &loc.trace_id(&hex), duration, doc);
    let meta: Map<String, Value> = meta
        .0
        .into_iter()
        .map(|(k, v)| (cut(&k, METADATA_MAX).to_string(), v))
        .collect();
    info.insert("trace_metadata".into(), Value::Object(meta));
    Value::Object(info)
}

/// `{"trace": {"trace_info": ...}}`, the StartTraceV3 body (no spans: the
/// client sends an empty trace data, which protobuf JSON omits).
pub fn start_trace_v3_body(info: &Value) -> Value {
    json!({ "trace": { "trace_info": info } })
}

/// `OK` or `ERROR` from the root span (an unset status is `OK`).
fn state(root: &Span) -> &'static str {
    let code = root.status.as_ref().map_or(0, |s| s.code);
    if code == status::StatusCode::Error as i32 {
        "ERROR"
    } else {
        "OK"
    }
}

/// A metadata value, cut as `_truncate_request_metadata` cuts it.
fn meta_value(s: &str) -> Value {
    Value::String(cut(s, METADATA_MAX).to_string())
}

/// The trace metadata, in the client's order (size stats come later).
fn metadata(trace: &TraceSpans<'_>, loc: &Location) -> Ordered {
    let root = trace.root();
    let mut m = Ordered::default();
    m.0.push((
        "mlflow.trace_schema.version".into(),
        loc.schema_version().into(),
    ));
    for (key, attr) in [
        ("mlflow.traceInputs", "mlflow.spanInputs"),
        ("mlflow.traceOutputs", "mlflow.spanOutputs"),
    ] {
        let v = stored_attribute(root, attr).unwrap_or_default();
        m.0.push((key.into(), meta_value(&cut_with_suffix(&v, METADATA_MAX))));
    }
    // Set with `mlflow.update_current_trace(metadata=...)` in the client;
    // llmtap's spans carry them as the OpenTelemetry attributes.
    for (key, attr) in [
        ("mlflow.trace.user", "user.id"),
        ("mlflow.trace.session", "session.id"),
    ] {
        if let Some(v) = string_attribute(root, attr).filter(|v| !v.is_empty()) {
            m.0.push((key.into(), meta_value(v)));
        }
    }
    // A call's own metadata (`x-llmtap-metadata-*`, body `metadata`).
    for (key, v) in crate::sinks::mlflow::trace_info::custom_metadata(root) {
        m.0.push((key.into(), meta_value(v)));
    }
    if let Some(usage) = aggregate::usage(&trace.spans) {
        m.0.push((
            "mlflow.trace.tokenUsage".into(),
            meta_value(&dumps(&usage, false)),
        ));
    }
    if let Some(cost) = aggregate::cost(&trace.spans) {
        m.0.push(("mlflow.trace.cost".into(), meta_value(&dumps(&cost, false))));
    }
    m
}

/// Prefix of the span attributes that carry trace tags (MLflow's
/// `SpanAttributeKey.TRACE_TAG_PREFIX`).
pub const TRACE_TAG_PREFIX: &str = "mlflow.traceTag.";

/// Tags: the resource's attributes (but `telemetry.sdk.*` and `mlflow.*`,
/// as MLflow's OTLP ingestion skips them), then the root span's
/// `mlflow.traceTag.*`, then `mlflow.traceName` (the root span's name,
/// which always wins); keys and values cut.
fn tags(root: &Span, resource: &[KeyValue]) -> Value {
    let mut tags = Map::new();
    for kv in resource {
        if kv.key.starts_with("telemetry.sdk.") || kv.key.starts_with("mlflow.") {
            continue;
        }
        if let Some(any_value::Value::StringValue(v)) =
            kv.value.as_ref().and_then(|v| v.value.as_ref())
        {
            tags.insert(
                cut(&kv.key, TAG_KEY_MAX).into(),
                cut(v, TAG_VALUE_MAX).into(),
            );
        }
    }
    for kv in &root.attributes {
        let Some(key) = kv.key.strip_prefix(TRACE_TAG_PREFIX) else {
            continue;
        };
        if let Some(v) = string_attribute(root, &kv.key) {
            tags.insert(cut(key, TAG_KEY_MAX).into(), cut(v, TAG_VALUE_MAX).into());
        }
    }
    tags.insert(
        "mlflow.traceName".into(),
        cut(&root.name, TAG_VALUE_MAX).into(),
    );
    Value::Object(tags)
}

/// `add_size_stats_to_trace_metadata`: the JSON sizes of the spans and of
/// the trace without spans (`Trace.to_json()`, ASCII-escaped).
fn add_size_stats(
    meta: &mut Ordered,
    info: &Map<String, Value>,
    id: &str,
    duration: i64,
    doc: &Value,
) {
    let spans = doc["spans"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let mut sizes: Vec<usize> = spans.iter().map(ascii_len).collect();
    sizes.sort_unstable();
    // `TraceInfo.to_dict()`: the full trace id, `execution_duration_ms`.
    let mut as_dict = info.clone();
    as_dict.insert("trace_id".into(), id.into());
    as_dict.remove("execution_duration");
    as_dict.insert("execution_duration_ms".into(), duration.into());
    let meta_now: Map<String, Value> = meta.0.iter().cloned().collect();
    as_dict.insert("trace_metadata".into(), Value::Object(meta_now));
    let empty = json!({"info": as_dict, "data": {"spans": []}});
    let total = sizes.iter().sum::<usize>() + ascii_len(&empty) + 2 * sizes.len().saturating_sub(1);
    let pct = |p: f64| percentile(&sizes, p) as i64;
    let stats = Ordered(vec![
        ("total_size_bytes".into(), total.into()),
        ("num_spans".into(), sizes.len().into()),
        ("max".into(), sizes.last().copied().unwrap_or(0).into()),
        ("p25".into(), pct(0.25).into()),
        ("p50".into(), pct(0.50).into()),
        ("p75".into(), pct(0.75).into()),
    ]);
    meta.0.push((
        "mlflow.trace.sizeStats".into(),
        meta_value(&dumps(&stats, false)),
    ));
    meta.0
        .push(("mlflow.trace.sizeBytes".into(), total.to_string().into()));
}

/// `_calculate_percentile` (linear interpolation).
fn percentile(sorted: &[usize], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let index = p * (sorted.len() - 1) as f64;
    let lower = index as usize;
    match sorted.get(lower + 1) {
        None => sorted[sorted.len() - 1] as f64,
        Some(&up) => {
            let w = index - lower as f64;
            sorted[lower] as f64 * (1.0 - w) + up as f64 * w
        }
    }
}

#[cfg(test)]
mod tests;
