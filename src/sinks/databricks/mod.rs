//! Databricks-managed MLflow (mlflow-wire.md §8, docs/databricks-sink.md):
//! per trace, the trace info (StartTraceV3 — Databricks derives nothing
//! from the spans, so state, previews, usage, user and session go here),
//! then the span document uploaded to the signed URL the workspace hands
//! out, without the workspace token; feedback as assessments.
//!
//! One batch holds many traces and each takes three calls, so a batch is
//! sent as its traces, several at a time ([`DatabricksSink::max_in_flight`]),
//! each call within the export time limit, no new one after a transient
//! failure ([`outcome::run`]). The batch succeeds when every trace did;
//! otherwise the pipeline sends it again (at-least-once), and the
//! traces already delivered are skipped (remembered in a bounded set) or, if
//! forgotten, sent again harmlessly: StartTraceV3 for an existing trace id
//! replaces its info, and the upload overwrites the same object.

/// `kind = "databricks"`.
pub const KIND: &str = "databricks";

pub mod aggregate;
pub mod config;
mod delivered;
pub mod experiment;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod group;
pub mod outcome;
pub mod preview;
pub mod protojson;
pub mod signed;
pub mod span_doc;
pub mod trace_info;
pub mod upload;
pub mod workspace;

use bytes::Bytes;
use http::Method;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use self::experiment::{answered, failed, has_code};
use self::group::TraceSpans;
use self::trace_info::Location;
use self::workspace::Workspace;
use super::experiment::Experiment;
use super::{Assessment, Attempt, Sink, SinkFuture};
use crate::sinks::http::{json_str, percent_encode};
use crate::sinks::mlflow::config::ExperimentRef;

/// Trace-info tag that says where the spans live; `TRACKING_STORE` means
/// the workspace keeps them itself and nothing is uploaded (the client's
/// `_should_log_spans_to_artifacts`).
const SPANS_LOCATION: &str = "mlflow.trace.spansLocation";

/// Sends traces to an experiment in a Databricks workspace.
pub struct DatabricksSink {
    name: String,
    ws: Workspace,
    experiment_ref: ExperimentRef,
    experiment: Experiment,
    /// Traces sent at once within one batch.
    max_in_flight: usize,
    delivered: delivered::Delivered,
    /// The workspace quota this sink may use ([`Sink::default_rate`]).
    rate: f64,
}

impl DatabricksSink {
    pub fn new(name: &str, ws: Workspace, experiment: ExperimentRef, max_in_flight: usize) -> Self {
        DatabricksSink {
            name: name.to_string(),
            ws,
            experiment: Experiment::new(&experiment),
            experiment_ref: experiment,
            max_in_flight: max_in_flight.max(1),
            delivered: delivered::Delivered::new(8192),
            rate: config::DEFAULT_MAX_TRACES_PER_SECOND,
        }
    }

    /// The same sink with another traces-per-second quota.
    pub fn with_rate(mut self, rate: f64) -> Self {
        self.rate = rate;
        self
    }

