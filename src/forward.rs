//! The request path. Its phases, in order:
//!
//! 0. **refuse** — `CONNECT`, a target that is not a path (`OPTIONS *`) and
//!    dot segments are answered by llmtap itself ([`crate::target`]); so is
//!    every path under `/llmtap/` (user feedback, [`crate::feedback`]).
//! 1. **classify** — which LLM API the path speaks ([`crate::route`]); other
//!    paths are forwarded untraced. A trace id is minted for traced calls.
//! 2. **choose upstream** — a configured route (path prefix / Host) or the
//!    default upstream; base URL + path + query.
//! 3. **upstream request** — hop-by-hop headers out, `Host` set to the
//!    upstream's, every other header (credentials included) and the body
//!    passed through, tee'd. The exceptions: an upstream configured with a
//!    credential gets llmtap's key added when the agent sent none (or in
//!    place of the agent's, with `credential_override`; [`crate::credentials`]),
//!    and an OpenAI stream request without `stream_options.include_usage`
//!    gets it added ([`crate::inject`]).
//! 4. **response head** — status and headers as the provider sent them, plus
//!    `x-llmtap-trace-id`; or llmtap's own 502/504 when the upstream failed.
//!    A 401 to llmtap's key is reported to its credential source.
//! 5. **body frames** — streamed one by one through a [`Deadline`] and a
//!    [`Tee`] (and [`hide_usage`] around it when usage was injected and the
//!    answer is a 2xx event stream); nothing is buffered, coalesced or
//!    re-encoded. The tee's copy is reserved against the in-flight budget
//!    ([`crate::capture_budget`]); a call that starts with it spent is
//!    proxied the same, without a copy (and without usage injection, which
//!    would read its request whole).
//! 6. **logging** — when the response body ends (completed, errored or
//!    cancelled) the exchange is handed to the export pipeline with a
//!    non-blocking send. Parsing and export happen there, never here. With
//!    the spool's `fsync = "always"`, a completed body's end (its last frame
//!    or terminator) waits until the exchange is fsynced in the journal
//!    ([`crate::pipeline::journal`]), so a call the client saw finish is never
//!    lost to a crash.

use std::borrow::Cow;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;

use crate::capture_budget::{CaptureBudget, Shortfall};
use crate::client::Connector;
use crate::config::{select_route, Config};
use crate::credentials::{Applied, Outcome, UpstreamCredential};
use crate::deadline::Deadline;
use crate::exchange::{self, CapturedBody, Exchange, ResponseHead};
use crate::headers::{strip_hop_by_hop, text};
use crate::hide_usage::{hide_usage, Hiding};
use crate::inject::add_include_usage;
use crate::metrics::Metrics;
use crate::pipeline::Submitter;
use crate::route::{self, Api};
use crate::target;
use crate::tee::{BodyEnd, Capture, Tee};
use crate::upstream::{answer, Failure, Upstream};

pub use crate::headers::TRACE_ID_HEADER;
pub use crate::upstream::{BoxError, ProxyBody};
type UpstreamBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// The forwarding proxy; one per process, shared by all connections.
pub struct Proxy {
    client: Client<Connector, UpstreamBody>,
    cfg: Arc<Config>,
    /// The default upstream first, then one per configured route.
    upstreams: Vec<Upstream>,
    /// The credential llmtap adds, per upstream (same order).
    credentials: Vec<Option<UpstreamCredential>>,
    submitter: Option<Submitter>,
    metrics: Arc<Metrics>,
    /// Captured bytes in memory, all calls together (`capture.max_inflight_bytes`).
    budget: Arc<CaptureBudget>,
    /// User feedback (`/llmtap/v1/feedback`); `None` when tracing is off.
    feedback: Option<crate::feedback::Feedback>,
}

/// The parts of a traced call known before its response ends.
struct Draft {
    trace_id: [u8; 16],
    api: Api,
    provider: &'static str,
    deployment: Option<String>,
    method: String,
    path: String,
    started_wall: SystemTime,
    started: Instant,
    request: Mutex<Option<CapturedBody>>,
    /// The call's context headers (removed before the request goes upstream).
    context: crate::context::CallContext,
    /// The in-flight capture budget was spent when the call started: its
    /// bodies are not captured (the trace still carries the call's facts).
    skipped: bool,
    /// What privacy asks of the exchange before it is written ([`crate::privacy`]).
    privacy: crate::privacy::Plan,
    /// The sampling draw: false means traced only if the call fails.
    sampled: bool,
}

