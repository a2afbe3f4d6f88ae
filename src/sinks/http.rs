//! What the HTTP sinks share: one call with a time limit, its answer, and the
//! small JSON and URL helpers their APIs need.

use std::time::Duration;

use bytes::Bytes;
use http::{header, Request, StatusCode};
use http_body_util::{BodyExt, Full};
use hyper_util::client::legacy::Client;
use serde_json::Value;

use crate::client::Connector;

/// The pooled client every HTTP sink uses.
pub type HttpClient = Client<Connector, Full<Bytes>>;

/// One HTTP answer: status, `Retry-After`, body (read whole, within the
/// call's time limit; sink APIs answer small bodies).
pub struct Answer {
    pub status: StatusCode,
    pub retry_after: Option<String>,
    pub body: Bytes,
}

/// Sends `req` and reads the answer, all within `timeout`. The error is a
/// transport failure (no answer), worded for logs, without the URL's secrets.
pub async fn call(
    client: &HttpClient,
    req: Request<Full<Bytes>>,
    timeout: Duration,
) -> Result<Answer, String> {
    let fut = async {
        let resp = client.request(req).await.map_err(|e| error_chain(&e))?;
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
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(format!("no answer within {timeout:?}")),
    }
}

/// A string (or number, as text) at `path` in a JSON body.
pub fn json_str(body: &[u8], path: &[&str]) -> Option<String> {
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
pub fn percent_encode(s: &str) -> String {
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

/// gzip at the fast level (what the HTTP sinks send).
pub fn gzip(bytes: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(bytes)?;
    gz.finish()
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
