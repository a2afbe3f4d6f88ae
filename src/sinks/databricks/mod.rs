//! Databricks-managed MLflow (mlflow-wire.md §8): per trace, the trace info
//! (StartTraceV3), then the span document uploaded to the signed URL the
//! workspace hands out — without the workspace token —; feedback as
//! assessments.

pub mod aggregate;
#[cfg(test)]
pub(crate) mod fixtures;
pub mod group;
pub mod preview;
pub mod protojson;
pub mod pyjson;
pub mod span_doc;
pub mod trace_info;