impl Draft {
    fn set_request(&self, body: CapturedBody) {
        if let Ok(mut slot) = self.request.lock() {
            *slot = Some(body);
        }
    }

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
            deployment: self.deployment.clone(),
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
            usage_hiding_failed: None,
            context: self.context.clone(),
            privacy: self.privacy.clone(),
        }
    }
}

impl Proxy {
    pub fn new(cfg: Arc<Config>, submitter: Option<Submitter>, metrics: Arc<Metrics>) -> Self {
        let mut upstreams = vec![Upstream::new(&cfg.upstream)];
        upstreams.extend(cfg.routes.iter().map(|r| Upstream::new(&r.upstream)));
        let credentials = UpstreamCredential::for_config(&cfg);
        let budget = CaptureBudget::new(cfg.max_inflight_capture_bytes);
        let _ = metrics.capture_budget.set(budget.clone());
        Proxy {
            budget,
            credentials,
            client: crate::client::client(cfg.connect_timeout, &cfg.upstream_ca.certs),
            upstreams,
            cfg,
            submitter,
            metrics,
            feedback: None,
        }
    }

    /// The feedback service `/llmtap/v1/feedback` hands bodies to.
    pub fn with_feedback(mut self, feedback: Option<crate::feedback::Feedback>) -> Self {
        self.feedback = feedback;
        self
    }

