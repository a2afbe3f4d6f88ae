//! How the MLflow sink finds its experiment by name: looked up, and created
//! when missing (mlflow-wire.md §2); [`crate::sinks::experiment`] remembers it.

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};

use super::MlflowSink;
use crate::sinks::http::{json_str, percent_encode};
use crate::sinks::Attempt;

pub async fn resolve(sink: &MlflowSink, name: &str) -> Result<String, Attempt> {
    for _ in 0..2 {
        if let Some(id) = lookup(sink, name).await? {
            tracing::info!(sink = %sink.name, experiment = %name, experiment_id = %id, "using MLflow experiment");
            return Ok(id);
        }
        let body = serde_json::json!({ "name": name }).to_string();
        let req = Request::builder()
            .method(Method::POST)
            .uri(sink.url("/api/2.0/mlflow/experiments/create"))
            .header(header::CONTENT_TYPE, "application/json");
        let a = sink
            .call(req, Bytes::from(body))
            .await
            .map_err(Attempt::transient)?;
        if a.status.is_success() {
            if let Some(id) = json_str(&a.body, &["experiment_id"]) {
                tracing::info!(sink = %sink.name, experiment = %name, experiment_id = %id, "created MLflow experiment");
                return Ok(id);
            }
        } else if !String::from_utf8_lossy(&a.body).contains("RESOURCE_ALREADY_EXISTS") {
            return Err(sink.answer(&a, "creating experiment"));
        }
        // Lost a creation race: look it up again.
    }
    Err(Attempt::transient(format!(
        "experiment {name:?} could not be resolved"
    )))
}

async fn lookup(sink: &MlflowSink, name: &str) -> Result<Option<String>, Attempt> {
    let url = sink.url(&format!(
        "/api/2.0/mlflow/experiments/get-by-name?experiment_name={}",
        percent_encode(name)
    ));
    let req = Request::builder().method(Method::GET).uri(url);
    let a = sink
        .call(req, Bytes::new())
        .await
        .map_err(Attempt::transient)?;
    if a.status.is_success() {
        return Ok(json_str(&a.body, &["experiment", "experiment_id"]));
    }
    if a.status == StatusCode::NOT_FOUND
        || String::from_utf8_lossy(&a.body).contains("RESOURCE_DOES_NOT_EXIST")
    {
        return Ok(None);
    }
    Err(sink.answer(&a, "looking up experiment"))
}
