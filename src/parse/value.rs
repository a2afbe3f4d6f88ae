//! The smallest `serde_json::Value` accessors, shared by the parsers'
//! helpers ([`super::common`]) and [`super::outcome`]. Pure.

use serde_json::Value;

/// A string field, owned.
pub(crate) fn str_of(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_owned)
}

/// The first of `keys` holding a string or a number, as text.
pub(crate) fn scalar_text(v: &Value, keys: &[&str]) -> Option<String> {
    keys.iter().find_map(|k| match v.get(*k) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    })
}
