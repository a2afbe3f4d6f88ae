//! Request and response previews and the truncations MLflow's client
//! applies to trace info (`mlflow/tracing/utils/truncation.py`,
//! `base_mlflow.py::_truncate_metadata`, `trace_info_v2.py::_truncate_*`).
//! Databricks derives no preview from the spans: the trace info must carry
//! them. Lengths count characters (Python `str` length), not bytes.

use serde_json::Value;

/// Preview length limit when tracking to Databricks
/// (`TRACE_REQUEST_RESPONSE_PREVIEW_MAX_LENGTH_DBX`).
pub const PREVIEW_MAX_DBX: usize = 10_000;
/// Trace metadata values are cut to this (`MAX_CHARS_IN_TRACE_INFO_METADATA`).
pub const METADATA_MAX: usize = 250;
/// Tag keys and values (`MAX_CHARS_IN_TRACE_INFO_TAGS_KEY` / `_VALUE`).
pub const TAG_KEY_MAX: usize = 250;
pub const TAG_VALUE_MAX: usize = 4096;
const SUFFIX: &str = "...";

/// The first `n` characters of `s`.
pub fn cut(s: &str, n: usize) -> &str {
    match s.char_indices().nth(n) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// `s` cut to `max` characters, the last three being `...` when cut.
pub fn cut_with_suffix(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_string();
    }
    format!("{}{SUFFIX}", cut(s, max - SUFFIX.len()))
}

/// `_get_truncated_preview(stored_value, role)`: the text of the last
/// message of `role` when the value holds chat messages (OpenAI Chat,
/// Responses, ResponsesAgent shapes), else the stored value; cut to `max`.
pub fn preview(stored: &str, role: &str, max: usize) -> String {
    let parsed: Option<Value> = serde_json::from_str(stored).ok();
    let content = parsed
        .as_ref()
        .and_then(messages)
        .filter(|m| !m.is_empty())
        .map(|m| text_of(last_of_role(&m, role)))
        .filter(|c| !c.is_empty());
    cut_with_suffix(content.as_deref().unwrap_or(stored), max)
}

fn is_message(v: &Value) -> bool {
    v.get("role").is_some() && v.get("content").is_some()
}

/// `_try_extract_messages`.
fn messages(obj: &Value) -> Option<Vec<&Value>> {
    let obj = obj.as_object()?;
    let list = |k: &str| {
        obj.get(k)
            .and_then(Value::as_array)
            .filter(|a| !a.is_empty())
            .map(|a| a.iter().filter(|m| is_message(m)).collect::<Vec<_>>())
    };
    if let Some(m) = list("messages") {
        return Some(m);
    }
    let first_choice = obj
        .get("choices")
        .and_then(Value::as_array)
        .and_then(|c| c.first())
        .and_then(|c| c.get("message"))
        .filter(|m| is_message(m));
    if let Some(m) = first_choice {
        return Some(vec![m]);
    }
    if let Some(m) = list("input").or_else(|| list("output")) {
        return Some(m);
    }
    obj.get("request").and_then(messages)
}

fn last_of_role<'a>(messages: &[&'a Value], role: &str) -> &'a Value {
    messages
        .iter()
        .rev()
        .find(|m| m.get("role").and_then(Value::as_str) == Some(role))
        .or(messages.last())
        .copied()
        .unwrap_or(&Value::Null)
}

/// `_get_text_content_from_message`.
fn text_of(message: &Value) -> String {
    match message.get("content") {
        Some(Value::String(s)) => s.clone(),
        Some(Value::Array(parts)) => parts
            .iter()
            .find_map(|p| match p {
                Value::String(s) => Some(s.clone()),
                Value::Object(o)
                    if matches!(
                        o.get("type").and_then(Value::as_str),
                        Some("text" | "output_text")
                    ) =>
                {
                    Some(o.get("text").and_then(Value::as_str).unwrap_or("").into())
                }
                _ => None,
            })
            .unwrap_or_default(),
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_previews_are_the_last_message_of_the_role() {
        let req = r#"{"messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"},{"role":"assistant","content":"Yo"}]}"#;
        assert_eq!(preview(req, "user", 100), "Hi");
        let resp = r#"{"choices":[{"message":{"role":"assistant","content":"Paris."}}]}"#;
        assert_eq!(preview(resp, "assistant", 100), "Paris.");
    }

    #[test]
    fn responses_and_content_parts() {
        let req = r#"{"input":[{"role":"user","content":[{"type":"input_image"},{"type":"text","text":"Look"}]}]}"#;
        assert_eq!(preview(req, "user", 100), "Look");
        let resp = r#"{"output":[{"type":"reasoning"},{"role":"assistant","content":[{"type":"output_text","text":"Done"}]}]}"#;
        assert_eq!(preview(resp, "assistant", 100), "Done");
    }

    #[test]
    fn other_values_preview_as_stored() {
        // An Anthropic response has no `choices`: the whole stored text.
        let resp = r#"{"content":[{"type":"text","text":"Hi"}],"role":"assistant"}"#;
        assert_eq!(preview(resp, "assistant", 100), resp);
        // Empty content falls back to the stored text, as `content or value`.
        let req = r#"{"messages":[{"role":"user","content":""}]}"#;
        assert_eq!(preview(req, "user", 100), req);
        assert_eq!(preview("\"plain\"", "user", 100), "\"plain\"");
    }

    #[test]
    fn truncation_counts_characters_and_adds_the_suffix() {
        let long = "é".repeat(20);
        assert_eq!(preview(&long, "user", 20), long);
        let cut = preview(&format!("{long}x"), "user", 20);
        assert_eq!(cut.chars().count(), 20);
        assert!(cut.ends_with("é..."));
        assert_eq!(cut_with_suffix("abcdef", 5), "ab...");
        assert_eq!(super::cut("héllo", 2), "hé");
    }
}
