//! Configuration of the `databricks_table` sink: the Unity Catalog
//! location traces land in, the Delta table of their spans, and the
//! workspace (same resolution and credentials as the `databricks` sink).
//!
//! Env shortcut: `MLFLOW_TRACING_DESTINATION=<catalog>.<schema>` — MLflow's
//! own variable for a Unity Catalog schema destination — with the
//! workspace variables of the `databricks` sink (`DATABRICKS_HOST`, a token
//! or a service principal, or `MLFLOW_TRACKING_URI=databricks://PROFILE`).
//! The spans go to `<catalog>.<schema>.mlflow_experiment_trace_otel_spans`
//! (what MLflow uses for a schema), or to
//! `LLMTAP_DATABRICKS_UC_SPANS_TABLE` (`catalog.schema.table`).
//!
//! `[[sinks]]` with `kind = "databricks_table"`: `destination`
//! (`catalog.schema`, or `catalog.schema.table_prefix`), `spans_table`
//! (`catalog.schema.table`; required with a table prefix, whose tables the
//! workspace names), `profile`, `host`, `max_traces_per_second`,
//! `max_in_flight`.

use std::collections::HashMap;

use crate::databricks::WorkspaceConfig;
use crate::sinks::databricks::config::{
    joined, tracking_uri_profile, workspace, Settings, DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_MAX_TRACES_PER_SECOND,
};
use crate::sinks::databricks::trace_info::{Location, UC_SCHEMA_SPANS_TABLE};

/// The `databricks_table` sink's settings.
#[derive(Clone, PartialEq)]
pub struct DatabricksTableConfig {
    pub workspace: WorkspaceConfig,
    pub location: Location,
    /// `catalog.schema.table`: the `X-Databricks-UC-Table-Name` header.
    pub spans_table: String,
    pub max_traces_per_second: f64,
    pub max_in_flight: usize,
}

impl std::fmt::Debug for DatabricksTableConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabricksTableConfig")
            .field("workspace", &self.workspace)
            .field("location", &self.location)
            .field("spans_table", &self.spans_table)
            .field("max_traces_per_second", &self.max_traces_per_second)
            .field("max_in_flight", &self.max_in_flight)
            .finish()
    }
}

/// A Unity Catalog name part: non-empty, no dot, slash or whitespace.
fn part_ok(p: &str) -> bool {
    !p.is_empty() && !p.contains(['.', '/']) && !p.chars().any(char::is_whitespace)
}

/// `catalog.schema` or `catalog.schema.prefix`, and the spans table.
pub fn location(
    destination: &str,
    spans_table: Option<&str>,
    setting: &str,
) -> Result<(Location, String), String> {
    let parts: Vec<&str> = destination.split('.').collect();
    if !parts.iter().all(|p| part_ok(p)) {
        return Err(format!(
            "{setting}: expected catalog.schema or catalog.schema.table_prefix, got {destination:?}"
        ));
    }
    if let Some(t) = spans_table {
        if t.split('.').count() != 3 || !t.split('.').all(part_ok) {
            return Err(format!(
                "{setting}: the spans table must be catalog.schema.table, got {t:?}"
            ));
        }
    }
    match parts.as_slice() {
        [catalog, schema] => Ok((
            Location::UcSchema {
                catalog: catalog.to_string(),
                schema: schema.to_string(),
            },
            spans_table.map_or_else(
                || format!("{catalog}.{schema}.{UC_SCHEMA_SPANS_TABLE}"),
                str::to_string,
            ),
        )),
        [catalog, schema, prefix] => {
            let Some(table) = spans_table else {
                return Err(format!(
                    "{setting}: a table-prefix destination needs its spans table \
                     (catalog.schema.table, as the workspace named it)"
                ));
            };
            Ok((
                Location::UcTablePrefix {
                    catalog: catalog.to_string(),
                    schema: schema.to_string(),
                    prefix: prefix.to_string(),
                    spans_table: table.to_string(),
                },
                table.to_string(),
            ))
        }
        _ => Err(format!(
            "{setting}: expected catalog.schema or catalog.schema.table_prefix, got {destination:?}"
        )),
    }
}

fn get<'a>(env: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    env.get(key).map(|v| v.trim()).filter(|v| !v.is_empty())
}

impl DatabricksTableConfig {
    /// The env shortcut; `Ok(None)` unless `MLFLOW_TRACING_DESTINATION`
    /// names a Unity Catalog schema (`catalog.schema`; a bare experiment id
    /// there is the `databricks` sink's business).
    pub fn from_env(env: &HashMap<String, String>) -> Result<Option<Self>, Vec<String>> {
        let Some(dest) = get(env, "MLFLOW_TRACING_DESTINATION").filter(|d| d.contains('.')) else {
            return Ok(None);
        };
        let spans = get(env, "LLMTAP_DATABRICKS_UC_SPANS_TABLE");
        let loc = match dest.split('.').count() {
            2 => location(dest, spans, "MLFLOW_TRACING_DESTINATION"),
            _ => Err(format!(
                "MLFLOW_TRACING_DESTINATION: expected <catalog>.<schema>, got {dest:?} \
                 (a table prefix is configured in a [[sinks]] entry)"
            )),
        };
        let ws = tracking_uri_profile(env)
            .map_err(|e| vec![format!("MLFLOW_TRACKING_URI: {e}")])
            .and_then(|p| workspace(env, p.flatten().as_deref(), None));
        let ((location, spans_table), workspace) = joined(loc, ws, vec![])?;
        Ok(Some(DatabricksTableConfig {
            workspace,
            location,
            spans_table,
            max_traces_per_second: DEFAULT_MAX_TRACES_PER_SECOND,
            max_in_flight: DEFAULT_MAX_IN_FLIGHT,
        }))
    }

    /// One `[[sinks]]` entry of `kind = "databricks_table"`.
    pub fn from_table(
        name: &str,
        t: &toml::Table,
        env: &HashMap<String, String>,
    ) -> Result<Self, Vec<String>> {
        let mut errors = Vec::new();
        let mut s = Settings::new(name, t, &mut errors);
        let dest = s.string("destination");
        let spans = s.string("spans_table");
        let common = s.common(env);
        s.finish(&["kind", "name"]);
        let loc = match dest {
            Some(d) => location(&d, spans.as_deref(), &format!("sinks.{name}.destination")),
            None => Err(format!(
                "sinks.{name}.destination: required (catalog.schema or catalog.schema.table_prefix)"
            )),
        };
        let ((location, spans_table), workspace) = joined(loc, common.workspace, errors)?;
        Ok(DatabricksTableConfig {
            workspace,
            location,
            spans_table,
            max_traces_per_second: common.rate,
            max_in_flight: common.in_flight,
        })
    }
}

#[cfg(test)]
mod tests;

/// The shortcut for the registry: [`DatabricksTableConfig::from_env`], its errors reported.
pub fn shortcut(l: &mut crate::config::layers::Layers<'_>) -> Option<DatabricksTableConfig> {
    crate::config::layers::env_shortcut(l, DatabricksTableConfig::from_env)
}

/// A `[[sinks]]` entry of this kind ([`DatabricksTableConfig::from_table`]).
pub fn from_table(
    name: &str,
    t: &toml::Table,
    env: &HashMap<String, String>,
) -> Result<DatabricksTableConfig, Vec<String>> {
    DatabricksTableConfig::from_table(name, t, env)
}
