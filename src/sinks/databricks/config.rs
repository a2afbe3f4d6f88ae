//! Configuration of the `databricks` sink: which workspace (and how to
//! authenticate, resolved by [`crate::databricks::resolve`] the way the
//! Databricks SDKs do it), which experiment, and how fast to send.
//!
//! Env shortcut (the product's recipe): `MLFLOW_TRACKING_URI=databricks`
//! (or `databricks://PROFILE`) with `MLFLOW_EXPERIMENT_ID` or
//! `MLFLOW_EXPERIMENT_NAME` (a workspace path, `/Users/me@example.com/app`),
//! `DATABRICKS_HOST` and `DATABRICKS_TOKEN` or `DATABRICKS_CLIENT_ID` +
//! `DATABRICKS_CLIENT_SECRET` (or a profile in `~/.databrickscfg`).
//!
//! `[[sinks]]` with `kind = "databricks"`: `experiment_id` or
//! `experiment_name`, `profile`, `host`, `max_traces_per_second`,
//! `max_in_flight`. Secrets never go in the file: they come from the
//! environment or the profile.

use std::collections::HashMap;

use crate::databricks::WorkspaceConfig;
use crate::sinks::mlflow::config::ExperimentRef;

/// Trace creations per second a workspace allows by default: the low end
/// of the published 50–200 QPS (older docs: 60). The quota is per
/// workspace and shared with every other writer; excess waits in the spool
/// and a 429's `Retry-After` is honoured on top.
pub const DEFAULT_MAX_TRACES_PER_SECOND: f64 = 50.0;
/// Traces of one batch sent at once (three calls each).
pub const DEFAULT_MAX_IN_FLIGHT: usize = 8;

/// The `databricks` sink's settings.
#[derive(Clone, PartialEq)]
pub struct DatabricksConfig {
    /// Host and credentials (its `Debug` redacts the secrets).
    pub workspace: WorkspaceConfig,
    pub experiment: ExperimentRef,
    /// The pipeline's rate limit for this sink (traces per second).
    pub max_traces_per_second: f64,
    pub max_in_flight: usize,
}

impl std::fmt::Debug for DatabricksConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabricksConfig")
            .field("workspace", &self.workspace)
            .field("experiment", &self.experiment)
            .field("max_traces_per_second", &self.max_traces_per_second)
            .field("max_in_flight", &self.max_in_flight)
            .finish()
    }
}

/// The profile `MLFLOW_TRACKING_URI` names: `Ok(None)` when the URI is not
/// Databricks at all, `Ok(Some(None))` for `databricks`, `Ok(Some(Some(p)))`
/// for `databricks://p`.
pub fn tracking_uri_profile(
    env: &HashMap<String, String>,
) -> Result<Option<Option<String>>, String> {
    match get(env, "MLFLOW_TRACKING_URI") {
        Some(uri) if uri == "databricks" || uri.starts_with("databricks://") => {
            crate::databricks::profile_from_tracking_uri(uri).map(Some)
        }
        _ => Ok(None),
    }
}

fn get<'a>(env: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    env.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
}

/// The experiment from `MLFLOW_EXPERIMENT_NAME` (wins, as in the client)
/// or `MLFLOW_EXPERIMENT_ID`.
fn experiment_from_env(env: &HashMap<String, String>) -> Result<ExperimentRef, String> {
    if let Some(name) = get(env, "MLFLOW_EXPERIMENT_NAME") {
        return experiment_name(name, "MLFLOW_EXPERIMENT_NAME");
    }
    match get(env, "MLFLOW_EXPERIMENT_ID") {
        Some(id) => Ok(ExperimentRef::Id(id.to_string())),
        None => Err(
            "MLFLOW_TRACKING_URI=databricks needs MLFLOW_EXPERIMENT_ID or MLFLOW_EXPERIMENT_NAME \
             (a workspace path such as /Users/you@example.com/my-app)"
                .into(),
        ),
    }
}

/// A Databricks experiment name is an absolute workspace path.
pub fn experiment_name(name: &str, setting: &str) -> Result<ExperimentRef, String> {
    if !name.starts_with('/') {
        return Err(format!(
            "{setting}: a Databricks experiment name is a workspace path such as \
             /Users/you@example.com/{name}, not {name:?}"
        ));
    }
    Ok(ExperimentRef::Name(name.to_string()))
}

