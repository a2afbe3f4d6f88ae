//! OpenAI Chat Completions (and the OpenAI-compatible servers: Azure,
//! Databricks) and legacy Completions bodies as GenAI messages.

use serde_json::{json, Value};

use super::{content_parts, finish, message, text, tool_call, tool_response};

/// `messages[]`: system and developer messages stay in the history (the
/// conventions keep instructions that are part of it there).
pub fn chat_input(req: &Value) -> Vec<Value> {
    let Some(messages) = req.get("messages").and_then(Value::as_array) else {
        return Vec::new();
    };
    messages.iter().map(chat_message).collect()
}

fn chat_message(m: &Value) -> Value {
    let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
    if role == "tool" {
        let id = m.get("tool_call_id").and_then(Value::as_str);
        return message("tool", vec![tool_response(id, m.get("content"))]);
    }
    let mut parts = content_parts(m.get("content"));
    if let Some(r) = m.get("refusal").and_then(Value::as_str) {
        parts.push(text(r));
    }
    parts.extend(tool_calls(m));
    let mut out = message(role, parts);
    if let Some(name) = m.get("name").and_then(Value::as_str) {
        out["name"] = name.into();
    }
    out
}

/// `tool_calls[]` (and the older single `function_call`) of a message.
fn tool_calls(m: &Value) -> Vec<Value> {
    let mut out: Vec<Value> = m
        .get("tool_calls")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|c| {
            let f = c.get("function");
            tool_call(
                c.get("id").and_then(Value::as_str),
                f.and_then(|f| f.get("name")).and_then(Value::as_str),
                f.and_then(|f| f.get("arguments")),
            )
        })
        .collect();
    if let Some(f) = m.get("function_call") {
        out.push(tool_call(
            None,
            f.get("name").and_then(Value::as_str),
            f.get("arguments"),
        ));
    }
    out
}

/// `choices[]`, each an assistant message with its finish reason.
pub fn chat_output(resp: &Value) -> Vec<Value> {
    choices(resp)
        .map(|c| {
            let m = c.get("message").cloned().unwrap_or(json!({}));
            let mut out = chat_message(&m);
            if m.get("role").is_none() {
                out["role"] = "assistant".into();
            }
            out["finish_reason"] = reason(c);
            out
        })
        .collect()
}

/// `prompt`: a string or a list of strings (token arrays are left out).
pub fn completion_input(req: &Value) -> Vec<Value> {
    let parts = match req.get("prompt") {
        Some(Value::String(s)) => vec![text(s)],
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).map(text).collect(),
        _ => Vec::new(),
    };
    if parts.is_empty() {
        return Vec::new();
    }
    vec![message("user", parts)]
}

/// `choices[].text`.
pub fn completion_output(resp: &Value) -> Vec<Value> {
    choices(resp)
        .map(|c| {
            let t = c.get("text").and_then(Value::as_str).unwrap_or_default();
            let mut out = message("assistant", vec![text(t)]);
            out["finish_reason"] = reason(c);
            out
        })
        .collect()
}

fn choices(resp: &Value) -> impl Iterator<Item = &Value> {
    resp.get("choices")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
}

fn reason(choice: &Value) -> Value {
    finish(choice.get("finish_reason").and_then(Value::as_str))
}
