//! Where llmtap runs, on every trace: `[environment]` (`deployment`,
//! `version`, `region`) and everything in `OTEL_RESOURCE_ATTRIBUTES`, as
//! OpenTelemetry resource attributes (`deployment.environment.name`,
//! `service.version`, `cloud.region`, ...). OTLP backends keep them on the
//! resource, the standard place; MLflow turns every resource attribute into
//! a trace tag (mlflow-wire.md §3). Also the `[context]` switches: joining
//! the agent's trace (`join_client_trace`) and whether MLflow and
//! Databricks traces carry `service.name` (`mlflow_service_name_tag`; OTLP
//! backends always get it, they require it).
//!
//! Pure: text in, attributes out. `OTEL_RESOURCE_ATTRIBUTES` is read as the
//! OpenTelemetry spec says (W3C-baggage-like `k=v,k2=v2`, values
//! percent-decoded) and bounded ([`MAX_RESOURCE_TEXT`], [`MAX_ATTRIBUTES`]);
//! a malformed or oversized value is a configuration error naming it.

use crate::config::layers::{parse_bool, Layers};
use crate::record::AttrValue;

/// Longest `OTEL_RESOURCE_ATTRIBUTES` accepted, in bytes.
pub const MAX_RESOURCE_TEXT: usize = 8192;
/// Most entries accepted in `OTEL_RESOURCE_ATTRIBUTES`.
pub const MAX_ATTRIBUTES: usize = 64;

/// The `[environment]` and `[context]` settings.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContextSettings {
    /// Resource attributes on every export besides `service.name`, in order,
    /// keys unique: `OTEL_RESOURCE_ATTRIBUTES` first, then llmtap's own
    /// settings, which win on a shared key.
    pub resource: Vec<(String, String)>,
    /// `service.name` named by `OTEL_RESOURCE_ATTRIBUTES`, if it did
    /// (`OTEL_SERVICE_NAME` and `server.service_name` win over it).
    pub resource_service_name: Option<String>,
    /// Put llmtap's span in the agent's trace when the call carries a valid
    /// `traceparent`.
    pub join_client_trace: bool,
    /// Send `service.name` to MLflow and Databricks sinks too.
    pub mlflow_service_name_tag: bool,
}

/// Table keys this module reads, for the unknown-key check.
pub const ENVIRONMENT_KEYS: &[&str] = &["deployment", "version", "region"];
pub const CONTEXT_KEYS: &[&str] = &["join_client_trace", "mlflow_service_name_tag"];

/// Reads the settings; problems go to `l.errors`.
pub fn resolve(l: &mut Layers<'_>) -> ContextSettings {
    let mut resource = match l.env.get("OTEL_RESOURCE_ATTRIBUTES") {
        Some(text) => parse_resource_attributes(text).unwrap_or_else(|e| {
            l.errors.push(format!("OTEL_RESOURCE_ATTRIBUTES: {e}"));
            Vec::new()
        }),
        None => Vec::new(),
    };
    let service = resource
        .iter()
        .position(|(k, _)| k == "service.name")
        .map(|i| resource.remove(i).1);
    for (key, env, attr) in [
        (
            "deployment",
            "LLMTAP_DEPLOYMENT",
            "deployment.environment.name",
        ),
        ("version", "LLMTAP_SERVICE_VERSION", "service.version"),
        ("region", "LLMTAP_REGION", "cloud.region"),
    ] {
        if let Some(v) = l.string(None, &[env], ("environment", key)) {
            set(&mut resource, attr, v);
        }
    }
    ContextSettings {
        resource,
        resource_service_name: service,
        join_client_trace: l.parsed(
            Some("LLMTAP_JOIN_TRACEPARENT"),
            ("context", "join_client_trace"),
            false,
            parse_bool,
        ),
        mlflow_service_name_tag: l.parsed(
            Some("LLMTAP_MLFLOW_SERVICE_NAME_TAG"),
            ("context", "mlflow_service_name_tag"),
            false,
            parse_bool,
        ),
    }
}

fn set(list: &mut Vec<(String, String)>, key: &str, value: String) {
    match list.iter_mut().find(|(k, _)| k == key) {
        Some(slot) => slot.1 = value,
        None => list.push((key.to_string(), value)),
    }
}

