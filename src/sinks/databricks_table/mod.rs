//! Unity Catalog tables on Databricks (mlflow-wire.md §8): the spans go to
//! the workspace's OTLP endpoint `/api/2.0/otel/v1/traces` (protobuf, with
//! `X-Databricks-UC-Table-Name` naming the spans table), so they land in a
//! Delta table for SQL; then each trace's info goes to
//! `/api/4.0/mlflow/traces/{location}/{hex}/info`, as MLflow's client does
//! for a Unity Catalog trace location (tests/fixtures/databricks/uc.json).
//! Same workspace credentials as [`crate::sinks::databricks`].
//!
//! Re-sending is harmless: the OTLP rows are keyed by span id and the trace
//! info by trace id.

/// `kind = "databricks_table"`.
pub const KIND: &str = "databricks_table";

pub mod config;
pub mod shape;

use bytes::Bytes;
use http::Method;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use super::databricks::experiment::{answered, failed};
use super::databricks::group::{self, TraceSpans};
use super::databricks::outcome;
use super::databricks::span_doc;
use super::databricks::trace_info::{self, Location};
use super::databricks::workspace::Workspace;
use super::{Assessment, Attempt, Sink, SinkFuture};

/// The header naming the Delta table the spans land in.
pub const TABLE_HEADER: &str = "X-Databricks-UC-Table-Name";

/// Sends traces to Unity Catalog tables through a Databricks workspace.
pub struct DatabricksTableSink {
    name: String,
    ws: Workspace,
    location: Location,
    /// `catalog.schema.table` of the spans table.
    spans_table: String,
    max_in_flight: usize,
    /// The workspace quota this sink may use ([`Sink::default_rate`]).
    rate: f64,
}

impl DatabricksTableSink {
    pub fn new(
        name: &str,
        ws: Workspace,
        location: Location,
        spans_table: String,
        max_in_flight: usize,
    ) -> Self {
        DatabricksTableSink {
            name: name.to_string(),
            ws,
            location,
            spans_table,
            max_in_flight: max_in_flight.max(1),
            rate: super::databricks::config::DEFAULT_MAX_TRACES_PER_SECOND,
        }
    }

    /// The same sink with another traces-per-second quota.
    pub fn with_rate(mut self, rate: f64) -> Self {
        self.rate = rate;
        self
    }

    fn loc_id(&self) -> String {
        self.location.v4_id().unwrap_or_default()
    }

    async fn send_batch(&self, batch: &ExportTraceServiceRequest) -> Attempt {
        let traces = group::by_trace(batch);
        if traces.is_empty() {
            return Attempt::ok();
        }
        let reshaped = shape::reshape(batch, |hex| self.location.trace_id(hex));
        let spans = self.post_spans(reshaped.encode_to_vec()).await;
        if spans.verdict != super::Verdict::Success {
            return spans;
        }
        let sends: Vec<SinkFuture<'_, Attempt>> = traces
            .iter()
            .map(|t| Box::pin(self.send_info(t)) as SinkFuture<'_, Attempt>)
            .collect();
        outcome::run(sends, self.max_in_flight).await
    }

    /// The OTLP export (protobuf, not compressed, as the client sends it).
    async fn post_spans(&self, protobuf: Vec<u8>) -> Attempt {
        let answer = self
            .ws
            .send(
                Method::POST,
                "/api/2.0/otel/v1/traces",
                Some("application/x-protobuf"),
                &[(TABLE_HEADER, self.spans_table.as_str())],
                Bytes::from(protobuf),
            )
            .await;
        match answer {
            Ok(a) => answered(&a, "exporting spans to the Unity Catalog table"),
            Err(e) => failed(e),
        }
    }

    /// CreateTraceInfo (v4) for one trace.
    async fn send_info(&self, trace: &TraceSpans<'_>) -> Attempt {
        let hex = trace.hex_id();
        let doc = span_doc::document(trace, &self.location.trace_id(&hex));
        let info = trace_info::build(trace, &self.location, &doc);
        let path = format!("/api/4.0/mlflow/traces/{}/{hex}/info", self.loc_id());
        match self.ws.call(Method::POST, &path, Some(&info)).await {
            Ok(a) => answered(&a, "creating the trace info (v4)"),
            Err(e) => failed(e),
        }
    }
}

/// Builds the sink (same workspace client and credentials as the
/// `databricks` sink's).
pub fn build(
    name: &str,
    cfg: config::DatabricksTableConfig,
    ctx: &crate::sinks::Context,
) -> Result<std::sync::Arc<dyn Sink>, String> {
    let ws = super::databricks::workspace_for(&cfg.workspace, ctx)?;
    let sink = DatabricksTableSink::new(name, ws, cfg.location, cfg.spans_table, cfg.max_in_flight);
    Ok(std::sync::Arc::new(
        sink.with_rate(cfg.max_traces_per_second),
    ))
}

impl Sink for DatabricksTableSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "databricks_table"
    }

    fn send<'a>(&'a self, batch: &'a ExportTraceServiceRequest) -> SinkFuture<'a, Attempt> {
        Box::pin(self.send_batch(batch))
    }

    /// Feedback on Unity Catalog traces needs a SQL warehouse
    /// (`MLFLOW_TRACING_SQL_WAREHOUSE_ID`); not supported yet — send
    /// feedback through the `databricks` sink of the linked experiment.
    fn assess<'a>(&'a self, _assessment: &'a Assessment) -> SinkFuture<'a, Attempt> {
        Box::pin(async { Attempt::unsupported("feedback", "databricks_table") })
    }

    fn default_rate(&self) -> Option<f64> {
        Some(self.rate)
    }

    fn describe(&self) -> String {
        format!(
            "{} databricks_table {} -> {}",
            self.name,
            crate::redact::url(self.ws.creds.host()),
            self.spans_table
        )
    }

    fn probe(&self) -> SinkFuture<'_, Result<(), String>> {
        Box::pin(async move {
            // Any authenticated call proves the workspace and the token; an
            // empty OTLP export would write nothing but is not guaranteed
            // harmless, so ask for the current user instead.
            let a = self
                .ws
                .call(Method::GET, "/api/2.0/preview/scim/v2/Me", None)
                .await
                .map_err(|e| e.to_string())?;
            if a.status.is_success() {
                Ok(())
            } else {
                Err(format!("Databricks scim/v2/Me answered {}", a.status))
            }
        })
    }
}
