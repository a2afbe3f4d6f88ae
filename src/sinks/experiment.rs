//! The experiment a sink writes to, shared by the MLflow sinks (self-hosted
//! and Databricks): an id given in the configuration, or a name resolved
//! once — by the sink's own lookup-or-create — and then remembered.

use std::future::Future;

use tokio::sync::Mutex;

use super::mlflow::config::ExperimentRef;
use super::Attempt;

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

    /// The id: known, or `resolve(name)` on first use (a failure is tried
    /// again on the next call).
    pub async fn id<F, Fut>(&self, resolve: F) -> Result<String, Attempt>
    where
        F: FnOnce(String) -> Fut,
        Fut: Future<Output = Result<String, Attempt>>,
    {
        let mut id = self.id.lock().await;
        if let Some(id) = id.as_ref() {
            return Ok(id.clone());
        }
        let found = resolve(self.name.clone().unwrap_or_default()).await?;
        *id = Some(found.clone());
        Ok(found)
    }
}
