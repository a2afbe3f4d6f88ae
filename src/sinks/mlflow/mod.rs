//! The MLflow sink (a self-hosted tracking server): OTLP/HTTP protobuf (gzip)
//! to `{tracking_uri}/v1/traces` with `x-mlflow-experiment-id`, after
//! resolving the experiment by id or by name ([`resolve`]); feedback to
//! `/api/3.0/mlflow/traces/{id}/assessments`. See mlflow-wire.md §2–3, §7.
//! Trace metadata OTLP cannot carry goes through StartTraceV3 once a
//! batch's spans are in ([`trace_info`], mlflow-wire.md §6).

pub mod config;
mod resolve;
pub mod trace_info;

use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request};
use http_body_util::Full;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use super::http::{call, gzip, Answer, HttpClient};
use super::{Assessment, Attempt, Sink, SinkFuture, Verdict};
use config::MlflowAuth;
pub use config::MlflowConfig;

/// `kind = "mlflow"`.
pub const KIND: &str = "mlflow";

/// The sink a `[[sinks]]` entry or the shortcut describes.
pub fn build(
    name: &str,
    cfg: MlflowConfig,
    ctx: &super::Context,
) -> Result<std::sync::Arc<dyn Sink>, String> {
    let sink = MlflowSink::new(cfg, ctx.connect_timeout, ctx.timeout).named(name);
    Ok(std::sync::Arc::new(sink))
}

/// Sends span batches to an MLflow tracking server.
pub struct MlflowSink {
    name: String,
    client: HttpClient,
    cfg: MlflowConfig,
    /// The experiment id, once known (given, or looked up by name).
    experiment: super::experiment::Experiment,
    timeout: Duration,
}

impl MlflowSink {
    pub fn new(cfg: MlflowConfig, connect_timeout: Duration, timeout: Duration) -> Self {
        MlflowSink {
            name: "mlflow".into(),
            client: crate::client::client(connect_timeout, &cfg.server_ca.certs),
            experiment: super::experiment::Experiment::new(&cfg.experiment),
            cfg,
            timeout,
        }
    }

    /// The same sink under another name (several MLflow sinks at once).
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    fn authorize(&self, req: http::request::Builder) -> http::request::Builder {
        match &self.cfg.auth {
            MlflowAuth::None => req,
            MlflowAuth::Bearer(t) => req.header(header::AUTHORIZATION, format!("Bearer {t}")),
            MlflowAuth::Basic { user, password } => {
                use base64::Engine;
                let raw = format!("{user}:{password}");
                let enc = base64::engine::general_purpose::STANDARD.encode(raw);
                req.header(header::AUTHORIZATION, format!("Basic {enc}"))
            }
        }
    }

