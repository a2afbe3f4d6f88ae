//! The trace sinks behind the batcher, and the result of one attempt.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use super::file::FileSink;
use super::mlflow::MlflowSink;
use super::retry::Verdict;

/// The result of one export attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub verdict: Verdict,
    /// Why it failed (empty on success).
    pub reason: String,
    /// The kind of failure, for the retries-by-reason metric: `connect`,
    /// `timeout`, `io`, `http_408`, `http_429`, `http_5xx`, `http_4xx`.
    pub class: &'static str,
}

impl Attempt {
    pub fn ok() -> Self {
        Attempt {
            verdict: Verdict::Success,
            reason: String::new(),
            class: "",
        }
    }

    /// A transport failure: no answer came back (`timeout` when the reason
    /// says the time ran out, else `connect`).
    pub fn transient(reason: impl Into<String>) -> Self {
        let reason = reason.into();
        let class = if reason.contains("no answer within") || reason.contains("timed out") {
            "timeout"
        } else {
            "connect"
        };
        Attempt {
            verdict: Verdict::Retry { after: None },
            reason,
            class,
        }
    }

    /// A local I/O failure (the file sink).
    pub fn io(reason: impl Into<String>) -> Self {
        Attempt {
            class: "io",
            ..Attempt::transient(reason)
        }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        Attempt {
            verdict: Verdict::DontRetry,
            reason: reason.into(),
            class: "local",
        }
    }
}

/// Where batches go.
pub enum Sink {
    Mlflow(Box<MlflowSink>),
    File(FileSink),
}

impl Sink {
    /// Sends one batch once; the caller retries.
    pub async fn send(&mut self, req: &ExportTraceServiceRequest) -> Attempt {
        match self {
            Sink::Mlflow(s) => s.send(&req.encode_to_vec()).await,
            Sink::File(f) => f.send(req).await,
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Sink::Mlflow(_) => "mlflow",
            Sink::File(_) => "file",
        }
    }
}
