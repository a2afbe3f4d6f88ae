//! Anthropic Messages bodies as GenAI messages: `system` is the system
//! instructions, content blocks become parts (`tool_use` a tool call,
//! `tool_result` a tool call response, `thinking` reasoning).

use serde_json::Value;

use super::{blob, finish, media, message, reasoning, text, tool_call, tool_response};

/// (`system` as parts, `messages` as messages).
pub fn input(req: &Value) -> (Vec<Value>, Vec<Value>) {
    let system = blocks(req.get("system"));
    let messages = req
        .get("messages")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .map(|m| {
            let role = m.get("role").and_then(Value::as_str).unwrap_or("user");
            message(role, blocks(m.get("content")))
        })
        .collect();
    (system, messages)
}

/// The response message, with its stop reason.
pub fn output(resp: &Value) -> Vec<Value> {
    if resp.get("type").and_then(Value::as_str) == Some("error") || resp.get("content").is_none() {
        return Vec::new();
    }
    let role = resp
        .get("role")
        .and_then(Value::as_str)
        .unwrap_or("assistant");
    let mut out = message(role, blocks(resp.get("content")));
    out["finish_reason"] = finish(resp.get("stop_reason").and_then(Value::as_str));
    vec![out]
}

/// A string, or an array of content blocks.
fn blocks(content: Option<&Value>) -> Vec<Value> {
    match content {
        Some(Value::String(s)) => vec![text(s)],
        Some(Value::Array(items)) => items.iter().filter_map(block).collect(),
        _ => Vec::new(),
    }
}

fn block(b: &Value) -> Option<Value> {
    let s = |k: &str| b.get(k).and_then(Value::as_str);
    Some(match s("type")? {
        "text" => text(s("text")?),
        "thinking" => reasoning(s("thinking")?),
        "redacted_thinking" => return None,
        "tool_use" | "server_tool_use" => tool_call(s("id"), s("name"), b.get("input")),
        "tool_result" => {
            // The result's content: text, or blocks whose text is joined.
            let result = match b.get("content") {
                Some(Value::Array(items)) => {
                    let texts: Vec<&str> = items
                        .iter()
                        .filter_map(|i| i.get("text").and_then(Value::as_str))
                        .collect();
                    Some(Value::String(texts.join("\n")))
                }
                other => other.cloned(),
            };
            tool_response(s("tool_use_id"), result.as_ref())
        }
        kind @ ("image" | "document") => {
            let modality = if kind == "image" { "image" } else { "document" };
            let src = b.get("source")?;
            match src.get("type").and_then(Value::as_str) {
                Some("base64") => blob(
                    modality,
                    src.get("media_type").and_then(Value::as_str),
                    src.get("data").and_then(Value::as_str)?,
                ),
                Some("url") => media(modality, src.get("url").and_then(Value::as_str)?),
                _ => b.clone(),
            }
        }
        _ => b.clone(),
    })
}