    /// One call to the tracking server, authorized, within the time limit.
    async fn call(&self, req: http::request::Builder, body: Bytes) -> Result<Answer, String> {
        let req = self
            .authorize(req)
            .body(Full::new(body))
            .map_err(|e| format!("building request: {e}"))?;
        call(&self.client, req, self.timeout).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.cfg.tracking_uri)
    }

    fn answer(&self, a: &Answer, what: &str) -> Attempt {
        let verdict = self.classify(a.status.as_u16(), a.retry_after.as_deref());
        Attempt::from_answer(verdict, a.status.as_u16(), &a.body, what)
    }

    /// The experiment id, given or looked up by name (once).
    async fn experiment_id(&self) -> Result<String, Attempt> {
        self.experiment
            .id(|n| async move { resolve::resolve(self, &n).await })
            .await
    }

    /// Sends one encoded `ExportTraceServiceRequest`.
    async fn send_protobuf(&self, protobuf: &[u8]) -> Attempt {
        let experiment = match self.experiment_id().await {
            Ok(id) => id,
            Err(a) => return a,
        };
        let body = match gzip(protobuf) {
            Ok(b) => b,
            Err(e) => return Attempt::permanent(format!("gzip: {e}")),
        };
        let req = Request::builder()
            .method(Method::POST)
            .uri(self.url("/v1/traces"))
            .header(header::CONTENT_TYPE, "application/x-protobuf")
            .header(header::CONTENT_ENCODING, "gzip")
            .header("x-mlflow-experiment-id", experiment);
        match self.call(req, Bytes::from(body)).await {
            Ok(a) => self.answer(&a, "exporting spans"),
            Err(e) => Attempt::transient(e),
        }
    }

    /// StartTraceV3 for the traces of an accepted batch that carry trace
    /// metadata ([`trace_info`]), a few at a time. A transient failure makes
    /// the whole batch retried (both calls are upserts); a refusal loses
    /// only that trace's metadata, and is logged.
    async fn send_metadata(&self, batch: &ExportTraceServiceRequest) -> Attempt {
        use futures_util::StreamExt;
        let experiment = match self.experiment_id().await {
            Ok(id) => id,
            Err(a) => return a,
        };
        let always = self.cfg.source_metadata;
        let bodies = trace_info::start_trace_bodies(batch, &experiment, always);
        let results: Vec<(String, Attempt)> = futures_util::stream::iter(bodies)
            .map(|(id, body)| async move { (id, self.start_trace(body).await) })
            .buffer_unordered(4)
            .collect()
            .await;
        for (trace_id, a) in results {
            match a.verdict {
                Verdict::Success => {}
                Verdict::Retry { .. } => return a,
                Verdict::Split | Verdict::DontRetry => {
                    tracing::warn!(sink = %self.name, %trace_id, reason = %a.reason, "MLflow refused the trace's metadata; the trace keeps its spans")
                }
            }
        }
        Attempt::ok()
    }

    /// One StartTraceV3 call (mlflow-wire.md §6).
    async fn start_trace(&self, body: serde_json::Value) -> Attempt {
        let req = Request::builder()
            .method(Method::POST)
            .uri(self.url("/api/3.0/mlflow/traces"))
            .header(header::CONTENT_TYPE, "application/json");
        match self.call(req, Bytes::from(body.to_string())).await {
            Ok(a) => self.answer(&a, "setting trace metadata"),
            Err(e) => Attempt::transient(e),
        }
    }

    async fn send_assessment(&self, a: &Assessment) -> Attempt {
        let body = assessment_body(a).to_string();
        let req = Request::builder()
            .method(Method::POST)
            .uri(self.url(&format!(
                "/api/3.0/mlflow/traces/{}/assessments",
                super::http::percent_encode(&a.trace_id)
            )))
            .header(header::CONTENT_TYPE, "application/json");
        match self.call(req, Bytes::from(body)).await {
            Ok(ans) => self.answer(&ans, "logging an assessment"),
            Err(e) => Attempt::transient(e),
        }
    }

    /// Readiness: the server answers its health check.
    async fn health(&self) -> Result<(), String> {
        let req = Request::builder()
            .method(Method::GET)
            .uri(self.url("/health"));
        let a = self.call(req, Bytes::new()).await?;
        if a.status.is_success() {
            Ok(())
        } else {
            Err(format!("MLflow /health answered {}", a.status))
        }
    }
}

impl Sink for MlflowSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "mlflow"
    }

    fn send<'a>(&'a self, batch: &'a ExportTraceServiceRequest) -> SinkFuture<'a, Attempt> {
        Box::pin(async move {
            let spans = self.send_protobuf(&batch.encode_to_vec()).await;
            if spans.verdict != Verdict::Success {
                return spans;
            }
            self.send_metadata(batch).await
        })
    }

    fn assess<'a>(&'a self, assessment: &'a Assessment) -> SinkFuture<'a, Attempt> {
        Box::pin(self.send_assessment(assessment))
    }

    fn describe(&self) -> String {
        format!(
            "{} {} ({:?})",
            self.name,
            crate::redact::url(&self.cfg.tracking_uri),
            self.cfg.experiment
        )
    }

    fn probe(&self) -> SinkFuture<'_, Result<(), String>> {
        Box::pin(self.health())
    }
}

/// The body of MLflow's CreateAssessment (mlflow-wire.md §7).
pub fn assessment_body(a: &Assessment) -> serde_json::Value {
    let mut assessment = serde_json::json!({
        "assessment_name": a.name,
        "trace_id": a.trace_id,
        "source": {"source_type": a.source_type, "source_id": a.source_id},
        "feedback": {"value": a.value},
    });
    if let Some(r) = &a.rationale {
        assessment["rationale"] = r.clone().into();
    }
    if !a.metadata.is_empty() {
        assessment["metadata"] = serde_json::json!(a.metadata);
    }
    serde_json::json!({ "assessment": assessment })
}

#[cfg(test)]
mod tests;
