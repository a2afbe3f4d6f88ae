//! The experiment the traces go to: `MLFLOW_EXPERIMENT_ID`, or a name
//! (`MLFLOW_EXPERIMENT_NAME`, a workspace path such as
//! `/Users/me@example.com/agent`) looked up once and created when missing,
//! the way `mlflow.set_experiment(name)` does on Databricks.

use http::{Method, StatusCode};

use super::workspace::{CallError, Workspace};
use crate::sinks::http::{json_str, percent_encode, Answer};
use crate::sinks::{classify, Attempt};

/// An attempt from a call error or an unexpected answer.
pub fn failed(e: CallError) -> Attempt {
    match e {
        CallError::Transport(e) => Attempt::transient(e),
        // No answer from the identity provider may pass; a refused client
        // secret will not (until the operator fixes it: dead-lettered).
        CallError::Auth(e) if e.is_transient() => Attempt::transient(e.to_string()),
        CallError::Auth(e) => Attempt::permanent(e.to_string()),
    }
}

pub fn answered(a: &Answer, what: &str) -> Attempt {
    let status = a.status.as_u16();
    Attempt::from_answer(
        classify(status, a.retry_after.as_deref()),
        status,
        &a.body,
        what,
    )
}

pub fn has_code(a: &Answer, code: &str) -> bool {
    json_str(&a.body, &["error_code"]).as_deref() == Some(code)
}

pub async fn resolve(ws: &Workspace, name: &str) -> Result<String, Attempt> {
    for _ in 0..2 {
        if let Some(id) = lookup(ws, name).await? {
            tracing::info!(experiment = %name, experiment_id = %id, "using Databricks experiment");
            return Ok(id);
        }
        let body = serde_json::json!({ "name": name });
        let a = ws
            .call(
                Method::POST,
                "/api/2.0/mlflow/experiments/create",
                Some(&body),
            )
            .await
            .map_err(failed)?;
        if a.status.is_success() {
            if let Some(id) = json_str(&a.body, &["experiment_id"]) {
                tracing::info!(experiment = %name, experiment_id = %id, "created Databricks experiment");
                return Ok(id);
            }
        } else if !has_code(&a, "RESOURCE_ALREADY_EXISTS") {
            return Err(answered(&a, "creating experiment"));
        }
        // Lost a creation race: look it up again.
    }
    Err(Attempt::transient(format!(
        "experiment {name:?} could not be resolved"
    )))
}

async fn lookup(ws: &Workspace, name: &str) -> Result<Option<String>, Attempt> {
    let path = format!(
        "/api/2.0/mlflow/experiments/get-by-name?experiment_name={}",
        percent_encode(name)
    );
    let a = ws.call(Method::GET, &path, None).await.map_err(failed)?;
    if a.status.is_success() {
        return Ok(json_str(&a.body, &["experiment", "experiment_id"]));
    }
    if a.status == StatusCode::NOT_FOUND || has_code(&a, "RESOURCE_DOES_NOT_EXIST") {
        return Ok(None);
    }
    Err(answered(&a, "looking up experiment"))
}
