//! A Databricks workspace stand-in for integration tests: a hyper server on
//! 127.0.0.1:0 that speaks the part of the Databricks REST API the MLflow
//! client uses to log traces, and enforces what the real client and the docs
//! show (docs/databricks-contract.md; recordings in tests/fixtures/databricks/).
//!
//! ```ignore
//! #[path = "support/databricks.rs"]
//! mod databricks;
//! let dbx = databricks::Databricks::start().await;
//! // DATABRICKS_HOST=dbx.host(), DATABRICKS_TOKEN=databricks::PAT, or
//! // DATABRICKS_CLIENT_ID=databricks::CLIENT_ID / DATABRICKS_CLIENT_SECRET=databricks::CLIENT_SECRET,
//! // MLFLOW_EXPERIMENT_ID=databricks::EXPERIMENT_ID
//! ```
//!
//! # Endpoints (see the contract doc for the exact shapes)
//! - `GET /.well-known/databricks-config` (no auth) -> `oidc_endpoint`, `workspace_id`.
//! - `GET /oidc/.well-known/oauth-authorization-server` (no auth) -> `token_endpoint`.
//! - `POST /oidc/v1/token`: form `grant_type=client_credentials`, `scope` containing
//!   `all-apis`, client id/secret as HTTP Basic. Wrong credentials -> 401
//!   `invalid_client`; bad grant/scope -> 400. Issues opaque tokens that expire
//!   after [`Databricks::set_token_lifetime`] (default 3600 s).
//! - Every `/api/...` call needs `Authorization: Bearer <PAT or unexpired issued
//!   token>` (else 401 `{"error_code":"UNAUTHENTICATED",...}`); an
//!   `x-databricks-org-id` header, when sent, must be [`WORKSPACE_ID`] (else 403);
//!   a `Content-Encoding` other than identity is refused (400: the client sends none).
//! - `GET /api/2.0/mlflow/experiments/get?experiment_id=`, `GET .../get-by-name?experiment_name=`,
//!   `POST .../experiments/create {"name": "/absolute/path"}`.
//! - `POST /api/3.0/mlflow/traces` (StartTraceV3), body validated by
//!   `validate::start_trace`; the reply adds the tag `mlflow.artifactLocation`.
//! - `GET /api/2.0/mlflow/traces/{tr-id}/credentials-for-data-upload` -> an
//!   `AWS_PRESIGNED_URL` to this server's `/signed/{tr-id}/traces.json?X-Amz-Expires=..&X-Amz-Signature=..`
//!   with the header `x-amz-server-side-encryption: AES256` to send.
//! - `PUT /signed/...`: S3 rules — 400 if an `Authorization` header is sent, 403
//!   if the signature is wrong, the URL expired or the signed header is
//!   missing; the span document is validated (`validate::span_document`).
//! - `POST /api/3.0/mlflow/traces/{tr-id}/assessments`.
//! - `POST /api/2.0/otel/v1/traces` (OTLP protobuf; needs `X-Databricks-UC-Table-Name: catalog.schema.table`).
//! - `POST /api/4.0/mlflow/traces/{catalog.schema}/{hex}/info` (trace info for UC-stored traces).
//!
//! # Faults (settable while running)
//! [`Databricks::throttle_next`] (429 + `Retry-After`), [`Databricks::set_rate_limit`]
//! (QPS on trace creation, 429 beyond), [`Databricks::fail_next`] (any status on a
//! path prefix), [`Databricks::set_outage`] (503 everywhere), [`Databricks::stop`] /
//! [`Databricks::restart`] (port closed, then back on the same port with the
//! same data), [`Databricks::expire_all_tokens`], [`Databricks::set_token_lifetime`],
//! [`Databricks::set_upload_url_ttl`]. Token expiry and the rate limit follow
//! `tokio::time` (so `tokio::time::pause` moves them); signed-URL expiry is
//! wall-clock time (it travels in the URL).
//!
//! # Assertions
//! [`Databricks::requests`] (every request, with `authorized` = Authorization
//! present, and the status answered), [`Databricks::traces`] (trace info joined
//! with its uploaded span document), [`Databricks::assessments`],
//! [`Databricks::otlp_rows`], [`Databricks::v4_infos`], [`Databricks::token_grants`],
//! [`Databricks::rejections`].
#![allow(dead_code)]

