//! The MLflow sink: OTLP/HTTP protobuf (gzip) to `{tracking_uri}/v1/traces`
//! with `x-mlflow-experiment-id`, after resolving the experiment by id or by
//! name (created when missing). See mlflow-wire.md §2–3.

use std::io::Write;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use serde_json::Value;

use super::retry::Attempt;
use super::retry::{classify, Verdict};
use crate::client::Connector;
use crate::config::{ExperimentRef, MlflowAuth, MlflowConfig};

/// Sends span batches to an MLflow tracking server.
pub struct MlflowSink {
    client: Client<Connector, Full<Bytes>>,
    cfg: MlflowConfig,
    experiment_id: Option<String>,
    timeout: Duration,
}

/// One HTTP answer: status, `Retry-After`, body.
struct Answer {
    status: StatusCode,
    retry_after: Option<String>,
    body: Bytes,
}

impl MlflowSink {
    pub fn new(cfg: MlflowConfig, connect_timeout: Duration, timeout: Duration) -> Self {
        let experiment_id = match &cfg.experiment {
            ExperimentRef::Id(id) => Some(id.clone()),
            ExperimentRef::Name(_) => None,
        };
        MlflowSink {
            client: crate::client::client(connect_timeout, &cfg.server_ca.certs),
            cfg,
            experiment_id,
            timeout,
        }
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

    async fn call(&self, req: http::request::Builder, body: Bytes) -> Result<Answer, String> {
        let req = self
            .authorize(req)
            .body(Full::new(body))
            .map_err(|e| format!("building request: {e}"))?;
        let fut = async {
            let resp = self
                .client
                .request(req)
                .await
                .map_err(|e| error_chain(&e))?;
            let status = resp.status();
            let retry_after = resp
                .headers()
                .get(header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            let body = resp
                .into_body()
                .collect()
                .await
                .map_err(|e| format!("reading answer: {e}"))?
                .to_bytes();
            Ok(Answer {
                status,
                retry_after,
                body,
            })
        };
        match tokio::time::timeout(self.timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(format!("no answer within {:?}", self.timeout)),
        }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.cfg.tracking_uri)
    }

    /// The experiment id, looked up (or created) once and then remembered.
    async fn experiment(&mut self) -> Result<String, Attempt> {
        if let Some(id) = &self.experiment_id {
            return Ok(id.clone());
        }
        let ExperimentRef::Name(name) = self.cfg.experiment.clone() else {
            unreachable!("an id is set at construction");
        };
        for _ in 0..2 {
            if let Some(id) = self.lookup(&name).await? {
                tracing::info!(experiment = %name, experiment_id = %id, "using MLflow experiment");
                self.experiment_id = Some(id.clone());
                return Ok(id);
            }
            let body = serde_json::json!({ "name": name }).to_string();
            let req = Request::builder()
                .method(Method::POST)
                .uri(self.url("/api/2.0/mlflow/experiments/create"))
                .header(header::CONTENT_TYPE, "application/json");
            let a = self
                .call(req, Bytes::from(body))
                .await
                .map_err(Attempt::transient)?;
            if a.status.is_success() {
                let id = json_str(&a.body, &["experiment_id"]);
                if let Some(id) = id {
                    tracing::info!(experiment = %name, experiment_id = %id, "created MLflow experiment");
                    self.experiment_id = Some(id.clone());
                    return Ok(id);
                }
            } else if !String::from_utf8_lossy(&a.body).contains("RESOURCE_ALREADY_EXISTS") {
                return Err(answer_attempt(&a, "creating experiment"));
            }
            // Lost a creation race: look it up again.
        }
        Err(Attempt::transient(format!(
            "experiment {name:?} could not be resolved"
        )))
    }

    async fn lookup(&self, name: &str) -> Result<Option<String>, Attempt> {
        let url = self.url(&format!(
            "/api/2.0/mlflow/experiments/get-by-name?experiment_name={}",
            percent_encode(name)
        ));
        let req = Request::builder().method(Method::GET).uri(url);
        let a = self
            .call(req, Bytes::new())
            .await
            .map_err(Attempt::transient)?;
        if a.status.is_success() {
            return Ok(json_str(&a.body, &["experiment", "experiment_id"]));
        }
        if a.status == StatusCode::NOT_FOUND
            || String::from_utf8_lossy(&a.body).contains("RESOURCE_DOES_NOT_EXIST")
        {
            return Ok(None);
        }
        Err(answer_attempt(&a, "looking up experiment"))
    }

    /// Sends one encoded `ExportTraceServiceRequest`.
    pub async fn send(&mut self, protobuf: &[u8]) -> Attempt {
        let experiment = match self.experiment().await {
            Ok(id) => id,
            Err(a) => return a,
        };
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        let body = match gz.write_all(protobuf).and_then(|_| gz.finish()) {
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
            Ok(a) => answer_attempt(&a, "exporting spans"),
            Err(e) => Attempt::transient(e),
        }
    }

    /// Readiness: the server answers its health check.
    pub async fn probe(&self) -> Result<(), String> {
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

fn answer_attempt(a: &Answer, what: &str) -> Attempt {
    let verdict = classify(a.status.as_u16(), a.retry_after.as_deref());
    let text = String::from_utf8_lossy(&a.body);
    let snippet: String = text.chars().take(300).collect();
    let class = match a.status.as_u16() {
        408 => "http_408",
        429 => "http_429",
        500..=599 => "http_5xx",
        200..=299 => "",
        _ => "http_4xx",
    };
    Attempt {
        verdict,
        reason: match verdict {
            Verdict::Success => String::new(),
            _ => format!("{what}: HTTP {}: {snippet}", a.status.as_u16()),
        },
        class,
    }
}

fn json_str(body: &[u8], path: &[&str]) -> Option<String> {
    let mut v: &Value = &serde_json::from_slice::<Value>(body).ok()?;
    for key in path {
        v = v.get(*key)?;
    }
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters pass).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// An error with its sources, for logs (hyper's top-level message is vague).
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cur = e.source();
    while let Some(c) = cur {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cur = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percent_encoding_of_names() {
        assert_eq!(percent_encode("llmtap"), "llmtap");
        assert_eq!(percent_encode("my exp/1&x"), "my%20exp%2F1%26x");
    }

    #[test]
    fn json_paths() {
        let body = br#"{"experiment":{"experiment_id":"12"}}"#;
        assert_eq!(
            json_str(body, &["experiment", "experiment_id"]).as_deref(),
            Some("12")
        );
        assert_eq!(json_str(b"not json", &["x"]), None);
    }
}
