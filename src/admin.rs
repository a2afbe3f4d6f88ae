//! The admin listener: `GET /healthz` (the process is up), `GET /readyz` (the
//! trace sink is reachable, or the local trace directory writable) and
//! `GET /metrics` (Prometheus text).

use std::sync::Arc;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;

use crate::config::{Config, SinkConfig};
use crate::export::mlflow::MlflowSink;
use crate::metrics::Metrics;

/// What readiness checks.
enum Readiness {
    Always,
    Dir(std::path::PathBuf),
    Mlflow(Box<MlflowSink>),
}

/// The admin routes' state.
pub struct Admin {
    metrics: Arc<Metrics>,
    readiness: Readiness,
    spool_threshold: Option<f64>,
}

impl Admin {
    pub fn new(cfg: &Config, metrics: Arc<Metrics>) -> Self {
        let readiness = match &cfg.sink {
            SinkConfig::Disabled => Readiness::Always,
            SinkConfig::File(f) => Readiness::Dir(f.dir.clone()),
            SinkConfig::Mlflow(m) => Readiness::Mlflow(Box::new(MlflowSink::new(
                m.clone(),
                cfg.connect_timeout.min(std::time::Duration::from_secs(2)),
                std::time::Duration::from_secs(2),
            ))),
        };
        Admin {
            metrics,
            readiness,
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
        match &self.readiness {
            Readiness::Always => Ok(()),
            Readiness::Dir(d) => crate::export::file::probe(d),
            Readiness::Mlflow(s) => s.probe().await,
        }
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