#[path = "databricks/routes.rs"]
mod routes;
#[path = "databricks/validate.rs"]
pub mod validate;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use http::HeaderMap;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// The personal access token the stand-in accepts.
pub const PAT: &str = "dapi-standin0123456789abcdef";
/// The OAuth service principal the token endpoint accepts.
pub const CLIENT_ID: &str = "standin-client-id";
pub const CLIENT_SECRET: &str = "standin-client-secret";
/// The workspace id announced in `/.well-known/databricks-config`.
pub const WORKSPACE_ID: &str = "7474650000000001";
/// The experiment that exists from the start.
pub const EXPERIMENT_ID: &str = "1234567890";
pub const EXPERIMENT_NAME: &str = "/Users/llmtap@example.com/llmtap";
/// The header the signed upload URL requires, as `(name, value)`.
pub const UPLOAD_HEADER: (&str, &str) = ("x-amz-server-side-encryption", "AES256");

/// A request as the stand-in saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// An `Authorization` header was present.
    pub authorized: bool,
    /// The status the stand-in answered.
    pub status: u16,
}

/// A trace: the info StartTraceV3 stored and the span document uploaded to
/// its signed URL (if any), joined by trace id.
#[derive(Debug, Clone)]
pub struct StoredTrace {
    pub trace_id: String,
    /// `trace_info` as the client sent it.
    pub info: Value,
    /// The uploaded span document `{"spans":[...]}`.
    pub spans: Option<Value>,
    /// How many StartTraceV3 calls carried this id.
    pub starts: usize,
    /// How many span documents were accepted for it.
    pub uploads: usize,
}

impl StoredTrace {
    /// `trace_metadata[key]`.
    pub fn metadata(&self, key: &str) -> Option<&str> {
        self.info.get("trace_metadata")?.get(key)?.as_str()
    }
    /// `tags[key]`.
    pub fn tag(&self, key: &str) -> Option<&str> {
        self.info.get("tags")?.get(key)?.as_str()
    }
    /// A top-level trace-info string field (`state`, `request_preview`, ...).
    pub fn field(&self, key: &str) -> Option<&str> {
        self.info.get(key)?.as_str()
    }
}

/// One span that reached a UC table through the OTLP endpoint.
#[derive(Debug, Clone)]
pub struct OtlpRow {
    /// `X-Databricks-UC-Table-Name`.
    pub table: String,
    pub span: opentelemetry_proto::tonic::trace::v1::Span,
    pub resource: Option<opentelemetry_proto::tonic::resource::v1::Resource>,
}

/// A rejected request: what was wrong, for test failure messages.
#[derive(Debug, Clone)]
pub struct Rejection {
    pub method: String,
    pub path: String,
    pub status: u16,
    pub message: String,
}

#[derive(Debug, Clone)]
pub struct Experiment {
    pub id: String,
    pub name: String,
}

/// Mutable state behind the server.
pub(crate) struct Inner {
    pub seen: Vec<Seen>,
    pub traces: BTreeMap<String, StoredTrace>,
    pub assessments: Vec<Value>,
    pub otlp: Vec<OtlpRow>,
    pub v4_infos: Vec<Value>,
    pub rejections: Vec<Rejection>,
    /// Issued OAuth tokens -> expiry.
    pub tokens: HashMap<String, Instant>,
    pub grants: usize,
    pub token_lifetime: Duration,
    pub upload_ttl: Duration,
    pub experiments: Vec<Experiment>,
    /// (remaining, Retry-After seconds).
    pub throttle: Option<(usize, u64)>,
    /// (path prefix, status, remaining).
    pub faults: Vec<(String, u16, usize)>,
    pub outage: bool,
    /// How long every answer waits before it is sent.
    pub latency: Duration,
    /// Trace-creation QPS limit and the start times of recent creations.
    pub rate_qps: Option<u32>,
    pub recent_creations: Vec<Instant>,
    pub next_id: u64,
    /// Key for the toy URL signatures.
    pub sign_key: u64,
}