    /// The upstream for a request (its index in `upstreams`) and the path to
    /// send it (routes first).
    fn pick<'a>(&self, headers: &HeaderMap, uri: &'a Uri) -> (usize, Cow<'a, str>) {
        let host = headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| uri.authority().map(|a| a.as_str()));
        match select_route(&self.cfg.routes, host, uri.path()) {
            Some((i, path)) => (i + 1, path),
            None => (0, Cow::Borrowed(uri.path())),
        }
    }

    /// Adds upstream `i`'s credential, if it has one, to the outgoing
    /// headers (`path`: the upstream's, base path included); the credential
    /// and what it did, for the response's status.
    async fn add_credential(
        &self,
        i: usize,
        headers: &mut HeaderMap,
        path: &str,
        api: Option<Api>,
    ) -> Result<Option<(&UpstreamCredential, Applied)>, String> {
        let Some(credential) = self.credentials[i].as_ref() else {
            return Ok(None);
        };
        let host = self.upstreams[i].base.host().unwrap_or("");
        let applied = credential
            .apply(headers, host, path, api)
            .await
            .inspect_err(|_| self.metrics.credential("error"))?;
        self.metrics.credential(match applied.outcome {
            Outcome::Added => "added",
            Outcome::AgentKept => "agent",
            Outcome::Replaced => "replaced",
        });
        Ok(Some((credential, applied)))
    }

    /// True when a new call must go without a capture: the in-flight budget
    /// is spent. Counted; the call itself is proxied as ever.
    fn skip_capture(&self) -> bool {
        let first_chunk = self.cfg.max_capture_bytes.clamp(1, crate::tee::FIRST_CHUNK);
        if self.budget.has_room(first_chunk) {
            return false;
        }
        let n = self.metrics.captures_skipped_budget.fetch_add(1, Relaxed) + 1;
        if n.is_power_of_two() {
            tracing::warn!(
                skipped_total = n,
                inflight_bytes = self.budget.used(),
                "capture.max_inflight_bytes reached: calls are proxied without a body capture (traced with their facts only)"
            );
        }
        true
    }

    /// An empty copy for one of a traced call's bodies: budgeted, or none at
    /// all when the call found the budget spent.
    fn capture(&self, d: &Draft) -> Capture {
        if d.skipped {
            Capture::skip(Shortfall::MemoryBudget)
        } else {
            Capture::budgeted(self.cfg.max_capture_bytes, self.budget.reservation())
        }
    }

    /// The body sent upstream, and whether usage was injected into it. A
    /// traced body is tee'd; an OpenAI stream request that does not ask for
    /// usage is read whole first and `stream_options.include_usage` added
    /// (the trace keeps the client's original bytes).
    async fn request_body(
        &self,
        body: Incoming,
        headers: &mut HeaderMap,
        draft: Option<&Arc<Draft>>,
    ) -> Result<(UpstreamBody, bool), String> {
        let Some(d) = draft else {
            return Ok((body.boxed_unsync(), false));
        };
        let cap = self.cfg.max_capture_bytes;
        let content_type = text(headers, header::CONTENT_TYPE);
        let content_encoding = text(headers, header::CONTENT_ENCODING);
        let length = text(headers, header::CONTENT_LENGTH).and_then(|l| l.parse::<usize>().ok());
        let may_inject = self.cfg.inject_stream_usage
            && !d.skipped
            && d.api.has_stream_usage_option()
            && content_encoding.is_none()
            && length.is_some_and(|l| l <= cap);
        if !may_inject {
            let capture = self.capture(d).expecting(length);
            let d = d.clone();
            let tee = Tee::with_capture(body, capture, move |capture, end| {
                d.set_request(CapturedBody {
                    capture,
                    end,
                    content_type,
                    content_encoding,
                });
                None
            });
            return Ok((tee.boxed_unsync(), false));
        }
        let whole = Limited::new(body, cap)
            .collect()
            .await
            .map_err(|e| format!("reading the request body: {e}"))?
            .to_bytes();
        d.set_request(CapturedBody {
            capture: self.capture(d).with_body(&whole),
            end: BodyEnd::Complete,
            content_type,
            content_encoding,
        });
        let full = |b: Bytes| Full::new(b).map_err(|e| match e {}).boxed_unsync();
        match add_include_usage(&whole) {
            Some(changed) => {
                headers.insert(header::CONTENT_LENGTH, HeaderValue::from(changed.len()));
                Ok((full(Bytes::from(changed)), true))
            }
            None => Ok((full(whole), false)),
        }
    }

    /// Serves one request; never fails (errors become 4xx/5xx answers).
    pub async fn handle(self: Arc<Self>, req: Request<Incoming>) -> Response<ProxyBody> {
        let started = Instant::now();
        let (mut parts, body) = req.into_parts();
        if let Some((status, message)) = target::refusal(&parts.method, &parts.uri) {
            self.metrics.request("other", status.as_u16());
            tracing::info!(method = %parts.method, status = status.as_u16(), reason = message, "request target refused");
            return target::answer(status, message);
        }
        if crate::feedback::is_own_path(parts.uri.path()) {
            let f = self.feedback.as_ref();
            return crate::feedback::handler::handle(f, &self.metrics, parts, body).await;
        }
        let path = parts.uri.path().to_string();
        let method = parts.method.clone();
        let api = route::classify(&method, &path);
        let label = api.map_or("other", Api::label);

        // llmtap's own headers never go upstream, traced or not.
        let asked = crate::privacy::mode::requested(&parts.headers);
        let mut context = crate::context::take(&mut parts.headers);
        context.agent_session = crate::session::agents::from_headers(&parts.headers);
        let (upstream_index, forward_path) = self.pick(&parts.headers, &parts.uri);
        let upstream = &self.upstreams[upstream_index];
        let mode = self.cfg.privacy.mode(upstream_index.checked_sub(1), asked);
        let draft = self.draft(api, mode, context, upstream, &forward_path, &parts, started);
        let trace_header = draft
            .as_ref()
            .map(|d| exchange::mlflow_trace_id(&d.trace_id));
        let fail = |status: StatusCode, message: String, draft: &Option<Arc<Draft>>| {
            let at = (label, path.as_str(), trace_header.as_deref());
            self.fail(status, message, draft.clone(), at)
        };

        let upstream_base = upstream.base.clone();
        match upstream.uri(&forward_path, parts.uri.query()) {
            Ok(uri) => retarget(&mut parts, upstream, uri),
            Err(e) => {
                let message = format!("bad request target: {e}");
                return fail(StatusCode::BAD_REQUEST, message, &draft).await;
            }
        }
        let credential = match self
            .add_credential(upstream_index, &mut parts.headers, parts.uri.path(), api)
            .await
        {
            Ok(c) => c,
            Err(message) => return fail(StatusCode::BAD_GATEWAY, message, &draft).await,
        };

        let (body, injected) = match self
            .request_body(body, &mut parts.headers, draft.as_ref())
            .await
        {
            Ok(b) => b,
            Err(message) => return fail(StatusCode::BAD_REQUEST, message, &draft).await,
        };

        let total_at = self
            .cfg
            .request_timeout
            .map(|t| tokio::time::Instant::from_std(started) + t);
        let resp = match self.send(Request::from_parts(parts, body), total_at).await {
            Ok(resp) => resp,
            Err(failure) => {
                let (status, message) = failure.describe(&upstream_base);
                return fail(status, message, &draft).await;
            }
        };

        let status = resp.status().as_u16();
        if let Some((c, applied)) = &credential {
            if c.answered(applied, status) {
                self.metrics.credential("rejected");
            }
        }
        self.metrics.request(label, status);
        self.metrics.upstream_latency(label, started.elapsed());
        let (mut rparts, rbody) = resp.into_parts();
        strip_hop_by_hop(&mut rparts.headers);
        let body = Deadline::new(rbody, self.cfg.idle_timeout, total_at);
        let body: ProxyBody = match (draft, &self.submitter) {
            (Some(d), Some(submitter)) => {
                self.traced_body(d, submitter, &mut rparts, body, injected)
                    .await
            }
            _ => {
                if self.cfg.access_log {
                    tracing::info!(api = label, method = %method, path = %path, status, "proxied");
                }
                body.map_err(|e| Box::new(e) as BoxError).boxed_unsync()
            }
        };
        Response::from_parts(rparts, body)
    }

    /// llmtap's own answer to a call it could not forward (`at`: the API
    /// label, path and trace id header); like a proxied response's end, it
    /// waits for the trace to be durable when the journal asks for that.
    async fn fail(
        &self,
        status: StatusCode,
        message: String,
        draft: Option<Arc<Draft>>,
        (label, path, trace_header): (&'static str, &str, Option<&str>),
    ) -> Response<ProxyBody> {
        self.metrics.request(label, status.as_u16());
        tracing::warn!(api = label, path = %path, status = status.as_u16(), error = %message, trace_id = trace_header.unwrap_or("-"), "upstream call failed");
        let hold = match (&draft, &self.submitter) {
            (Some(d), Some(s)) => {
                s.submit(d.finish(None, None, Some((status.as_u16(), message.clone()))))
            }
            _ => None,
        };
        let response = answer(status, &message, trace_header);
        if let Some(hold) = hold {
            let _ = hold.await;
        }
        response
    }

    /// Sends the request upstream; its response head must arrive within
    /// the idle timeout and before `total_at` (the request timeout).
    async fn send(
        &self,
        req: Request<UpstreamBody>,
        total_at: Option<tokio::time::Instant>,
    ) -> Result<Response<Incoming>, Failure> {
        let head_limit = match (self.cfg.idle_timeout, total_at) {
            (Some(idle), Some(at)) => Some(at.min(tokio::time::Instant::now() + idle)),
            (Some(idle), None) => Some(tokio::time::Instant::now() + idle),
            (None, at) => at,
        };
        let sent = self.client.request(req);
        match head_limit {
            Some(at) => match tokio::time::timeout_at(at, sent).await {
                Ok(r) => r.map_err(Failure::from),
                Err(_) => Err(Failure::HeadTimeout),
            },
            None => sent.await.map_err(Failure::from),
        }
    }

    /// The draft of a traced call (None when it is not traced: no API, no
    /// pipeline, or capture mode `none`).
    #[allow(clippy::too_many_arguments)]
    fn draft(
        &self,
        api: Option<Api>,
        mode: crate::privacy::CaptureMode,
        context: crate::context::CallContext,
        upstream: &Upstream,
        forward_path: &str,
        parts: &http::request::Parts,
        started: Instant,
    ) -> Option<Arc<Draft>> {
        let api = api?;
        self.submitter.as_ref()?;
        if mode == crate::privacy::CaptureMode::None {
            // Not traced at all, like an untraced path.
            self.metrics.traces_not_captured.fetch_add(1, Relaxed);
            return None;
        }
        let privacy = &self.cfg.privacy;
        let path = parts.uri.path();
        Some(Arc::new(Draft {
            privacy: privacy.plan(mode),
            sampled: crate::privacy::sample::draw(privacy.sample),
            skipped: self.skip_capture(),
            trace_id: crate::context::traceparent::joined_trace_id(
                context.traceparent.as_deref(),
                self.cfg.context.join_client_trace,
            )
            .unwrap_or_else(exchange::new_trace_id),
            api,
            provider: route::provider(upstream.base.host().unwrap_or(""), forward_path, api),
            deployment: route::azure_deployment(path)
                .or_else(|| route::serving_endpoint(path))
                .map(str::to_string),
            method: parts.method.to_string(),
            path: path.to_string(),
            started_wall: SystemTime::now(),
            started,
            request: Mutex::new(None),
            context,
        }))
    }

    /// A traced response's body: usage hidden when llmtap injected it, the
    /// tee that submits the exchange at the body's end (unless sampled
    /// out), and the optional cost header (which holds the body).
    async fn traced_body(
        &self,
        d: Arc<Draft>,
        submitter: &Submitter,
        rparts: &mut http::response::Parts,
        body: Deadline<Incoming>,
        injected: bool,
    ) -> ProxyBody {
        let status = rparts.status.as_u16();
        let (api_of, deployment) = (d.api, d.deployment.clone());
        let trace_id = exchange::mlflow_trace_id(&d.trace_id);
        if let Ok(id) = HeaderValue::from_str(&trace_id) {
            rparts.headers.insert(TRACE_ID_HEADER, id);
        }
        let head = ResponseHead {
            status,
            content_type: text(&rparts.headers, header::CONTENT_TYPE),
            content_encoding: text(&rparts.headers, header::CONTENT_ENCODING),
            at: Instant::now(),
            request_id: crate::context::provider_request_id(&rparts.headers),
        };
        let hide = injected
            && crate::hide_usage::applies(
                status,
                head.content_type.as_deref(),
                head.content_encoding.as_deref(),
            );
        let length = text(&rparts.headers, header::CONTENT_LENGTH).and_then(|l| l.parse().ok());
        if hide {
            // The filtered stream has another length.
            rparts.headers.remove(header::CONTENT_LENGTH);
        }
        let (body, hiding) = if hide {
            let (scan, hiding) = hide_usage(body);
            (scan.boxed_unsync(), Some(hiding))
        } else {
            (body.boxed_unsync(), None)
        };
        let submitter = submitter.clone();
        let metrics = self.metrics.clone();
        let hidden = hiding.clone();
        let access_log = self.cfg.access_log;
        let capture = self.capture(&d).expecting(length);
        let tee = Tee::with_capture(body, capture, move |capture, end| {
            if access_log {
                log_end(&d, status, &end, &capture);
            }
            // Sampled out and fine: nothing is submitted, written or sent.
            if !crate::privacy::sample::keep(d.sampled, status, &end) {
                metrics.traces_unsampled.fetch_add(1, Relaxed);
                return None;
            }
            let response = CapturedBody {
                capture,
                end,
                content_type: head.content_type.clone(),
                content_encoding: head.content_encoding.clone(),
            };
            let mut ex = d.finish(Some(head), Some(response), None);
            ex.usage_hiding_failed = hidden.as_ref().and_then(Hiding::failure);
            if let Some(reason) = &ex.usage_hiding_failed {
                metrics.usage_hiding_failures.fetch_add(1, Relaxed);
                tracing::warn!(trace_id = %exchange::mlflow_trace_id(&d.trace_id), reason = %reason, "the injected usage could not be hidden from the client");
            }
            submitter.submit(ex)
        });
        let body = match hiding {
            Some(hiding) => hiding
                .reveal(tee)
                .map_err(|e| Box::new(e) as BoxError)
                .boxed_unsync(),
            None => tee.map_err(|e| Box::new(e) as BoxError).boxed_unsync(),
        };
        let cap = self.cfg.max_capture_bytes;
        if self.cfg.cost.response_header && crate::cost_header::applies(rparts, cap) {
            let table = &self.cfg.cost.prices;
            let at = deployment.as_deref();
            crate::cost_header::hold(rparts, body, table, api_of, at, cap).await
        } else {
            body
        }
    }
}

/// Points the request at `upstream` (`uri` on it): HTTP/1.1, no
/// hop-by-hop headers, its `Host`.
fn retarget(parts: &mut http::request::Parts, upstream: &Upstream, uri: Uri) {
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(header::HOST, upstream.host.clone());
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
