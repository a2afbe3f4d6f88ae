//! The list of destinations: the one place that names every sink kind. A new
//! destination is a folder in `src/sinks/` with `KIND`, `config::shortcut`,
//! `config::from_table` and `build`, plus one line in [`kinds!`] below.
//!
//! Sinks come from `[[sinks]]` entries of the config file (each with a
//! `kind`, an optional `name` and delivery keys) and from the shortcuts —
//! the environment variables each kind's own clients use
//! (`MLFLOW_TRACKING_URI`, `OTEL_EXPORTER_OTLP_ENDPOINT`, ...). With none
//! configured, traces go to files (the `file` kind's shortcut, the embedded
//! default). `LLMTAP_SINKS=mlflow,file` names exactly which shortcuts to
//! use, e.g. to add files beside MLflow with environment variables alone.

use std::sync::Arc;

use super::{databricks, databricks_table, file, mlflow, otlp, Context, Sink};
use crate::config::layers::{Env, Layers};
use crate::config::limits::rate_max;

macro_rules! kinds {
    ($( $variant:ident => $module:ident :: $cfg:ident ),* $(,)?) => {
        /// One destination's settings, by kind.
        #[derive(Debug, Clone, PartialEq)]
        pub enum SinkSpec {
            $( $variant($module::config::$cfg), )*
        }

        impl SinkSpec {
            /// The kind's name, as `kind = "..."` spells it.
            pub fn kind(&self) -> &'static str {
                match self {
                    $( SinkSpec::$variant(_) => $module::KIND, )*
                }
            }

            fn build(&self, name: &str, ctx: &Context) -> Result<Arc<dyn Sink>, String> {
                match self {
                    $( SinkSpec::$variant(c) => $module::build(name, c.clone(), ctx), )*
                }
            }
        }

        /// Every kind, in the order their shortcuts are listed.
        pub const KINDS: &[&str] = &[$( $module::KIND ),*];

        fn shortcut(kind: &str, l: &mut Layers<'_>) -> Option<SinkSpec> {
            match kind {
                $( $module::KIND => $module::config::shortcut(l).map(SinkSpec::$variant), )*
                _ => None,
            }
        }

        fn from_table(
            kind: &str,
            name: &str,
            t: &toml::Table,
            env: &Env,
        ) -> Option<Result<SinkSpec, Vec<String>>> {
            match kind {
                $( $module::KIND => Some($module::config::from_table(name, t, env).map(SinkSpec::$variant)), )*
                _ => None,
            }
        }
    };
}

kinds! {
    Mlflow => mlflow::MlflowConfig,
    Databricks => databricks::DatabricksConfig,
    DatabricksTable => databricks_table::DatabricksTableConfig,
    Otlp => otlp::OtlpConfig,
    File => file::FileSinkConfig,
}

/// The kind used when nothing else is configured.
const FALLBACK: &str = file::KIND;

/// Keys every `[[sinks]]` entry may have, whatever its kind.
const COMMON_KEYS: &[&str] = &["kind", "name", "max_traces_per_second"];

/// One configured destination.
#[derive(Debug, Clone, PartialEq)]
pub struct SinkEntry {
    /// Unique; labels its metrics, names its spool and dead-letter directories.
    pub name: String,
    pub spec: SinkSpec,
    /// This sink's own rate limit (`[[sinks]] max_traces_per_second`); `None`:
    /// `export.max_traces_per_second`, else the kind's default.
    pub max_traces_per_second: Option<f64>,
}

