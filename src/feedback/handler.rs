//! The HTTP side of `POST /llmtap/v1/feedback`, and of every other
//! `/llmtap/...` path (404): llmtap answers them itself, the provider never
//! sees them. Answers are JSON, `{"error": {"message", "type"}}` on failure:
//! 400 a bad body (what is wrong named), 405 another method, 415 a body
//! that is not JSON, 501 no sink takes feedback, 503 tracing off or the
//! pending feedback at its cap; 202 once accepted.

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};

use super::body::{self, MAX_BODY_BYTES};
use super::{Feedback, Refusal, PATH};
use crate::metrics::feedback::Outcome;
use crate::metrics::Metrics;
use crate::upstream::ProxyBody;

/// The longest a client may take to send the body.
const BODY_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers one `/llmtap/...` request.
pub async fn handle<B>(
    feedback: Option<&Feedback>,
    metrics: &Metrics,
    parts: http::request::Parts,
    body: B,
) -> Response<ProxyBody>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let answer = respond(feedback, &parts, body).await;
    let status = answer.status();
    if status.is_client_error() && status != StatusCode::NOT_FOUND {
        metrics.feedback.count("", Outcome::Invalid);
    }
    tracing::info!(method = %parts.method, path = parts.uri.path(), status = status.as_u16(), "llmtap endpoint");
    answer
}

async fn respond<B>(
    feedback: Option<&Feedback>,
    parts: &http::request::Parts,
    body: B,
) -> Response<ProxyBody>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    if parts.uri.path() != PATH {
        return error(StatusCode::NOT_FOUND, &format!("no llmtap endpoint at {}: llmtap's own paths (/llmtap/...) are never forwarded; feedback goes to POST {PATH}", parts.uri.path()));
    }
    if parts.method != Method::POST {
        let mut r = error(
            StatusCode::METHOD_NOT_ALLOWED,
            &format!("{PATH} takes POST, not {}", parts.method),
        );
        r.headers_mut()
            .insert(header::ALLOW, HeaderValue::from_static("POST"));
        return r;
    }
    let content_type = parts
        .headers
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().unwrap_or("?"));
    if !body::json_content_type(content_type) {
        return error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "the body must be JSON: send Content-Type: application/json",
        );
    }
    let bytes = match read(body).await {
        Ok(b) => b,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let record = match body::parse(&bytes, super::now_ms()) {
        Ok(r) => r,
        Err(message) => return error(StatusCode::BAD_REQUEST, &message),
    };
    let Some(feedback) = feedback else {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "tracing is off (no sink is configured): feedback has nowhere to go",
        );
    };
    let trace_id = record.trace_id.clone();
    match feedback.accept(record).await {
        Ok(sinks) => json(
            StatusCode::ACCEPTED,
            serde_json::json!({"status": "accepted", "trace_id": trace_id, "sinks": sinks}),
        ),
        Err(Refusal::Unsupported(sinks)) => error(
            StatusCode::NOT_IMPLEMENTED,
            &format!("no configured sink takes feedback ({}): only mlflow and databricks sinks do", sinks.join(", ")),
        ),
        Err(Refusal::Full(sink)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("too much feedback is waiting for sink {sink:?} (feedback.max_pending / feedback.max_pending_bytes): try again later"),
        ),
        Err(Refusal::Io(e)) => error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("feedback could not be stored: {e}"),
        ),
    }
}

/// The whole body, at most [`MAX_BODY_BYTES`], within [`BODY_TIMEOUT`].
async fn read<B>(body: B) -> Result<Bytes, String>
where
    B: hyper::body::Body<Data = Bytes>,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let too_large = || {
        format!("the body is larger than {MAX_BODY_BYTES} bytes: feedback is a small JSON object")
    };
    let collect = Limited::new(body, MAX_BODY_BYTES).collect();
    match tokio::time::timeout(BODY_TIMEOUT, collect).await {
        Err(_) => Err(format!("the body did not arrive within {BODY_TIMEOUT:?}")),
        Ok(Ok(c)) => Ok(c.to_bytes()),
        Ok(Err(e)) if e.is::<http_body_util::LengthLimitError>() => Err(too_large()),
        Ok(Err(e)) => Err(format!("reading the body: {e}")),
    }
}

fn error(status: StatusCode, message: &str) -> Response<ProxyBody> {
    json(
        status,
        serde_json::json!({"error": {"message": message, "type": "llmtap_feedback_error"}}),
    )
}

fn json(status: StatusCode, v: serde_json::Value) -> Response<ProxyBody> {
    let mut r = Response::new(
        Full::new(Bytes::from(v.to_string()))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *r.status_mut() = status;
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn call(method: &str, path: &str, ct: Option<&str>, body: &[u8]) -> (u16, String) {
        let mut b = http::Request::builder().method(method).uri(path);
        if let Some(ct) = ct {
            b = b.header("content-type", ct);
        }
        let (parts, _) = b.body(()).unwrap().into_parts();
        let m = Metrics::default();
        let r = handle(None, &m, parts, Full::new(Bytes::copy_from_slice(body))).await;
        let status = r.status().as_u16();
        let text = r.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&text).into_owned())
    }

    #[tokio::test]
    async fn refusals_are_json_with_a_message() {
        let json = Some("application/json");
        let (s, t) = call("GET", PATH, None, b"").await;
        assert_eq!((s, t.contains("takes POST")), (405, true), "{t}");
        let (s, t) = call("POST", "/llmtap/v1/other", json, b"{}").await;
        assert_eq!((s, t.contains("never forwarded")), (404, true), "{t}");
        let (s, t) = call("POST", PATH, Some("text/plain"), b"{}").await;
        assert_eq!((s, t.contains("Content-Type")), (415, true), "{t}");
        let (s, t) = call("POST", PATH, json, b"{oops").await;
        assert_eq!((s, t.contains("not JSON")), (400, true), "{t}");
        let big = vec![b' '; MAX_BODY_BYTES + 1];
        let (s, t) = call("POST", PATH, json, &big).await;
        assert_eq!((s, t.contains("larger than")), (400, true), "{t}");
        let v: serde_json::Value = serde_json::from_str(&t).unwrap();
        assert_eq!(v["error"]["type"], "llmtap_feedback_error");
        let ok = br#"{"trace_id": "tr-0123456789abcdef0123456789abcdef", "value": true}"#;
        let (s, t) = call("POST", PATH, None, ok).await;
        assert_eq!((s, t.contains("tracing is off")), (503, true), "{t}");
    }
}
