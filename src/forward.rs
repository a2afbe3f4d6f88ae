//! The request path. Its phases, in order:
//!
//! 1. **classify** — which LLM API the path speaks ([`crate::route`]); other
//!    paths are forwarded untraced. A trace id is minted for traced calls.
//! 2. **upstream request** — base URL + path + query; hop-by-hop headers out,
//!    `Host` set to the upstream's, every other header (credentials
//!    included) and the body passed through; the body is tee'd.
//! 3. **response head** — status and headers as the provider sent them, plus
//!    `x-llmtap-trace-id`; or llmtap's own 502/504 when the upstream failed.
//! 4. **body frames** — streamed one by one through a [`Deadline`] and a
//!    [`Tee`]; nothing is buffered, coalesced or re-encoded.
//! 5. **logging** — when the response body ends (completed, errored or
//!    cancelled) the exchange is handed to the export pipeline with a
//!    non-blocking send. Parsing and export happen there, never here.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;

use crate::client::Connector;
use crate::config::Config;
use crate::deadline::Deadline;
use crate::exchange::{self, CapturedBody, Exchange, ResponseHead};
use crate::export::Submitter;
use crate::headers::{strip_hop_by_hop, text};
use crate::metrics::Metrics;
use crate::route::{self, Api};
use crate::tee::{BodyEnd, Capture, Tee};

/// Boxed error type of proxied bodies.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;
/// Body type of everything llmtap answers.
pub type ProxyBody = UnsyncBoxBody<Bytes, BoxError>;
type UpstreamBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// The response header carrying the MLflow trace id.
pub const TRACE_ID_HEADER: &str = "x-llmtap-trace-id";

/// The forwarding proxy; one per process, shared by all connections.
pub struct Proxy {
    client: Client<Connector, UpstreamBody>,
    cfg: Arc<Config>,
    host: HeaderValue,
    provider: &'static str,
    submitter: Option<Submitter>,
    metrics: Arc<Metrics>,
}

/// The parts of a traced call known before its response ends.
struct Draft {
    trace_id: [u8; 16],
    api: Api,
    provider: &'static str,
    method: String,
    path: String,
    started_wall: SystemTime,
    started: Instant,
    request: Mutex<Option<CapturedBody>>,
}

impl Draft {
    fn finish(
        &self,
        head: Option<ResponseHead>,
        response: Option<CapturedBody>,
        proxy_error: Option<(u16, String)>,
    ) -> Exchange {
        let request = self.request.lock().ok().and_then(|mut r| r.take());
        Exchange {
            trace_id: self.trace_id,
            span_id: exchange::new_span_id(),
            api: self.api,
            provider: self.provider,
            method: self.method.clone(),
            path: self.path.clone(),
            started_wall: self.started_wall,
            started: self.started,
            ended: Instant::now(),
            request,
            response_head: head,
            response,
            proxy_status: proxy_error.as_ref().map(|(s, _)| *s),
            proxy_error: proxy_error.map(|(_, m)| m),
        }
    }
}

impl Proxy {
    pub fn new(cfg: Arc<Config>, submitter: Option<Submitter>, metrics: Arc<Metrics>) -> Self {
        let authority = cfg.upstream.authority().map(|a| a.as_str()).unwrap_or("");
        let host = HeaderValue::from_str(authority).unwrap_or(HeaderValue::from_static(""));
        let provider = route::provider_for_host(cfg.upstream.host().unwrap_or(""));
        Proxy {
            client: crate::client::client(cfg.connect_timeout),
            host,
            provider,
            cfg,
            submitter,
            metrics,
        }
    }

    /// Upstream base + the request's path and query.
    fn upstream_uri(&self, uri: &Uri) -> Result<Uri, http::Error> {
        let base = &self.cfg.upstream;
        let prefix = base.path().trim_end_matches('/');
        let pq = uri.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let pq = if pq.starts_with('/') {
            pq.to_string()
        } else {
            format!("/{pq}")
        };
        Uri::builder()
            .scheme(base.scheme_str().unwrap_or("https"))
            .authority(base.authority().map(|a| a.as_str()).unwrap_or(""))
            .path_and_query(format!("{prefix}{pq}"))
            .build()
    }

