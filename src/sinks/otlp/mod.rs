//! The OTLP sink (kind `otlp`): any OpenTelemetry backend — Jaeger, Tempo,
//! Langfuse, Arize Phoenix, an OpenTelemetry Collector — over OTLP/HTTP,
//! protobuf or JSON, gzip optional, with the headers the backend wants.
//!
//! Spans are re-worded on the way out ([`encode::convert`]): the
//! OpenTelemetry GenAI semantic conventions ([`genai`], the default), plus
//! the OpenInference attributes Arize Phoenix reads ([`openinference`]), or
//! the canonical MLflow-shaped spans unchanged (`semconv = "mlflow"`).
//! Configuration: [`config`]. OTLP has no place for feedback, so
//! [`Sink::assess`] answers [`Attempt::unsupported`].
//!
//! Readiness ([`Sink::probe`]) posts an *empty* export request (no resource,
//! no span: nothing is stored) and calls the endpoint ready unless the
//! answer shows it cannot take traces: no answer, 401, 403, 404, 405, 415
//! (the wrong protocol: Phoenix, for one, takes only protobuf), or a 5xx.

pub mod config;
pub mod encode;
pub mod genai;
pub mod messages;
pub mod openinference;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, HeaderName, HeaderValue, Method, Request};
use http_body_util::Full;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use super::http::{call, gzip, Answer, HttpClient};
use super::{Assessment, Attempt, Context, Sink, SinkFuture, Verdict};
pub use config::{OtlpConfig, Protocol, Semconv, KIND};

/// Builds the sink `name` from its settings.
pub fn build(name: &str, cfg: OtlpConfig, ctx: &Context) -> Result<Arc<dyn Sink>, String> {
    Ok(Arc::new(OtlpSink::new(name, cfg, ctx)))
}

/// Sends span batches to an OTLP/HTTP traces endpoint.
pub struct OtlpSink {
    name: String,
    client: HttpClient,
    cfg: OtlpConfig,
    /// The headers, parsed once (the values are secrets).
    headers: Vec<(HeaderName, HeaderValue)>,
    timeout: Duration,
}

impl OtlpSink {
    pub fn new(name: &str, cfg: OtlpConfig, ctx: &Context) -> Self {
        let headers = cfg
            .headers
            .iter()
            .filter_map(|(k, v)| {
                let mut value = HeaderValue::from_str(v).ok()?;
                value.set_sensitive(true);
                Some((HeaderName::from_bytes(k.as_bytes()).ok()?, value))
            })
            .collect();
        OtlpSink {
            name: name.to_string(),
            client: crate::client::client(ctx.connect_timeout, &cfg.ca_certs),
            timeout: cfg.timeout.unwrap_or(ctx.timeout),
            headers,
            cfg,
        }
    }

    /// One POST of an encoded body to the traces URL.
    async fn post(&self, body: Vec<u8>, content_type: &str) -> Result<Answer, String> {
        let (body, gzipped) = if self.cfg.gzip {
            (gzip(&body).map_err(|e| format!("gzip: {e}"))?, true)
        } else {
            (body, false)
        };
        let mut req = Request::builder()
            .method(Method::POST)
            .uri(&self.cfg.url)
            .header(header::CONTENT_TYPE, content_type)
            .header(
                header::USER_AGENT,
                concat!("llmtap/", env!("CARGO_PKG_VERSION")),
            );
        if gzipped {
            req = req.header(header::CONTENT_ENCODING, "gzip");
        }
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        let req = req
            .body(Full::new(Bytes::from(body)))
            .map_err(|e| format!("building the request: {e}"))?;
        call(&self.client, req, self.timeout).await
    }

    async fn export(&self, batch: &ExportTraceServiceRequest) -> Attempt {
        let converted = encode::convert(batch, self.cfg.semconv);
        let (body, content_type) = encode::body(&converted, self.cfg.protocol);
        let answer = match self.post(body, content_type).await {
            Ok(a) => a,
            Err(e) => return Attempt::transient(e),
        };
        let status = answer.status.as_u16();
        let verdict = self.classify(status, answer.retry_after.as_deref());
        if verdict == Verdict::Success {
            if let Some((rejected, message)) =
                encode::partial_success(&answer.body, self.cfg.protocol)
            {
                tracing::warn!(
                    sink = %self.name,
                    rejected_spans = rejected,
                    message = %message,
                    "the OTLP endpoint accepted the batch only in part"
                );
            }
        }
        Attempt::from_answer(verdict, status, &answer.body, "exporting spans")
    }

    /// Readiness: an empty export request (see the module docs).
    async fn ready(&self) -> Result<(), String> {
        let (body, content_type) =
            encode::body(&ExportTraceServiceRequest::default(), self.cfg.protocol);
        let a = self.post(body, content_type).await?;
        match a.status.as_u16() {
            401 | 403 | 404 | 405 | 415 | 500..=599 => Err(format!(
                "the OTLP endpoint {} answered {}",
                crate::redact::url(&self.cfg.url),
                a.status
            )),
            _ => Ok(()),
        }
    }
}

impl Sink for OtlpSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        config::KIND
    }

    fn send<'a>(&'a self, batch: &'a ExportTraceServiceRequest) -> SinkFuture<'a, Attempt> {
        Box::pin(self.export(batch))
    }

    fn assess<'a>(&'a self, _: &'a Assessment) -> SinkFuture<'a, Attempt> {
        Box::pin(async { Attempt::unsupported("assessments", config::KIND) })
    }

    fn describe(&self) -> String {
        let names: Vec<&str> = self.cfg.headers.iter().map(|(k, _)| k.as_str()).collect();
        format!(
            "{}: OTLP {}{} to {} (semconv {}, headers {:?})",
            self.name,
            self.cfg.protocol.as_str(),
            if self.cfg.gzip { " gzip" } else { "" },
            crate::redact::url(&self.cfg.url),
            self.cfg.semconv.as_str(),
            names
        )
    }

    fn probe(&self) -> SinkFuture<'_, Result<(), String>> {
        Box::pin(self.ready())
    }

    fn classify(&self, status: u16, retry_after: Option<&str>) -> Verdict {
        encode::classify(status, retry_after)
    }
}

#[cfg(test)]
mod tests;