/// The workspace, resolved from `env` (with `host` overriding
/// `DATABRICKS_HOST`) and `profile`.
pub fn workspace(
    env: &HashMap<String, String>,
    profile: Option<&str>,
    host: Option<&str>,
) -> Result<WorkspaceConfig, Vec<String>> {
    let mut env = env.clone();
    if let Some(h) = host {
        env.insert("DATABRICKS_HOST".into(), h.to_string());
    }
    crate::databricks::resolve(&env, profile).map_err(|e| vec![e])
}

/// What every Databricks entry has besides its destination: the workspace
/// (`profile`, `host`, else the environment) and the delivery limits.
pub struct Common {
    pub workspace: Result<WorkspaceConfig, Vec<String>>,
    pub rate: f64,
    pub in_flight: usize,
}

impl Settings<'_> {
    /// Reads `profile`, `host`, `max_traces_per_second`, `max_in_flight`.
    pub fn common(&mut self, env: &HashMap<String, String>) -> Common {
        let profile = self.string("profile");
        let host = self.string("host");
        let name = self.name;
        let workspace = workspace(env, profile.as_deref(), host.as_deref()).map_err(|es| {
            es.into_iter()
                .map(|e| format!("sinks.{name}: {e}"))
                .collect::<Vec<_>>()
        });
        Common {
            workspace,
            rate: self.rate("max_traces_per_second", DEFAULT_MAX_TRACES_PER_SECOND),
            in_flight: self.count("max_in_flight", DEFAULT_MAX_IN_FLIGHT),
        }
    }
}

/// A destination and a workspace, or every error of both (after `errors`).
pub fn joined<D>(
    dest: Result<D, String>,
    workspace: Result<WorkspaceConfig, Vec<String>>,
    mut errors: Vec<String>,
) -> Result<(D, WorkspaceConfig), Vec<String>> {
    match (dest, workspace, errors.is_empty()) {
        (Ok(d), Ok(w), true) => Ok((d, w)),
        (d, w, _) => {
            errors.extend(d.err());
            errors.extend(w.err().into_iter().flatten());
            Err(errors)
        }
    }
}

impl DatabricksConfig {
    /// The env shortcut; `Ok(None)` when `MLFLOW_TRACKING_URI` is not
    /// Databricks, or when no experiment is named and
    /// `MLFLOW_TRACING_DESTINATION` names a Unity Catalog schema (UC only).
    pub fn from_env(env: &HashMap<String, String>) -> Result<Option<Self>, Vec<String>> {
        let profile = match tracking_uri_profile(env) {
            Ok(Some(p)) => p,
            Ok(None) => return Ok(None),
            Err(e) => return Err(vec![format!("MLFLOW_TRACKING_URI: {e}")]),
        };
        let no_experiment = get(env, "MLFLOW_EXPERIMENT_ID").is_none()
            && get(env, "MLFLOW_EXPERIMENT_NAME").is_none();
        let uc_destination =
            get(env, "MLFLOW_TRACING_DESTINATION").is_some_and(|d| d.contains('.'));
        if no_experiment && uc_destination {
            // Traces go to Unity Catalog only, as in the client: the
            // `databricks_table` sink's business.
            return Ok(None);
        }
        let ws = workspace(env, profile.as_deref(), None);
        let (experiment, workspace) = joined(experiment_from_env(env), ws, vec![])?;
        Ok(Some(DatabricksConfig {
            workspace,
            experiment,
            max_traces_per_second: DEFAULT_MAX_TRACES_PER_SECOND,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }))
    }

