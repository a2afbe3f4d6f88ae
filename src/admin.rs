//! The admin listener: `GET /healthz` (the process is up), `GET /readyz` (the
//! trace sink is reachable, or the local trace directory writable) and
//! `GET /metrics` (Prometheus text).
//!
//! The sink probe behind `/readyz` (a call to MLflow's `/health`, or a test
//! write in the trace directory) runs at most once per [`PROBE_TTL`]:
//! concurrent hits wait for the one probe in flight and share its answer, so
//! a burst of probes (or a hostile client) never becomes a burst of calls to
//! the tracking server. A probe that does not answer within
//! [`PROBE_TIMEOUT`] counts as not ready.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::config::Config;
use crate::metrics::Metrics;
use crate::sinks::Sink;

/// How long a sink probe's answer is reused.
pub const PROBE_TTL: Duration = Duration::from_secs(1);
/// The longest a sink probe may take.
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// Probes every sink once, concurrently, each within [`PROBE_TIMEOUT`]:
/// ready when all are; else the reasons, one per sink that is not.
async fn probe_all(sinks: &[Arc<dyn Sink>]) -> Result<(), String> {
    let probes = sinks.iter().map(|s| async move {
        let answer = tokio::time::timeout(PROBE_TIMEOUT, s.probe())
            .await
            .unwrap_or_else(|_| Err(format!("no answer within {PROBE_TIMEOUT:?}")));
        answer.map_err(|e| format!("sink {}: {e}", s.name()))
    });
    let failed: Vec<String> = futures_util::future::join_all(probes)
        .await
        .into_iter()
        .filter_map(Result::err)
        .collect();
    match failed.is_empty() {
        true => Ok(()),
        false => Err(failed.join("; ")),
    }
}

/// The last probe's answer and when it was taken.
type Probed = Option<(tokio::time::Instant, Result<(), String>)>;

/// The admin routes' state.
pub struct Admin {
    metrics: Arc<Metrics>,
    /// The sinks `/readyz` probes (none when tracing is off: always ready).
    sinks: Vec<Arc<dyn Sink>>,
    /// Held while a probe runs: concurrent hits wait, then reuse its answer.
    probed: tokio::sync::Mutex<Probed>,
    spool_threshold: Option<f64>,
}

impl Admin {
    pub fn new(cfg: &Config, sinks: Vec<Arc<dyn Sink>>, metrics: Arc<Metrics>) -> Self {
        Admin {
            metrics,
            sinks,
            probed: tokio::sync::Mutex::new(None),
            spool_threshold: cfg.spool.as_ref().map(|s| s.ready_threshold),
        }
    }

    async fn ready(&self) -> Result<(), String> {
        if let (Some(fill), Some(threshold)) = (self.metrics.spool_fill(), self.spool_threshold) {
            if fill > threshold {
                return Err(format!(
                    "the spool is {:.0}% full (threshold {:.0}%): the trace sink is not keeping up",
                    fill * 100.0,
                    threshold * 100.0
                ));
            }
        }
        self.sink_ready().await
    }

    /// The sink probe's answer, at most [`PROBE_TTL`] old.
    async fn sink_ready(&self) -> Result<(), String> {
        let mut probed = self.probed.lock().await;
        if let Some((at, answer)) = probed.as_ref() {
            if at.elapsed() < PROBE_TTL {
                return answer.clone();
            }
        }
        let answer = probe_all(&self.sinks).await;
        *probed = Some((tokio::time::Instant::now(), answer.clone()));
        answer
    }

    pub async fn handle<B>(&self, req: Request<B>) -> Response<Full<Bytes>> {
        if req.method() != Method::GET && req.method() != Method::HEAD {
            return reply(
                StatusCode::METHOD_NOT_ALLOWED,
                "text/plain",
                "GET only\n".into(),
            );
        }
        match req.uri().path() {
            "/healthz" => reply(StatusCode::OK, "text/plain", "ok\n".into()),
            "/readyz" => match self.ready().await {
                Ok(()) => reply(StatusCode::OK, "text/plain", "ready\n".into()),
                Err(e) => reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "text/plain",
                    format!("not ready: {e}\n"),
                ),
            },
            "/metrics" => reply(
                StatusCode::OK,
                "text/plain; version=0.0.4; charset=utf-8",
                self.metrics.render(),
            ),
            _ => reply(StatusCode::NOT_FOUND, "text/plain", "not found\n".into()),
        }
    }
}

fn reply(status: StatusCode, content_type: &'static str, body: String) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body)));
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    r
}
