//! Upstream targets: a base URL, the `Host` it wants, and how a request's
//! path and query are joined onto it. Also why an upstream call failed, and
//! the answer llmtap gives then (502/504 in OpenAI's error shape).

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode, Uri};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};

use crate::headers::TRACE_ID_HEADER;

/// Boxed error type of proxied bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body type of everything llmtap answers.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;

/// An upstream base URL and the `Host` header it wants.
pub struct Upstream {
    pub base: Uri,
    pub host: HeaderValue,
}

impl Upstream {
    /// The target for `base`. The config refuses userinfo in upstream URLs;
    /// should one get here anyway it is dropped, never sent as `Host`.
    pub fn new(base: &Uri) -> Self {
        let authority = base
            .authority()
            .map(|a| a.as_str().rsplit('@').next().unwrap_or(""))
            .unwrap_or("");
        let base = Uri::builder()
            .scheme(base.scheme_str().unwrap_or("https"))
            .authority(authority)
            .path_and_query(base.path())
            .build()
            .unwrap_or_else(|_| base.clone());
        Upstream {
            host: HeaderValue::from_str(authority).unwrap_or(HeaderValue::from_static("")),
            base,
        }
    }

    /// Base (with its path prefix) + path + query.
    pub fn uri(&self, path: &str, query: Option<&str>) -> Result<Uri, http::Error> {
        let prefix = self.base.path().trim_end_matches('/');
        let sep = if path.starts_with('/') { "" } else { "/" };
        let pq = match query {
            Some(q) => format!("{prefix}{sep}{path}?{q}"),
            None => format!("{prefix}{sep}{path}"),
        };
        Uri::builder()
            .scheme(self.base.scheme_str().unwrap_or("https"))
            .authority(self.base.authority().map(|a| a.as_str()).unwrap_or(""))
            .path_and_query(pq)
            .build()
    }
}

/// Why no response head came back from the upstream.
pub enum Failure {
    HeadTimeout,
    Client(hyper_util::client::legacy::Error),
}

impl From<hyper_util::client::legacy::Error> for Failure {
    fn from(e: hyper_util::client::legacy::Error) -> Self {
        Failure::Client(e)
    }
}

impl Failure {
    /// The status llmtap answers with, and a message without secrets.
    pub fn describe(&self, upstream: &Uri) -> (StatusCode, String) {
        let host = crate::redact::uri(upstream);
        match self {
            Failure::HeadTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                format!("upstream {host} sent no response head in time (idle timeout)"),
            ),
            Failure::Client(e) => {
                let chain = crate::sinks::http::error_chain(e);
                if is_timeout(e) {
                    (
                        StatusCode::GATEWAY_TIMEOUT,
                        format!("connecting to upstream {host} timed out: {chain}"),
                    )
                } else if e.is_connect() {
                    (
                        StatusCode::BAD_GATEWAY,
                        format!("upstream {host} unreachable: {chain}"),
                    )
                } else {
                    (
                        StatusCode::BAD_GATEWAY,
                        format!("upstream {host} failed: {chain}"),
                    )
                }
            }
        }
    }
}

fn is_timeout(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            if io.kind() == std::io::ErrorKind::TimedOut {
                return true;
            }
        }
        if err.to_string().contains("timed out") {
            return true;
        }
        cur = err.source();
    }
    false
}

/// llmtap's own answer, in the OpenAI error shape SDKs understand.
pub fn answer(status: StatusCode, message: &str, trace: Option<&str>) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "error": { "message": message, "type": "llmtap_upstream_error" }
    })
    .to_string();
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if let Some(id) = trace.and_then(|t| HeaderValue::from_str(t).ok()) {
        resp.headers_mut().insert(TRACE_ID_HEADER, id);
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_base_path_and_keeps_query() {
        let u = Upstream::new(&"http://upstream.test:8000/prefix".parse().unwrap());
        let got = u
            .uri("/v1/chat/completions", Some("api-version=1"))
            .unwrap();
        assert_eq!(
            got.to_string(),
            "http://upstream.test:8000/prefix/v1/chat/completions?api-version=1"
        );
        assert_eq!(
            u.uri("/v1/models", None).unwrap().to_string(),
            "http://upstream.test:8000/prefix/v1/models"
        );
        assert_eq!(u.host, "upstream.test:8000");
        let with_creds = Upstream::new(&"http://user:SECRET@h:81/p".parse().unwrap());
        assert_eq!(with_creds.host, "h:81", "userinfo is never the Host");
        assert_eq!(
            with_creds.uri("/v1/x", None).unwrap().to_string(),
            "http://h:81/p/v1/x"
        );
        let root = Upstream::new(&"https://api.openai.com".parse().unwrap());
        assert_eq!(
            root.uri("/v1/x", None).unwrap().to_string(),
            "https://api.openai.com/v1/x"
        );
    }
}
