//! `[privacy]`: what is captured, redacted and sampled
//! ([`crate::privacy`]).
//!
//! ```toml
//! [privacy]
//! capture = "full"            # or "metadata", "none"; LLMTAP_CAPTURE
//! sample = 1.0                # share of calls traced; LLMTAP_SAMPLE
//! redact_builtin = ["email", "card", "phone", "api_key"]  # LLMTAP_REDACT_BUILTIN=email,card
//!
//! [[privacy.redact]]          # LLMTAP_REDACT='[{"pattern": "...", "replacement": "..."}]'
//! name = "order ids"          # optional, names the rule in errors
//! pattern = "ORD-[0-9]{6}"
//! replacement = "ORD-******"  # default "[REDACTED]"; $1, ${name} expand
//!
//! [[routes]]
//! prefix = "/internal"
//! upstream = "https://..."
//! capture = "metadata"        # this route's mode
//! ```

use std::sync::Arc;

use serde::Deserialize;

use super::layers::Layers;
use crate::privacy::{sample, CaptureMode, Redactor, RuleSpec, Settings};

/// The keys of `[privacy]`.
pub(super) const KEYS: &[&str] = &["capture", "sample", "redact_builtin", "redact"];

/// What a rule's replacement is when it names none.
pub const DEFAULT_REPLACEMENT: &str = "[REDACTED]";

/// One `[[privacy.redact]]` entry (or one element of `LLMTAP_REDACT`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRule {
    pattern: String,
    replacement: Option<String>,
    name: Option<String>,
}

/// Reads the privacy settings, reporting every bad field.
pub(super) fn resolve(l: &mut Layers<'_>) -> Settings {
    let capture = l.parsed(
        Some("LLMTAP_CAPTURE"),
        ("privacy", "capture"),
        CaptureMode::Full,
        CaptureMode::parse,
    );
    let sample = l.parsed(
        Some("LLMTAP_SAMPLE"),
        ("privacy", "sample"),
        1.0,
        sample::parse_ratio,
    );
    let route_capture = route_modes(&l.file, &mut l.errors);
    let (builtin_at, builtin) = builtin(l);
    let (rules_at, specs) = rules(l);
    let redactor = match Redactor::new(&builtin, &specs) {
        Ok(r) if r.is_empty() => None,
        Ok(r) => Some(Arc::new(r)),
        Err(errors) => {
            for e in errors {
                // Rule errors name their rule; detector errors the setting.
                match e.starts_with(&rules_at) {
                    true => l.errors.push(e),
                    false => l.errors.push(format!("{builtin_at}: {e}")),
                }
            }
            None
        }
    };
    Settings {
        capture,
        route_capture,
        sample,
        redactor,
    }
}

/// Each `[[routes]]` entry's `capture`, in order.
fn route_modes(file: &toml::Table, errors: &mut Vec<String>) -> Vec<Option<CaptureMode>> {
    let Some(routes) = file.get("routes").and_then(|r| r.as_array()) else {
        return Vec::new();
    };
    let mode = |(i, r): (usize, &toml::Value)| {
        let v = r.as_table()?.get("capture")?;
        let parsed = match v.as_str() {
            Some(s) => CaptureMode::parse(s),
            None => Err(format!("expected a string, got {}", v.type_str())),
        };
        parsed
            .map_err(|e| errors.push(format!("routes[{i}].capture: {e}")))
            .ok()
    };
    routes.iter().enumerate().map(mode).collect()
}

/// The built-in detectors asked for, and where they were named.
fn builtin(l: &mut Layers<'_>) -> (String, Vec<String>) {
    const ENV: &str = "LLMTAP_REDACT_BUILTIN";
    let list = |s: &str| -> Vec<String> {
        s.split(',')
            .map(str::trim)
            .filter(|n| !n.is_empty())
            .map(str::to_string)
            .collect()
    };
    if let Some(v) = l.env.get(ENV).filter(|v| !v.is_empty()) {
        return (ENV.into(), list(v));
    }
    let at = "privacy.redact_builtin".to_string();
    let names = match l.file_value("privacy", "redact_builtin") {
        None => Vec::new(),
        Some(toml::Value::String(s)) => list(s),
        Some(toml::Value::Array(items)) => {
            let names: Option<Vec<String>> = items
                .iter()
                .map(|i| i.as_str().map(str::to_string))
                .collect();
            names.unwrap_or_else(|| {
                l.errors.push(format!("{at}: expected a list of names"));
                Vec::new()
            })
        }
        Some(other) => {
            let e = format!("{at}: expected a list of names, got {}", other.type_str());
            l.errors.push(e);
            Vec::new()
        }
    };
    (at, names)
}