    /// One `[[sinks]]` entry of `kind = "databricks"`.
    pub fn from_table(
        name: &str,
        t: &toml::Table,
        env: &HashMap<String, String>,
    ) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let mut s = Settings::new(name, t, &mut errors);
        let id = s.string("experiment_id");
        let exp_name = s.string("experiment_name");
        let common = s.common(env);
        s.finish(&["kind", "name"]);
        let experiment = match (id, exp_name) {
            (Some(_), Some(_)) => Err(format!(
                "sinks.{name}: set experiment_id or experiment_name, not both"
            )),
            (Some(id), None) => Ok(ExperimentRef::Id(id)),
            (None, Some(n)) => experiment_name(&n, &format!("sinks.{name}.experiment_name")),
            (None, None) => experiment_from_env(env).map_err(|e| format!("sinks.{name}: {e}")),
        };
        let (experiment, workspace) = joined(experiment, common.workspace, errors)?;
        Ok(DatabricksConfig {
            workspace,
            experiment,
            max_traces_per_second: common.rate,
            max_in_flight: common.in_flight,
        })
    }
}

/// Typed reads of one `[[sinks]]` table, collecting every error (named
/// `sinks.<name>.<key>`, never quoting a value that could be a secret).
pub struct Settings<'a> {
    name: &'a str,
    t: &'a toml::Table,
    used: Vec<&'static str>,
    errors: &'a mut Vec<String>,
}

/// Keys that would hold a secret: refused with a pointer to where secrets go.
const SECRET_KEYS: [&str; 5] = ["token", "client_secret", "password", "secret", "pat"];

impl<'a> Settings<'a> {
    pub fn new(name: &'a str, t: &'a toml::Table, errors: &'a mut Vec<String>) -> Self {
        Settings {
            name,
            t,
            used: Vec::new(),
            errors,
        }
    }

    pub fn string(&mut self, key: &'static str) -> Option<String> {
        self.used.push(key);
        match self.t.get(key)? {
            toml::Value::String(s) if !s.trim().is_empty() => Some(s.trim().to_string()),
            _ => {
                self.errors.push(format!(
                    "sinks.{}.{key}: expected a non-empty string",
                    self.name
                ));
                None
            }
        }
    }

    pub fn rate(&mut self, key: &'static str, default: f64) -> f64 {
        self.used.push(key);
        let v = match self.t.get(key) {
            None => return default,
            Some(toml::Value::Integer(i)) => *i as f64,
            Some(toml::Value::Float(f)) => *f,
            Some(_) => f64::NAN,
        };
        if v.is_finite() && v > 0.0 && v <= 1e6 {
            v
        } else {
            self.errors.push(format!(
                "sinks.{}.{key}: expected a number of traces per second above 0",
                self.name
            ));
            default
        }
    }

    pub fn count(&mut self, key: &'static str, default: usize) -> usize {
        self.used.push(key);
        match self.t.get(key) {
            None => default,
            Some(toml::Value::Integer(i)) if (1..=256).contains(i) => *i as usize,
            Some(_) => {
                self.errors.push(format!(
                    "sinks.{}.{key}: expected an integer from 1 to 256",
                    self.name
                ));
                default
            }
        }
    }

    /// Reports keys nobody read (`also` are keys the caller handles).
    pub fn finish(self, also: &[&str]) {
        for key in self.t.keys() {
            if self.used.contains(&key.as_str()) || also.contains(&key.as_str()) {
                continue;
            }
            if SECRET_KEYS.contains(&key.as_str()) {
                self.errors.push(format!(
                    "sinks.{}.{key}: secrets are never written in the config file; set \
                     DATABRICKS_TOKEN, or DATABRICKS_CLIENT_ID + DATABRICKS_CLIENT_SECRET, \
                     or name a profile of ~/.databrickscfg",
                    self.name
                ));
            } else {
                self.errors
                    .push(format!("sinks.{}.{key}: unknown key", self.name));
            }
        }
    }
}

#[cfg(test)]
mod tests;

/// The shortcut for the registry: [`DatabricksConfig::from_env`], its errors reported.
pub fn shortcut(l: &mut crate::config::layers::Layers<'_>) -> Option<DatabricksConfig> {
    crate::config::layers::env_shortcut(l, DatabricksConfig::from_env)
}

/// A `[[sinks]]` entry of this kind ([`DatabricksConfig::from_table`]).
pub fn from_table(
    name: &str,
    t: &toml::Table,
    env: &HashMap<String, String>,
) -> Result<DatabricksConfig, Vec<String>> {
    DatabricksConfig::from_table(name, t, env)
}