    async fn send_batch(&self, batch: &ExportTraceServiceRequest) -> Attempt {
        let traces = group::by_trace(batch);
        if traces.is_empty() {
            return Attempt::ok();
        }
        let experiment = match self
            .experiment
            .id(|n| async move { experiment::resolve(&self.ws, &n).await })
            .await
        {
            Ok(id) => id,
            Err(a) => return a,
        };
        let loc = Location::Experiment(experiment);
        // Boxed one by one: a closure returning the future trips the
        // compiler's higher-ranked `Send` check.
        let sends: Vec<SinkFuture<'_, Attempt>> = traces
            .iter()
            .map(|t| Box::pin(self.send_trace(t, &loc)) as SinkFuture<'_, Attempt>)
            .collect();
        outcome::run(sends, self.max_in_flight).await
    }

    /// One trace: its info, then its span document.
    async fn send_trace(&self, trace: &TraceSpans<'_>, loc: &Location) -> Attempt {
        let id = loc.trace_id(&trace.hex_id());
        if self.delivered.contains(&id) {
            return Attempt::ok();
        }
        let doc = span_doc::document(trace, &id);
        let info = trace_info::build(trace, loc, &doc);
        let body = trace_info::start_trace_v3_body(&info);
        let a = match self
            .ws
            .call(Method::POST, "/api/3.0/mlflow/traces", Some(&body))
            .await
        {
            Ok(a) => a,
            Err(e) => return failed(e),
        };
        // A re-sent trace whose info exists already: go on to the upload.
        let exists = a.status.as_u16() == 409 || has_code(&a, "RESOURCE_ALREADY_EXISTS");
        if !a.status.is_success() && !exists {
            return answered(&a, "creating the trace (StartTraceV3)");
        }
        let stored_elsewhere = json_str(&a.body, &["trace", "trace_info", "tags", SPANS_LOCATION])
            .is_some_and(|l| l == "TRACKING_STORE");
        if !stored_elsewhere {
            let bytes = Bytes::from(span_doc::document_bytes(&doc));
            let up = upload::upload(&self.ws, &id, bytes).await;
            if up.verdict != super::Verdict::Success {
                return up;
            }
        }
        self.delivered.insert(id);
        Attempt::ok()
    }

    async fn send_assessment(&self, a: &Assessment) -> Attempt {
        let body = assessment_body(a, now_ms());
        let path = format!(
            "/api/3.0/mlflow/traces/{}/assessments",
            percent_encode(&a.trace_id)
        );
        match self.ws.call(Method::POST, &path, Some(&body)).await {
            Ok(ans) => answered(&ans, "logging an assessment"),
            Err(e) => failed(e),
        }
    }

    /// Readiness: the workspace answers an authenticated experiment lookup.
    async fn check(&self) -> Result<(), String> {
        let id = self
            .experiment
            .id(|n| async move { experiment::resolve(&self.ws, &n).await })
            .await
            .map_err(|a| a.reason)?;
        let path = format!(
            "/api/2.0/mlflow/experiments/get?experiment_id={}",
            percent_encode(&id)
        );
        let a = self
            .ws
            .call(Method::GET, &path, None)
            .await
            .map_err(|e| e.to_string())?;
        if a.status.is_success() {
            return Ok(());
        }
        let code = json_str(&a.body, &["error_code"]).unwrap_or_default();
        Err(format!(
            "Databricks experiments/get answered {} {code}",
            a.status
        ))
    }
}

impl Sink for DatabricksSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "databricks"
    }

    fn send<'a>(&'a self, batch: &'a ExportTraceServiceRequest) -> SinkFuture<'a, Attempt> {
        Box::pin(self.send_batch(batch))
    }

    fn assess<'a>(&'a self, assessment: &'a Assessment) -> SinkFuture<'a, Attempt> {
        Box::pin(self.send_assessment(assessment))
    }

    fn describe(&self) -> String {
        format!(
            "{} databricks {} ({:?})",
            self.name,
            crate::redact::url(self.ws.creds.host()),
            self.experiment_ref
        )
    }

    fn probe(&self) -> SinkFuture<'_, Result<(), String>> {
        Box::pin(self.check())
    }

    fn default_rate(&self) -> Option<f64> {
        Some(self.rate)
    }
}

/// Builds the sink: one HTTP client for the workspace calls and the signed
/// uploads, and the workspace credentials.
pub fn build(
    name: &str,
    cfg: config::DatabricksConfig,
    ctx: &crate::sinks::Context,
) -> Result<std::sync::Arc<dyn Sink>, String> {
    let ws = workspace_for(&cfg.workspace, ctx)?;
    let sink = DatabricksSink::new(name, ws, cfg.experiment, cfg.max_in_flight);
    Ok(std::sync::Arc::new(
        sink.with_rate(cfg.max_traces_per_second),
    ))
}

/// The workspace API client for a resolved workspace.
pub fn workspace_for(
    cfg: &crate::databricks::WorkspaceConfig,
    ctx: &crate::sinks::Context,
) -> Result<Workspace, String> {
    let client = crate::client::client(ctx.connect_timeout, &[]);
    let creds = crate::databricks::Credentials::new(cfg, client.clone(), ctx.timeout)?;
    Ok(Workspace {
        client,
        creds,
        timeout: ctx.timeout,
    })
}

/// CreateAssessment as the client sends it on Databricks (recorded in
/// tests/fixtures/databricks/pat.json): MLflow's body plus `create_time`,
/// `last_update_time` and `valid`.
pub fn assessment_body(a: &Assessment, now_ms: i64) -> serde_json::Value {
    let mut body = crate::sinks::mlflow::assessment_body(a);
    let at = protojson::timestamp_ms(now_ms);
    body["assessment"]["create_time"] = at.clone().into();
    body["assessment"]["last_update_time"] = at.into();
    body["assessment"]["valid"] = true.into();
    body
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
