//! The facts of one proxied call, as captured on the request path and handed
//! to the parse workers once the exchange has ended. Nothing here is parsed.

use std::time::{Instant, SystemTime};

use bytes::Bytes;

use crate::route::Api;
use crate::tee::{BodyEnd, Capture};

/// A captured body copy and how the body ended.
#[derive(Debug)]
pub struct CapturedBody {
    pub capture: Capture,
    pub end: BodyEnd,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
}

impl CapturedBody {
    pub fn bytes(&self) -> Bytes {
        self.capture.bytes()
    }
}

/// The upstream's response head.
#[derive(Debug, Clone)]
pub struct ResponseHead {
    pub status: u16,
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    /// When the head arrived.
    pub at: Instant,
    /// The provider's id for the call, from its response headers
    /// ([`crate::context::provider_request_id`]).
    pub request_id: Option<String>,
}

/// Everything known about one traced call when it ended.
#[derive(Debug)]
pub struct Exchange {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub api: Api,
    pub provider: &'static str,
    /// Azure deployment or Databricks endpoint named in the path (a model
    /// name of last resort).
    pub deployment: Option<String>,
    pub method: String,
    /// Request path, without the query (which may carry secrets such as Azure's `api-key`).
    pub path: String,
    pub started_wall: SystemTime,
    pub started: Instant,
    pub ended: Instant,
    /// None when the request body had not ended by the time the exchange did.
    pub request: Option<CapturedBody>,
    pub response_head: Option<ResponseHead>,
    pub response: Option<CapturedBody>,
    /// Why llmtap itself answered instead of the upstream (unreachable, timeout).
    pub proxy_error: Option<String>,
    /// The status llmtap answered with when it answered itself.
    pub proxy_status: Option<u16>,
    /// Why the client may have seen what the usage injection added (see
    /// [`crate::hide_usage`]); `None` when it was hidden or never added.
    pub usage_hiding_failed: Option<String>,
    /// What the call's headers said about who asked, the session, the
    /// trace's name, tags and metadata ([`crate::context`]).
    pub context: crate::context::CallContext,
    /// What privacy still asks of the captured bodies and context (capture
    /// mode, redaction), done before anything is written
    /// ([`crate::pipeline::privacy`]); the default once done.
    pub privacy: crate::privacy::Plan,
}

/// Mints a random, non-zero trace id.
pub fn new_trace_id() -> [u8; 16] {
    loop {
        let id = fastrand::u128(..).to_be_bytes();
        if id != [0; 16] {
            return id;
        }
    }
}

/// Mints a random, non-zero span id.
pub fn new_span_id() -> [u8; 8] {
    loop {
        let id = fastrand::u64(..).to_be_bytes();
        if id != [0; 8] {
            return id;
        }
    }
}

/// The id MLflow shows for an OTLP trace id: `tr-` + 32 lowercase hex digits.
pub fn mlflow_trace_id(trace_id: &[u8; 16]) -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(35);
    s.push_str("tr-");
    for b in trace_id {
        s.push(char::from(HEX[usize::from(b >> 4)]));
        s.push(char::from(HEX[usize::from(b & 15)]));
    }
    s
}

#[cfg(test)]
mod tests {
    #[test]
    fn mlflow_trace_ids_are_tr_and_32_lowercase_hex_digits() {
        let id: [u8; 16] = std::array::from_fn(|i| ((i as u8) * 17) ^ 0xa5);
        let want: String = id.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(super::mlflow_trace_id(&id), format!("tr-{want}"));
        assert_eq!(
            super::mlflow_trace_id(&[0; 16]),
            format!("tr-{}", "0".repeat(32))
        );
        assert_eq!(
            super::mlflow_trace_id(&[255; 16]),
            format!("tr-{}", "f".repeat(32))
        );
    }
}