/// Parses `OTEL_RESOURCE_ATTRIBUTES`: `key=value` pairs separated by
/// commas, surrounding spaces trimmed, values percent-decoded (UTF-8);
/// empty entries skipped; a later duplicate key wins.
pub fn parse_resource_attributes(text: &str) -> Result<Vec<(String, String)>, String> {
    if text.len() > MAX_RESOURCE_TEXT {
        return Err(format!(
            "{} bytes; at most {MAX_RESOURCE_TEXT} are accepted",
            text.len()
        ));
    }
    let mut out = Vec::new();
    for entry in text.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((k, v)) = entry.split_once('=') else {
            return Err(format!("entry {:?} is not key=value", cut(entry)));
        };
        let key = k.trim();
        if key.is_empty() || !key.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(format!("bad key {:?}", cut(key)));
        }
        let value = percent_encoding::percent_decode_str(v.trim())
            .decode_utf8()
            .map_err(|_| format!("the value of {key:?} is not UTF-8 once decoded"))?;
        set(&mut out, key, value.into_owned());
        if out.len() > MAX_ATTRIBUTES {
            return Err(format!("more than {MAX_ATTRIBUTES} attributes"));
        }
    }
    Ok(out)
}

fn cut(s: &str) -> String {
    s.chars().take(40).collect()
}

/// The resource attributes of an export to a sink of `kind`:
/// `service.name` (left out for MLflow and Databricks unless asked for),
/// then the environment.
pub fn resource(
    service_name: &str,
    settings: &ContextSettings,
    kind: &str,
) -> Vec<(String, AttrValue)> {
    let mlflow_like = matches!(kind, "mlflow" | "databricks" | "databricks_table");
    let mut out = Vec::with_capacity(settings.resource.len() + 1);
    if !mlflow_like || settings.mlflow_service_name_tag {
        out.push(("service.name".to_string(), AttrValue::from(service_name)));
    }
    for (k, v) in &settings.resource {
        out.push((k.clone(), AttrValue::from(v.as_str())));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(env: &[(&str, &str)], toml: &str) -> (ContextSettings, Vec<String>) {
        crate::config::layers::resolve_in(env, toml, resolve)
    }

    #[test]
    fn otel_resource_attributes_are_decoded() {
        let got =
            parse_resource_attributes(" team = search , note=a%20b%2Cc,,k=v1,k=v2,empty=").unwrap();
        assert_eq!(
            got,
            [
                ("team".into(), "search".into()),
                ("note".into(), "a b,c".into()),
                ("k".into(), "v2".into()),
                ("empty".into(), String::new()),
            ]
        );
    }

    #[test]
    fn bad_otel_resource_attributes_are_refused() {
        for bad in ["novalue", "=v", "sp ace=v", "k=%FF%FE"] {
            assert!(parse_resource_attributes(bad).is_err(), "{bad:?}");
        }
        let long = format!("k={}", "v".repeat(MAX_RESOURCE_TEXT));
        assert!(parse_resource_attributes(&long)
            .unwrap_err()
            .contains("bytes"));
        let many: Vec<String> = (0..=MAX_ATTRIBUTES).map(|i| format!("k{i}=v")).collect();
        assert!(parse_resource_attributes(&many.join(","))
            .unwrap_err()
            .contains("more than"));
    }

    #[test]
    fn settings_from_file_and_env() {
        let (s, errors) = settings(
            &[
                (
                    "OTEL_RESOURCE_ATTRIBUTES",
                    "service.name=agent,cloud.region=x,team=a",
                ),
                ("LLMTAP_REGION", "eu-west-1"),
                ("LLMTAP_JOIN_TRACEPARENT", "true"),
            ],
            "[environment]\ndeployment = \"prod\"\nversion = \"1.2.3\"\nregion = \"ignored\"\n",
        );
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(s.resource_service_name.as_deref(), Some("agent"));
        assert_eq!(
            s.resource,
            [
                ("cloud.region".into(), "eu-west-1".into()),
                ("team".into(), "a".into()),
                ("deployment.environment.name".into(), "prod".into()),
                ("service.version".into(), "1.2.3".into()),
            ]
        );
        assert!(s.join_client_trace);
        assert!(!s.mlflow_service_name_tag);
        let (_, errors) = settings(
            &[("OTEL_RESOURCE_ATTRIBUTES", "oops")],
            "[context]\nmlflow_service_name_tag = \"maybe\"\n",
        );
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("OTEL_RESOURCE_ATTRIBUTES"));
        assert!(errors[1].contains("context.mlflow_service_name_tag"));
    }

    #[test]
    fn service_name_only_where_it_belongs() {
        let mut s = ContextSettings {
            resource: vec![("team".into(), "a".into())],
            ..ContextSettings::default()
        };
        let keys = |kind: &str, s: &ContextSettings| -> Vec<String> {
            resource("svc", s, kind)
                .into_iter()
                .map(|(k, _)| k)
                .collect()
        };
        assert_eq!(keys("mlflow", &s), ["team"]);
        assert_eq!(keys("databricks", &s), ["team"]);
        assert_eq!(keys("otlp", &s), ["service.name", "team"]);
        s.mlflow_service_name_tag = true;
        assert_eq!(keys("mlflow", &s), ["service.name", "team"]);
    }
}