/// The sinks a configuration lists: `[[sinks]]` entries, then the shortcuts
/// (all that are set, or those `LLMTAP_SINKS` names), else files. Problems
/// go to `l.errors`.
pub fn resolve(l: &mut Layers<'_>) -> Vec<SinkEntry> {
    let mut out = tables(l);
    let only = l
        .env
        .get("LLMTAP_SINKS")
        .filter(|v| !v.trim().is_empty())
        .map(|v| {
            v.split(',')
                .map(|k| k.trim().to_string())
                .collect::<Vec<_>>()
        });
    if let Some(only) = &only {
        for k in only.iter().filter(|k| !KINDS.contains(&k.as_str())) {
            l.errors.push(format!(
                "LLMTAP_SINKS: unknown sink kind {k:?} (known: {})",
                KINDS.join(", ")
            ));
        }
    }
    for kind in KINDS {
        let wanted = match &only {
            Some(only) => only.iter().any(|k| k == kind),
            None => *kind != FALLBACK,
        };
        if wanted {
            if let Some(spec) = shortcut(kind, l) {
                out.push(entry(kind, spec, None));
            }
        }
    }
    if out.is_empty() && only.is_none() {
        if let Some(spec) = shortcut(FALLBACK, l) {
            out.push(entry(FALLBACK, spec, None));
        }
    }
    check_names(&out, &mut l.errors);
    out
}

fn entry(name: &str, spec: SinkSpec, rate: Option<f64>) -> SinkEntry {
    SinkEntry {
        name: name.to_string(),
        spec,
        max_traces_per_second: rate,
    }
}

/// The `[[sinks]]` array of the config file.
fn tables(l: &mut Layers<'_>) -> Vec<SinkEntry> {
    let Some(v) = l.file.get("sinks").cloned() else {
        return vec![];
    };
    let Some(list) = v.as_array() else {
        l.errors
            .push("sinks: expected an array of tables ([[sinks]])".into());
        return vec![];
    };
    let mut out = vec![];
    for (i, item) in list.iter().enumerate() {
        let Some(t) = item.as_table() else {
            l.errors.push(format!("sinks[{i}]: expected a table"));
            continue;
        };
        if let Some(e) = table_entry(i, t, l) {
            out.push(e);
        }
    }
    out
}

fn table_entry(i: usize, t: &toml::Table, l: &mut Layers<'_>) -> Option<SinkEntry> {
    let Some(kind) = t.get("kind").and_then(|k| k.as_str()) else {
        l.errors.push(format!(
            "sinks[{i}].kind: required, one of {}",
            KINDS.join(", ")
        ));
        return None;
    };
    let name = match t.get("name") {
        None => kind.to_string(),
        Some(toml::Value::String(n)) => n.clone(),
        Some(_) => {
            l.errors.push(format!("sinks[{i}].name: expected a string"));
            return None;
        }
    };
    let rate = match t.get("max_traces_per_second") {
        None => None,
        Some(v) => match rate_max(1e6)(&value_text(v)) {
            Ok(r) => r,
            Err(e) => {
                l.errors
                    .push(format!("sinks.{name}.max_traces_per_second: {e}"));
                None
            }
        },
    };
    let mut own = t.clone();
    for k in COMMON_KEYS {
        own.remove(*k);
    }
    match from_table(kind, &name, &own, l.env) {
        None => {
            l.errors.push(format!(
                "sinks[{i}].kind: unknown sink kind {kind:?} (known: {})",
                KINDS.join(", ")
            ));
            None
        }
        Some(Err(errors)) => {
            l.errors.extend(errors);
            None
        }
        Some(Ok(spec)) => Some(entry(&name, spec, rate)),
    }
}

fn value_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// Names must be unique and safe as a directory name and a metric label.
fn check_names(entries: &[SinkEntry], errors: &mut Vec<String>) {
    for (i, e) in entries.iter().enumerate() {
        let ok = !e.name.is_empty()
            && e.name.len() <= 64
            && e.name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_');
        if !ok {
            errors.push(format!(
                "sinks: name {:?} must be 1-64 letters, digits, '-' or '_'",
                e.name
            ));
        }
        if entries[..i].iter().any(|o| o.name == e.name) {
            errors.push(format!(
                "sinks: two sinks are named {:?}; give each a unique name",
                e.name
            ));
        }
    }
}

/// Builds the configured sinks.
pub fn build(entries: &[SinkEntry], ctx: &Context) -> Result<Vec<Arc<dyn Sink>>, String> {
    entries.iter().map(|e| e.spec.build(&e.name, ctx)).collect()
}