/// Shared by the server and the handle.
pub(crate) struct Shared {
    pub inner: Mutex<Inner>,
    /// Where the stand-in listens (for URLs when a request names no host).
    pub addr: SocketAddr,
}

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running stand-in. Dropping it closes the port.
pub struct Databricks {
    addr: SocketAddr,
    shared: Arc<Shared>,
    stop_tx: Mutex<watch::Sender<bool>>,
}

impl Databricks {
    /// Starts on a free loopback port with one experiment ([`EXPERIMENT_ID`]).
    pub async fn start() -> Databricks {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the Databricks stand-in");
        let addr = listener.local_addr().expect("stand-in address");
        let shared = Arc::new(Shared {
            addr,
            inner: Mutex::new(Inner {
                seen: Vec::new(),
                traces: BTreeMap::new(),
                assessments: Vec::new(),
                otlp: Vec::new(),
                v4_infos: Vec::new(),
                rejections: Vec::new(),
                tokens: HashMap::new(),
                grants: 0,
                token_lifetime: Duration::from_secs(3600),
                upload_ttl: Duration::from_secs(900),
                experiments: vec![Experiment {
                    id: EXPERIMENT_ID.into(),
                    name: EXPERIMENT_NAME.into(),
                }],
                throttle: None,
                faults: Vec::new(),
                outage: false,
                latency: Duration::ZERO,
                rate_qps: None,
                recent_creations: Vec::new(),
                next_id: 1,
                sign_key: fastrand::u64(..),
            }),
        });
        let (tx, rx) = watch::channel(false);
        tokio::spawn(serve(listener, shared.clone(), rx));
        Databricks {
            addr,
            shared,
            stop_tx: Mutex::new(tx),
        }
    }