    /// Serves one request; never fails (errors become 502/504 answers).
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<ProxyBody> {
        let started = Instant::now();
        let (mut parts, body) = req.into_parts();
        let path = parts.uri.path().to_string();
        let method = parts.method.clone();
        let api = route::classify(&method, &path);
        let label = api.map_or("other", Api::label);
        let draft = match (api, &self.submitter) {
            (Some(api), Some(_)) => Some(Arc::new(Draft {
                trace_id: exchange::new_trace_id(),
                api,
                provider: self.provider,
                method: parts.method.to_string(),
                path: path.clone(),
                started_wall: SystemTime::now(),
                started,
                request: Mutex::new(None),
            })),
            _ => None,
        };
        let trace_header = draft
            .as_ref()
            .map(|d| exchange::mlflow_trace_id(&d.trace_id));

        parts.uri = match self.upstream_uri(&parts.uri) {
            Ok(u) => u,
            Err(e) => {
                return self.answer(
                    StatusCode::BAD_REQUEST,
                    &format!("bad request target: {e}"),
                    &trace_header,
                )
            }
        };
        parts.version = Version::HTTP_11;
        strip_hop_by_hop(&mut parts.headers);
        parts.headers.insert(header::HOST, self.host.clone());

        let cap = self.cfg.max_capture_bytes;
        let body: UpstreamBody = match &draft {
            Some(d) => {
                let d = d.clone();
                let content_type = text(&parts.headers, header::CONTENT_TYPE);
                let content_encoding = text(&parts.headers, header::CONTENT_ENCODING);
                Tee::new(body, cap, move |capture, end| {
                    if let Ok(mut slot) = d.request.lock() {
                        *slot = Some(CapturedBody {
                            capture,
                            end,
                            content_type,
                            content_encoding,
                        });
                    }
                })
                .boxed_unsync()
            }
            None => body.boxed_unsync(),
        };

        let total_at = self
            .cfg
            .request_timeout
            .map(|t| tokio::time::Instant::from_std(started) + t);
        let head_limit = match (self.cfg.idle_timeout, total_at) {
            (Some(idle), Some(at)) => Some(at.min(tokio::time::Instant::now() + idle)),
            (Some(idle), None) => Some(tokio::time::Instant::now() + idle),
            (None, at) => at,
        };
        let sent = self.client.request(Request::from_parts(parts, body));
        let result = match head_limit {
            Some(at) => match tokio::time::timeout_at(at, sent).await {
                Ok(r) => r.map_err(Failure::from),
                Err(_) => Err(Failure::HeadTimeout),
            },
            None => sent.await.map_err(Failure::from),
        };

        let resp = match result {
            Ok(resp) => resp,
            Err(failure) => {
                let (status, message) = failure.describe(&self.cfg.upstream);
                self.metrics.request(label, status.as_u16());
                tracing::warn!(api = label, path = %path, status = status.as_u16(), error = %message, trace_id = trace_header.as_deref().unwrap_or("-"), "upstream failed");
                if let (Some(d), Some(s)) = (&draft, &self.submitter) {
                    s.submit(d.finish(None, None, Some((status.as_u16(), message.clone()))));
                }
                return self.answer(status, &message, &trace_header);
            }
        };

        let status = resp.status().as_u16();
        self.metrics.request(label, status);
        self.metrics.upstream_latency(label, started.elapsed());
        let (mut rparts, rbody) = resp.into_parts();
        strip_hop_by_hop(&mut rparts.headers);
        let body = Deadline::new(rbody, self.cfg.idle_timeout, total_at);
        let body: ProxyBody = match (draft, &self.submitter) {
            (Some(d), Some(submitter)) => {
                if let Some(id) = trace_header
                    .as_deref()
                    .and_then(|t| HeaderValue::from_str(t).ok())
                {
                    rparts.headers.insert(TRACE_ID_HEADER, id);
                }
                let head = ResponseHead {
                    status,
                    content_type: text(&rparts.headers, header::CONTENT_TYPE),
                    content_encoding: text(&rparts.headers, header::CONTENT_ENCODING),
                    at: Instant::now(),
                };
                let submitter = submitter.clone();
                Tee::new(body, cap, move |capture, end| {
                    log_end(&d, status, &end, &capture);
                    let response = CapturedBody {
                        capture,
                        end,
                        content_type: head.content_type.clone(),
                        content_encoding: head.content_encoding.clone(),
                    };
                    submitter.submit(d.finish(Some(head), Some(response), None));
                })
                .map_err(|e| Box::new(e) as BoxError)
                .boxed_unsync()
            }
            _ => {
                tracing::info!(api = label, method = %method, path = %path, status, "proxied");
                body.map_err(|e| Box::new(e) as BoxError).boxed_unsync()
            }
        };
        Response::from_parts(rparts, body)
    }

    /// llmtap's own answer, in the OpenAI error shape SDKs understand.
    fn answer(
        &self,
        status: StatusCode,
        message: &str,
        trace: &Option<String>,
    ) -> Response<ProxyBody> {
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
        if let Some(id) = trace.as_deref().and_then(|t| HeaderValue::from_str(t).ok()) {
            resp.headers_mut().insert(TRACE_ID_HEADER, id);
        }
        resp
    }
}

fn log_end(d: &Draft, status: u16, end: &BodyEnd, capture: &Capture) {
    let outcome = match end {
        BodyEnd::Complete => "complete",
        BodyEnd::Error(_) => "error",
        BodyEnd::Cancelled => "cancelled",
    };
    tracing::info!(
        api = d.api.label(),
        method = %d.method,
        path = %d.path,
        status,
        outcome,
        bytes = capture.total_bytes,
        ms = d.started.elapsed().as_millis() as u64,
        trace_id = %exchange::mlflow_trace_id(&d.trace_id),
        "proxied"
    );
}

/// Why no response head came back from the upstream.
enum Failure {
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
    fn describe(&self, upstream: &Uri) -> (StatusCode, String) {
        let host = upstream.authority().map(|a| a.as_str()).unwrap_or("?");
        match self {
            Failure::HeadTimeout => (
                StatusCode::GATEWAY_TIMEOUT,
                format!("upstream {host} sent no response head in time (idle timeout)"),
            ),
            Failure::Client(e) => {
                let chain = crate::export::mlflow::error_chain(e);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_uri_joins_base_path_and_keeps_query() {
        let mut cfg =
            crate::config::resolve(&Default::default(), &Default::default(), None).unwrap();
        cfg.upstream = "http://upstream.test:8000/prefix".parse().unwrap();
        let p = Proxy::new(Arc::new(cfg), None, Arc::new(Metrics::default()));
        let u = p
            .upstream_uri(&"/v1/chat/completions?api-version=1".parse().unwrap())
            .unwrap();
        assert_eq!(
            u.to_string(),
            "http://upstream.test:8000/prefix/v1/chat/completions?api-version=1"
        );
        let u = p
            .upstream_uri(&"http://ignored:1/v1/models".parse().unwrap())
            .unwrap();
        assert_eq!(u.to_string(), "http://upstream.test:8000/prefix/v1/models");
    }
}
