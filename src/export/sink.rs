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
}

impl Attempt {
    pub fn ok() -> Self {
        Attempt {
            verdict: Verdict::Success,
            reason: String::new(),
        }
    }

    pub fn transient(reason: impl Into<String>) -> Self {
        Attempt {
            verdict: Verdict::Retry { after: None },
            reason: reason.into(),
        }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        Attempt {
            verdict: Verdict::DontRetry,
            reason: reason.into(),
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
            Sink::File(f) => f.write(req),
        }
    }

    pub fn name(&self) -> &'static str {
        match self {
            Sink::Mlflow(_) => "mlflow",
            Sink::File(_) => "file",
        }
    }
}
