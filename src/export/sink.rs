//! The trace sinks behind the batcher.

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;

use super::file::FileSink;
use super::mlflow::MlflowSink;
pub use super::retry::Attempt;

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