/// The configured rules, each named for its errors, and the prefix of
/// those names.
fn rules(l: &mut Layers<'_>) -> (String, Vec<RuleSpec>) {
    const ENV: &str = "LLMTAP_REDACT";
    let (at, raw): (String, Vec<Result<RawRule, String>>) =
        match l.env.get(ENV).filter(|v| !v.is_empty()) {
            Some(v) => match serde_json::from_str::<Vec<serde_json::Value>>(v) {
                Ok(items) => (
                    ENV.into(),
                    items
                        .into_iter()
                        .map(|i| serde_json::from_value(i).map_err(|e| e.to_string()))
                        .collect(),
                ),
                Err(e) => {
                    l.errors.push(format!(
                    "{ENV}: expected a JSON array of {{\"pattern\", \"replacement\"}} objects: {e}"
                ));
                    (ENV.into(), Vec::new())
                }
            },
            None => ("privacy.redact".into(), file_rules(l)),
        };
    let mut specs = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        match r {
            Ok(r) => specs.push(RuleSpec {
                name: match &r.name {
                    Some(n) => format!("{at}[{i}] ({n:?})"),
                    None => format!("{at}[{i}]"),
                },
                pattern: r.pattern,
                replacement: r.replacement.unwrap_or_else(|| DEFAULT_REPLACEMENT.into()),
            }),
            Err(e) => l.errors.push(format!("{at}[{i}]: {e}")),
        }
    }
    (at, specs)
}

/// `[[privacy.redact]]` entries.
fn file_rules(l: &mut Layers<'_>) -> Vec<Result<RawRule, String>> {
    match l.file_value("privacy", "redact") {
        None => Vec::new(),
        Some(toml::Value::Array(items)) => items
            .iter()
            .map(|i| i.clone().try_into::<RawRule>().map_err(|e| e.to_string()))
            .collect(),
        Some(other) => {
            let e = format!(
                "privacy.redact: expected an array of tables ([[privacy.redact]]), got {}",
                other.type_str()
            );
            l.errors.push(e);
            Vec::new()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(env: &[(&str, &str)], file: &str) -> Result<Settings, Vec<String>> {
        let (s, errors) = crate::config::layers::resolve_in(env, file, resolve);
        match errors.is_empty() {
            true => Ok(s),
            false => Err(errors),
        }
    }

    #[test]
    fn defaults_capture_everything_unredacted() {
        let s = settings(&[], "").unwrap();
        assert_eq!(s, Settings::default());
    }

    #[test]
    fn the_file_sets_mode_sample_rules_and_route_modes() {
        let s = settings(
            &[],
            r#"
            [privacy]
            capture = "metadata"
            sample = 0.25
            redact_builtin = ["email", "card"]
            [[privacy.redact]]
            name = "order ids"
            pattern = "ORD-(\\d+)"
            replacement = "ORD-#"
            [[routes]]
            prefix = "/a"
            upstream = "http://a"
            [[routes]]
            prefix = "/b"
            upstream = "http://b"
            capture = "none"
            "#,
        )
        .unwrap();
        assert_eq!(s.capture, CaptureMode::Metadata);
        assert_eq!(s.sample, 0.25);
        assert_eq!(s.route_capture, vec![None, Some(CaptureMode::None)]);
        let r = s.redactor.unwrap();
        assert_eq!(
            r.redact_str("ORD-123 by a@b.io").unwrap(),
            "ORD-# by [REDACTED:email]"
        );
    }

    #[test]
    fn the_environment_overrides_the_file() {
        let s = settings(
            &[
                ("LLMTAP_CAPTURE", "none"),
                ("LLMTAP_SAMPLE", "0"),
                ("LLMTAP_REDACT_BUILTIN", "phone, api_key"),
                ("LLMTAP_REDACT", r#"[{"pattern": "secret-\\w+"}]"#),
            ],
            "[privacy]\ncapture = \"full\"\nredact_builtin = [\"email\"]\n",
        )
        .unwrap();
        assert_eq!(s.capture, CaptureMode::None);
        assert_eq!(s.sample, 0.0);
        let r = s.redactor.unwrap();
        assert_eq!(
            r.redact_str("a@b.io secret-x +1 415 555 2671").unwrap(),
            "a@b.io [REDACTED] [REDACTED:phone]"
        );
    }

    #[test]
    fn every_bad_field_is_named() {
        let errors = settings(
            &[("LLMTAP_SAMPLE", "2")],
            r#"
            [privacy]
            capture = "bodies"
            redact_builtin = ["email", "ssn"]
            [[privacy.redact]]
            pattern = "(open"
            [[privacy.redact]]
            pattern = "ok"
            color = "red"
            [[routes]]
            prefix = "/a"
            upstream = "http://a"
            capture = "all"
            "#,
        )
        .unwrap_err();
        let all = errors.join("\n");
        for needle in [
            "LLMTAP_SAMPLE=\"2\"",
            "privacy.capture: expected full, metadata or none",
            "routes[0].capture: expected full, metadata or none",
            "privacy.redact_builtin: unknown detector \"ssn\"",
            "privacy.redact[0]: invalid pattern",
            "privacy.redact[1]: unknown field `color`",
        ] {
            assert!(all.contains(needle), "{needle:?} not in:\n{all}");
        }
        assert!(!all.contains("(open"), "a pattern is never echoed:\n{all}");
        let errors = settings(&[("LLMTAP_REDACT", "not json")], "").unwrap_err();
        assert!(errors[0].starts_with("LLMTAP_REDACT: expected a JSON array"));
    }
}
