//! llmtap: a sidecar proxy that forwards LLM API calls untouched and traces
//! each one into MLflow (self-hosted or on Databricks), any OpenTelemetry
//! backend, or files — several at once.
//!
//! The data path, left to right:
//!
//! ```text
//! server -> forward (route, tee) -> client -> upstream provider
//!                 | at the end of the response body (off the request path)
//!                 v
//!   exchange -> journal (disk; spool on) -> trace::build (parse::*) -> otlp
//!     -> one spool (disk) and delivery lane per sink -> batch -> Sink
//! ```
//!
//! Modules:
//! - [`config`]: flags, env, TOML, defaults -> a validated [`config::Config`];
//!   [`config::layers`] is the leaf every setting is read through.
//! - [`server`], [`admin`]: listeners (HTTP/1.1 + h2c; connection limits and
//!   client timeouts), health, readiness, metrics.
//! - [`forward`]: the request path and its phases; [`headers`], [`route`];
//!   [`target`]: the request targets llmtap refuses (CONNECT, `*`, `..`).
//! - [`tee`], [`deadline`], [`hide_usage`]: body wrappers — capped copy + end
//!   report; time limits; removing injected usage chunks.
//! - [`capture_budget`]: the global cap on captured bytes held in memory;
//!   [`memory_bound`]: the worst-case RSS a configuration allows.
//! - [`inject`]: pure request rewrite / stream filter for usage on every stream.
//! - [`upstream`]: upstream targets, failures and llmtap's own 502/504 answers;
//!   [`credentials`]: the provider key llmtap adds itself (env, file, Databricks).
//! - [`client`]: the pooled outbound client (rustls, h2/http1.1).
//! - [`parse`]: pure parsers (SSE, decompression, provider formats).
//! - [`exchange`], [`trace`], [`record`], [`otlp`]: captured facts -> span -> OTLP.
//! - [`pipeline`]: intake -> exchange journal (its writer thread) -> parse
//!   workers (threads, storing into the per-sink spools; the directory
//!   lock) -> delivery on the export thread's runtime (batch, rate, retry,
//!   dead letter), replay.
//! - [`sinks`]: the `Sink` trait and one folder per destination (`mlflow`,
//!   `databricks`, `databricks_table`, `otlp`, `file`); [`sinks::registry`]
//!   is the one list of kinds.
//! - [`databricks`]: workspace resolution and credentials as the Databricks
//!   SDKs do them (PAT, OAuth M2M, `~/.databrickscfg`).
//! - [`private`]: files created 0600 in 0700 directories.
//! - [`feedback`]: `POST /llmtap/v1/feedback` -> an assessment on a trace,
//!   stored per sink and delivered through `Sink::assess`.
//! - [`privacy`]: capture modes, redaction rules and detectors, sampling.
//! - [`pydumps`]: a value as Python's `json.dumps` writes it (the span
//!   inputs and outputs llmtap builds, the Databricks span documents).
//! - [`metrics`]: Prometheus counters and histograms.
//! - [`redact`]: URLs for display, without userinfo or query.
//! - [`session`]: which conversation a call belongs to (recognised in the
//!   parse stage, `pipeline::enrich`); [`cost`]: prices and a call's cost;
//!   [`cost_header`]: the optional `x-llmtap-cost-usd` response header.
//! - [`context`], [`environment`]: a call's production context (headers,
//!   body fields, traceparent, provider request id) and where llmtap runs
//!   (resource attributes).
#![forbid(unsafe_code)]

pub mod admin;
pub mod capture_budget;
pub mod client;
pub mod config;
pub mod context;
pub mod cost;
pub mod cost_header;
pub mod credentials;
pub mod databricks;
pub mod deadline;
pub mod environment;
pub mod exchange;
pub mod feedback;
pub mod forward;
pub mod headers;
pub mod hide_usage;
pub mod inject;
pub mod memory_bound;
pub mod metrics;
pub mod otlp;
pub mod parse;
pub mod pipeline;
pub mod privacy;
pub mod private;
pub mod pydumps;
pub mod record;
pub mod redact;
pub mod route;
pub mod server;
pub mod session;
pub mod sinks;
pub mod target;
pub mod tee;
pub mod trace;
pub mod upstream;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use config::Config;
use metrics::Metrics;

/// A running llmtap: its bound addresses and a way to stop it.
pub struct Running {
    pub addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub metrics: Arc<Metrics>,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Running {
    /// Graceful stop: stop accepting, drain in-flight calls, flush traces.
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }

    /// Resolves when the server has stopped (after [`Running::trigger_shutdown`]).
    pub async fn wait(self) {
        let _ = self.task.await;
    }

    /// Starts a graceful stop without waiting for it.
    pub fn trigger_shutdown(&self) {
        let _ = self.stop.send(true);
    }
}

/// Binds both listeners and starts serving. Port 0 picks a free port. Fails
/// when a listener cannot bind or another process holds the spool directory.
pub async fn start(cfg: Config) -> std::io::Result<Running> {
    server::prepare_fd_limit(&cfg.connections);
    let listener = TcpListener::bind(cfg.listen).await?;
    let admin_listener = TcpListener::bind(cfg.admin_listen).await?;
    let addr = listener.local_addr()?;
    let admin_addr = admin_listener.local_addr()?;
    let cfg = Arc::new(cfg);
    let metrics = Arc::new(Metrics::default());
    let sinks =
        sinks::registry::build(&cfg.sinks, &cfg.sink_context()).map_err(std::io::Error::other)?;
    let pipeline = pipeline::Pipeline::start(&cfg, &sinks, metrics.clone())
        .await
        .map_err(std::io::Error::other)?;
    let feedback = match &pipeline {
        Some(_) => Some(feedback::Feedback::start(&cfg, &sinks, metrics.clone()).await),
        None => None,
    };
    let proxy = Arc::new(
        forward::Proxy::new(
            cfg.clone(),
            pipeline.as_ref().map(pipeline::Pipeline::submitter),
            metrics.clone(),
        )
        .with_feedback(feedback.clone()),
    );
    let admin = Arc::new(admin::Admin::new(&cfg, sinks.clone(), metrics.clone()));
    let (stop, stopped) = watch::channel(false);
    let signal = |mut rx: watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let admin_task = tokio::spawn(server::serve_admin(
        admin_listener,
        admin,
        cfg.connections.clone(),
        metrics.clone(),
        signal(stopped.clone()),
    ));
    let grace = cfg.shutdown_grace;
    let metrics_ = metrics.clone();
    let limits = cfg.connections.clone();
    let task = tokio::spawn(async move {
        server::serve_proxy(listener, proxy, limits, metrics_, signal(stopped), grace).await;
        if let Some(p) = pipeline {
            p.shutdown(grace).await;
        }
        if let Some(f) = feedback {
            f.stop();
        }
        admin_task.abort();
    });
    let upstream = redact::uri(&cfg.upstream);
    let sink = match sinks.is_empty() {
        true => "disabled".to_string(),
        false => sinks
            .iter()
            .map(|s| s.describe())
            .collect::<Vec<_>>()
            .join("; "),
    };
    tracing::info!(%addr, %admin_addr, %upstream, %sink, "llmtap listening");
    Ok(Running {
        addr,
        admin_addr,
        metrics,
        stop,
        task,
    })
}