    /// `http://127.0.0.1:PORT` — the value for `DATABRICKS_HOST`.
    pub fn host(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    // ---- faults -------------------------------------------------------

    /// The next `n` API calls (`/api/...`, after auth) get 429 with
    /// `Retry-After: retry_after_secs` and `REQUEST_LIMIT_EXCEEDED`.
    pub fn throttle_next(&self, n: usize, retry_after_secs: u64) {
        self.shared.lock().throttle = Some((n, retry_after_secs));
    }

    /// Limits StartTraceV3 and the v4 info call to `qps` per rolling second
    /// (429, `Retry-After: 1` beyond it); `None` lifts the limit.
    pub fn set_rate_limit(&self, qps: Option<u32>) {
        let mut g = self.shared.lock();
        g.rate_qps = qps;
        g.recent_creations.clear();
    }

    /// The next `n` requests whose path starts with `path_prefix` get `status`
    /// (a Databricks error body; 429/503 also carry `Retry-After: 1`).
    pub fn fail_next(&self, path_prefix: &str, status: u16, n: usize) {
        self.shared
            .lock()
            .faults
            .push((path_prefix.into(), status, n));
    }

    /// While on, every request gets 503 `TEMPORARILY_UNAVAILABLE` (the port stays open).
    pub fn set_outage(&self, on: bool) {
        self.shared.lock().outage = on;
    }

    /// Every answer waits this long first (a slow workspace).
    pub fn set_latency(&self, latency: Duration) {
        self.shared.lock().latency = latency;
    }

    /// Closes the port and every open connection (a workspace that is gone).
    pub async fn stop(&self) {
        let _ = self
            .stop_tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(true);
        // Wait until the port refuses connections.
        for _ in 0..200 {
            if tokio::net::TcpStream::connect(self.addr).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!(
            "the Databricks stand-in still accepts connections on {} after stop",
            self.addr
        );
    }

    /// Listens again on the same port, with all stored data and settings kept.
    pub async fn restart(&self) {
        let mut last = None;
        for _ in 0..200 {
            match TcpListener::bind(self.addr).await {
                Ok(listener) => {
                    let (tx, rx) = watch::channel(false);
                    *self.stop_tx.lock().unwrap_or_else(|e| e.into_inner()) = tx;
                    tokio::spawn(serve(listener, self.shared.clone(), rx));
                    return;
                }
                Err(e) => last = Some(e),
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("cannot listen again on {}: {last:?}", self.addr);
    }

    /// Every issued OAuth token expires now (the PAT stays valid).
    pub fn expire_all_tokens(&self) {
        let now = Instant::now();
        for exp in self.shared.lock().tokens.values_mut() {
            *exp = now;
        }
    }

    /// Lifetime (`expires_in`) of tokens issued from now on; whole seconds.
    pub fn set_token_lifetime(&self, lifetime: Duration) {
        self.shared.lock().token_lifetime = lifetime;
    }

    /// Lifetime of signed upload URLs handed out from now on (default 900 s).
    pub fn set_upload_url_ttl(&self, ttl: Duration) {
        self.shared.lock().upload_ttl = ttl;
    }

    /// Adds an experiment (e.g. to test lookup by name).
    pub fn add_experiment(&self, id: &str, name: &str) {
        self.shared.lock().experiments.push(Experiment {
            id: id.into(),
            name: name.into(),
        });
    }

    // ---- assertions ---------------------------------------------------

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Seen> {
        self.shared.lock().seen.clone()
    }

    /// Requests whose path starts with `prefix`.
    pub fn requests_to(&self, prefix: &str) -> Vec<Seen> {
        self.requests()
            .into_iter()
            .filter(|s| s.path.starts_with(prefix))
            .collect()
    }

    /// Stored traces, ordered by trace id.
    pub fn traces(&self) -> Vec<StoredTrace> {
        self.shared.lock().traces.values().cloned().collect()
    }

    pub fn trace(&self, trace_id: &str) -> Option<StoredTrace> {
        self.shared.lock().traces.get(trace_id).cloned()
    }

    /// Assessments as stored (with the `assessment_id` the stand-in gave them).
    pub fn assessments(&self) -> Vec<Value> {
        self.shared.lock().assessments.clone()
    }

    /// Spans received on the OTLP endpoint, one row per span.
    pub fn otlp_rows(&self) -> Vec<OtlpRow> {
        self.shared.lock().otlp.clone()
    }

    /// Bodies of accepted v4 `.../info` calls.
    pub fn v4_infos(&self) -> Vec<Value> {
        self.shared.lock().v4_infos.clone()
    }

    /// How many tokens the token endpoint issued.
    pub fn token_grants(&self) -> usize {
        self.shared.lock().grants
    }

    /// Requests the stand-in refused, with the reason.
    pub fn rejections(&self) -> Vec<Rejection> {
        self.shared.lock().rejections.clone()
    }

    pub fn experiments(&self) -> Vec<Experiment> {
        self.shared.lock().experiments.clone()
    }
}

impl Drop for Databricks {
    fn drop(&mut self) {
        let _ = self
            .stop_tx
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .send(true);
    }
}

async fn serve(listener: TcpListener, shared: Arc<Shared>, mut stop: watch::Receiver<bool>) {
    loop {
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r { Ok(s) => s, Err(_) => continue },
            _ = stop.changed() => return,
        };
        let shared = shared.clone();
        let mut stop = stop.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let shared = shared.clone();
                async move { Ok::<_, std::convert::Infallible>(routes::handle(shared, req).await) }
            });
            let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            let conn = builder.serve_connection(TokioIo::new(stream), svc);
            tokio::select! {
                _ = conn => {}
                _ = stop.changed() => {}
            }
        });
    }
}
