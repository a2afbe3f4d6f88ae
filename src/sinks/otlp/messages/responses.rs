//! OpenAI Responses API bodies as GenAI messages: `instructions` are the
//! system instructions, `input` items the history, `output` items one
//! assistant message (the API has a single choice).

use serde_json::{json, Value};

use super::{
    content_parts, finish, finish_reason, message, reasoning, text, tool_call, tool_response,
};

/// (`instructions` as parts, `input` as messages).
pub fn input(req: &Value) -> (Vec<Value>, Vec<Value>) {
    let system = match req.get("instructions") {
        Some(Value::String(s)) => vec![text(s)],
        Some(Value::Array(items)) => items.iter().flat_map(item_parts).collect(),
        _ => Vec::new(),
    };
    let input = match req.get("input") {
        Some(Value::String(s)) => vec![message("user", vec![text(s)])],
        Some(Value::Array(items)) => items.iter().map(input_item).collect(),
        _ => Vec::new(),
    };
    (system, input)
}

/// One input item: a message, a function call or its output, reasoning.
fn input_item(item: &Value) -> Value {
    let kind = item
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    match kind {
        "function_call_output" => {
            let id = item.get("call_id").and_then(Value::as_str);
            message("tool", vec![tool_response(id, item.get("output"))])
        }
        "function_call" | "reasoning" => message("assistant", item_parts(item)),
        _ => {
            let role = item.get("role").and_then(Value::as_str).unwrap_or("user");
            message(role, item_parts(item))
        }
    }
}

/// The parts of one item (input or output).
fn item_parts(item: &Value) -> Vec<Value> {
    let kind = item
        .get("type")
        .and_then(Value::as_str)
        .unwrap_or("message");
    match kind {
        "message" => content_parts(item.get("content")),
        "function_call" => vec![tool_call(
            item.get("call_id").and_then(Value::as_str),
            item.get("name").and_then(Value::as_str),
            item.get("arguments"),
        )],
        "reasoning" => item
            .get("summary")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(|s| s.get("text").and_then(Value::as_str))
            .map(reasoning)
            .collect(),
        _ => vec![item.clone()],
    }
}

/// `output[]` as one assistant message; the finish reason from `status`
/// (`tool_call` when the model called a function).
pub fn output(resp: &Value) -> Vec<Value> {
    let Some(items) = resp.get("output").and_then(Value::as_array) else {
        return Vec::new();
    };
    let parts: Vec<Value> = items.iter().flat_map(item_parts).collect();
    let called = items
        .iter()
        .any(|i| i.get("type").and_then(Value::as_str) == Some("function_call"));
    let status = resp.get("status").and_then(Value::as_str);
    let reason = match status {
        Some("completed") if called => json!("tool_call"),
        Some("incomplete") => resp
            .get("incomplete_details")
            .and_then(|d| d.get("reason"))
            .and_then(Value::as_str)
            .map_or(json!("length"), |r| json!(finish_reason(r))),
        other => finish(other),
    };
    let mut out = message("assistant", parts);
    out["finish_reason"] = reason;
    vec![out]
}
