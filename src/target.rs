//! Request targets llmtap answers itself instead of forwarding (pure checks,
//! and the answer). A sidecar forwards paths under a base URL; anything that
//! is not such a path is refused before routing, so what is classified,
//! routed, traced and forwarded is always the same path, under the route's
//! base path:
//!
//! - `CONNECT` (any form): 405 — llmtap is not a tunnel.
//! - A target that is not a path (`OPTIONS *`, `CONNECT`'s `host:port`): 400.
//! - A dot segment (`.` or `..`) in any spelling: 400. Segments are split at
//!   `/`, `\` and their percent-encodings (`%2F`, `%5C`), `%2E` counts as a
//!   dot (also double-encoded, `%252E`), and `;params` are ignored (`..;`),
//!   so no upstream that decodes or normalises any of these can be walked
//!   above its base path. Refused rather than normalised: no API client sends
//!   dot segments (SDKs build paths from constants), and a normalised path
//!   would still be read differently by upstreams that decode first.

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Method, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};

use crate::upstream::ProxyBody;

/// The methods llmtap forwards (the `Allow` of its 405).
const ALLOW: &str = "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS";

/// Why llmtap answers a request itself: the status and a message.
pub fn refusal(method: &Method, uri: &Uri) -> Option<(StatusCode, &'static str)> {
    if method == Method::CONNECT {
        return Some((
            StatusCode::METHOD_NOT_ALLOWED,
            "CONNECT is not supported: llmtap forwards API paths, it is not a tunnel",
        ));
    }
    let path = uri.path();
    if !path.starts_with('/') {
        return Some((
            StatusCode::BAD_REQUEST,
            "the request target must be a path (origin-form or absolute-form)",
        ));
    }
    if has_dot_segment(path) {
        return Some((
            StatusCode::BAD_REQUEST,
            "the request path has a '.' or '..' segment",
        ));
    }
    None
}

/// True when some segment of `path`, in any spelling, is `.` or `..`.
fn has_dot_segment(path: &str) -> bool {
    // Every spelling of a dot segment holds a '.' or a percent-encoding.
    if !path.bytes().any(|b| b == b'.' || b == b'%') {
        return false;
    }
    let mut p = path.to_ascii_lowercase();
    // Undo percent-encoding of '%' itself (double, triple encoding); a fixed
    // number of rounds keeps this linear in the path's length.
    for _ in 0..3 {
        p = p.replace("%25", "%");
    }
    let p = p
        .replace("%2f", "/")
        .replace("%5c", "/")
        .replace('\\', "/")
        .replace("%2e", ".");
    p.split('/').any(|segment| {
        let name = segment.split(';').next().unwrap_or("");
        name == "." || name == ".."
    })
}

/// llmtap's answer to a refused target, in the OpenAI error shape.
pub fn answer(status: StatusCode, message: &str) -> Response<ProxyBody> {
    let body = serde_json::json!({
        "error": { "message": message, "type": "llmtap_request_refused" }
    })
    .to_string();
    let mut resp = Response::new(
        Full::new(Bytes::from(body))
            .map_err(|e| match e {})
            .boxed_unsync(),
    );
    *resp.status_mut() = status;
    let headers = resp.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    if status == StatusCode::METHOD_NOT_ALLOWED {
        headers.insert(header::ALLOW, HeaderValue::from_static(ALLOW));
    }
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(method: &str, target: &str) -> Option<u16> {
        let uri: Uri = target.parse().unwrap();
        refusal(&method.parse().unwrap(), &uri).map(|(s, _)| s.as_u16())
    }

    #[test]
    fn dot_segments_in_any_spelling_are_refused() {
        for path in [
            "/v1/../../admin",
            "/v1/..",
            "/v1/./chat/completions",
            "/./v1",
            "/v1/%2e%2e/admin",
            "/v1/%2E./admin",
            "/v1/.%2E/admin",
            "/v1/%2e/x",
            "/v1/..%2F..%2Fadmin",
            "/v1/..%5cadmin",
            "/v1/%252e%252e/admin",
            "/v1/%25252e./admin",
            "/v1/..;x=1/admin",
            "http://evil.test/v1/../admin",
        ] {
            assert_eq!(check("POST", path), Some(400), "{path}");
        }
    }

    #[test]
    fn ordinary_paths_pass() {
        for path in [
            "/v1/chat/completions",
            "/v1/models/gpt-4.1",
            "/v1/files/a..b",
            "/v1/.well-known",
            "/serving-endpoints/x/invocations?api-version=2024-01-01",
            "/",
            "//double/slash",
        ] {
            assert_eq!(check("POST", path), None, "{path}");
        }
        assert_eq!(check("OPTIONS", "/v1/chat/completions"), None);
    }

    #[test]
    fn connect_and_asterisk_form_are_refused() {
        assert_eq!(check("CONNECT", "api.openai.com:443"), Some(405));
        assert_eq!(check("CONNECT", "/v1/chat/completions"), Some(405));
        assert_eq!(check("OPTIONS", "*"), Some(400));
        assert_eq!(check("GET", "*"), Some(400));
    }

    #[test]
    fn a_405_says_what_is_allowed() {
        let r = answer(StatusCode::METHOD_NOT_ALLOWED, "no");
        assert_eq!(r.headers()[header::ALLOW], ALLOW);
        assert!(answer(StatusCode::BAD_REQUEST, "no")
            .headers()
            .get(header::ALLOW)
            .is_none());
    }
}
