//! Where traces go. Every destination is a folder here holding its config,
//! resolver, transport and tests, and implements one trait, [`Sink`]; the
//! pipeline, `/readyz` and the metrics see sinks only through it.
//!
//! A sink receives batches in one canonical shape — an OTLP
//! `ExportTraceServiceRequest` whose spans are shaped the way MLflow's own
//! autologging shapes them ([`crate::otlp`]) — and turns them into what its
//! destination takes (OTLP protobuf, OTLP-JSON lines, GenAI semantic
//! conventions, MLflow trace info plus an uploaded span document).
//!
//! A sink sends once and says what that came to ([`Attempt`]); retries,
//! backoff, rate limits, 413 splits and the dead-letter file are the
//! pipeline's ([`crate::pipeline::deliver`]), so a sink stays a transport.
//!
//! Adding a destination: a new folder with a `pub fn build` and one line in
//! [`registry`].

pub mod attempt;
pub mod databricks;
pub mod databricks_table;
pub mod experiment;
pub mod file;
pub mod http;
pub mod mlflow;
pub mod otlp;
pub mod registry;

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

pub use attempt::{classify, Attempt, Verdict};

/// What a sink's async methods return: boxed, so sinks can be trait objects.
pub type SinkFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// A destination for traces. Implementations are shared (`Arc<dyn Sink>`)
/// between the delivery task and the readiness probe, so every method takes
/// `&self`; state a sink learns (an experiment id, an OAuth token) lives
/// behind its own lock.
pub trait Sink: Send + Sync {
    /// This sink's name: the `sink` label of its metrics, its log field,
    /// its dead-letter file and spool directory. Unique in a configuration.
    fn name(&self) -> &str;

    /// The destination kind (`mlflow`, `file`, `otlp`, `databricks`,
    /// `databricks_table`).
    fn kind(&self) -> &'static str;

    /// Sends one batch once; the pipeline acts on the verdict. Re-sending a
    /// batch must be harmless (every destination here upserts by span id).
    fn send<'a>(&'a self, batch: &'a ExportTraceServiceRequest) -> SinkFuture<'a, Attempt>;

    /// Attaches an assessment (user feedback) to a trace this sink received.
    /// A destination with no place for feedback answers
    /// [`Attempt::unsupported`].
    fn assess<'a>(&'a self, assessment: &'a Assessment) -> SinkFuture<'a, Attempt>;

    /// One line for the startup log: where this sink sends (no secret).
    fn describe(&self) -> String;

    /// Readiness: whether the destination can take traces now; the error
    /// says why not and never carries a secret.
    fn probe(&self) -> SinkFuture<'_, Result<(), String>>;

    /// The traces per second this kind of destination takes at most (a
    /// published quota), used when neither the sink's entry nor
    /// `export.max_traces_per_second` sets a limit. `None`: no limit.
    fn default_rate(&self) -> Option<f64> {
        None
    }

    /// How this sink reads an HTTP status. The default is
    /// [`attempt::classify`]; a destination whose statuses mean something
    /// else overrides it.
    fn classify(&self, status: u16, retry_after: Option<&str>) -> Verdict {
        classify(status, retry_after)
    }
}

/// What every sink is built with, besides its own configuration.
#[derive(Debug, Clone)]
pub struct Context {
    /// TCP + TLS connect limit for outbound calls (`upstream.connect_timeout`).
    pub connect_timeout: std::time::Duration,
    /// The limit of one export call, answer included (`export.timeout`).
    pub timeout: std::time::Duration,
    /// `service.name` of the traces (`server.service_name`).
    pub service_name: String,
}

/// User feedback (or any assessment) on one trace, as MLflow models it
/// (mlflow-wire.md §7).
#[derive(Debug, Clone, PartialEq)]
pub struct Assessment {
    /// The MLflow trace id, `tr-` + 32 hex digits.
    pub trace_id: String,
    /// e.g. `user_feedback`.
    pub name: String,
    /// `HUMAN`, `LLM_JUDGE` or `CODE`.
    pub source_type: String,
    /// Who gave it (a user id), or empty.
    pub source_id: String,
    /// A bool, number, string or object.
    pub value: serde_json::Value,
    /// An optional comment.
    pub rationale: Option<String>,
    pub metadata: BTreeMap<String, String>,
}
