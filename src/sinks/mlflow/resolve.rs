//! The MLflow experiment a sink writes to: given by id, or looked up by name
//! (and created when missing) once, then remembered. mlflow-wire.md §2.

use bytes::Bytes;
use http::{header, Method, Request, StatusCode};
use tokio::sync::Mutex;

use super::config::ExperimentRef;
use super::MlflowSink;
use crate::sinks::http::{json_str, percent_encode};
use crate::sinks::Attempt;

/// The experiment id, or the name to resolve it from.
pub struct Experiment {
    name: Option<String>,
    /// Held while a lookup runs, so concurrent sends resolve it once.
    id: Mutex<Option<String>>,
}

impl Experiment {
    pub fn new(r: &ExperimentRef) -> Self {
        match r {
            ExperimentRef::Id(id) => Experiment {
                name: None,
                id: Mutex::new(Some(id.clone())),
            },
            ExperimentRef::Name(n) => Experiment {
                name: Some(n.clone()),
                id: Mutex::new(None),
            },
        }
    }

    /// The id, looked up (or created) on first use.
    pub async fn id(&self, sink: &MlflowSink) -> Result<String, Attempt> {
        let mut id = self.id.lock().await;
        if let Some(id) = id.as_ref() {
            return Ok(id.clone());
        }
        let name = self.name.as_deref().unwrap_or_default();
        let found = resolve(sink, name).await?;
        *id = Some(found.clone());
        Ok(found)
    }
}

async fn resolve(sink: &MlflowSink, name: &str) -> Result<String, Attempt> {
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
