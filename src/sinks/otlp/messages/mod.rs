//! Provider request and response bodies to the OpenTelemetry GenAI message
//! structure (`gen_ai.input.messages`, `gen_ai.output.messages`,
//! `gen_ai.system_instructions`): messages of `role` + `parts`, a part being
//! `text`, `tool_call`, `tool_call_response`, `reasoning`, `uri` or `blob`
//! (semantic-conventions `gen-ai-input-messages.json` /
//! `gen-ai-output-messages.json`); a part the conventions have no type for
//! passes through with its provider `type`, as their generic part allows.
//!
//! Pure: JSON in, JSON out, one file per API family.

mod anthropic;
mod openai;
mod responses;
mod tools;

pub use tools::definitions as tool_definitions;

use serde_json::{json, Value};

/// The API a span came from (from the canonical span's name and format).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    Chat,
    Completions,
    Responses,
    Anthropic,
    Embeddings,
}

/// What the bodies said, in the conventions' structure.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Conversation {
    /// `gen_ai.system_instructions`: parts (empty when none apart from the history).
    pub system: Vec<Value>,
    /// `gen_ai.input.messages`.
    pub input: Vec<Value>,
    /// `gen_ai.output.messages`: one message per choice.
    pub output: Vec<Value>,
}

/// The request's side: system instructions and input messages.
pub fn from_request(family: Family, req: &Value) -> Conversation {
    let (system, input) = match family {
        Family::Chat => (Vec::new(), openai::chat_input(req)),
        Family::Completions => (Vec::new(), openai::completion_input(req)),
        Family::Responses => responses::input(req),
        Family::Anthropic => anthropic::input(req),
        Family::Embeddings => (Vec::new(), Vec::new()),
    };
    Conversation {
        system,
        input,
        output: Vec::new(),
    }
}

/// The response's side: one output message per choice.
pub fn from_response(family: Family, resp: &Value) -> Vec<Value> {
    match family {
        Family::Chat => openai::chat_output(resp),
        Family::Completions => openai::completion_output(resp),
        Family::Responses => responses::output(resp),
        Family::Anthropic => anthropic::output(resp),
        Family::Embeddings => Vec::new(),
    }
}

/// A text part.
pub(crate) fn text(s: &str) -> Value {
    json!({"type": "text", "content": s})
}

/// A message of `role` with `parts`.
pub(crate) fn message(role: &str, parts: Vec<Value>) -> Value {
    json!({"role": role, "parts": parts})
}

/// A tool call; `arguments` as sent, parsed when it is JSON text.
pub(crate) fn tool_call(id: Option<&str>, name: Option<&str>, arguments: Option<&Value>) -> Value {
    json!({
        "type": "tool_call",
        "id": id,
        "name": name.unwrap_or_default(),
        "arguments": arguments.map(parse_if_text).unwrap_or(Value::Null),
    })
}

/// A tool's result sent back to the model.
pub(crate) fn tool_response(id: Option<&str>, result: Option<&Value>) -> Value {
    json!({
        "type": "tool_call_response",
        "id": id,
        "response": result.cloned().unwrap_or(Value::Null),
    })
}

/// A reasoning part (the model's thinking or its summary).
pub(crate) fn reasoning(s: &str) -> Value {
    json!({"type": "reasoning", "content": s})
}

/// An image, audio or file by URL; a `data:` URL becomes a `blob`.
pub(crate) fn media(modality: &str, url: &str) -> Value {
    if let Some(rest) = url.strip_prefix("data:") {
        if let Some((mime, data)) = rest.split_once(";base64,") {
            return blob(modality, Some(mime), data);
        }
    }
    json!({"type": "uri", "modality": modality, "uri": url})
}

/// Inline binary content, base64 as the provider sent it.
pub(crate) fn blob(modality: &str, mime: Option<&str>, data: &str) -> Value {
    json!({"type": "blob", "modality": modality, "mime_type": mime, "content": data})
}

/// JSON text parsed into a value; anything else unchanged.
fn parse_if_text(v: &Value) -> Value {
    match v {
        Value::String(s) => serde_json::from_str(s).unwrap_or_else(|_| v.clone()),
        other => other.clone(),
    }
}

/// An output message's finish reason, which the conventions require: the
/// provider's mapped by [`finish_reason`], or `""` when it gave none (a cut
/// stream): no reason is invented.
pub(crate) fn finish(provider: Option<&str>) -> Value {
    Value::String(provider.map(finish_reason).unwrap_or_default().to_string())
}

/// The conventions' finish reasons (`stop`, `length`, `content_filter`,
/// `tool_call`, `error`) for a provider's; others pass as they are.
pub fn finish_reason(provider: &str) -> &str {
    match provider {
        "stop" | "end_turn" | "stop_sequence" | "completed" => "stop",
        "length" | "max_tokens" | "max_output_tokens" | "model_context_window_exceeded" => "length",
        "content_filter" | "refusal" => "content_filter",
        "tool_calls" | "function_call" | "tool_use" => "tool_call",
        "failed" | "error" => "error",
        other => other,
    }
}

/// Content that is a string or an array of typed parts, as the text parts
/// and media of the conventions (`text`/`input_text`/`output_text` items,
/// `image_url`, `input_audio`); other parts pass through.
pub(crate) fn content_parts(content: Option<&Value>) -> Vec<Value> {
    match content {
        Some(Value::String(s)) => vec![text(s)],
        Some(Value::Array(items)) => items.iter().filter_map(content_part).collect(),
        _ => Vec::new(),
    }
}

fn content_part(p: &Value) -> Option<Value> {
    let kind = p.get("type").and_then(Value::as_str).unwrap_or("text");
    let s = |k: &str| p.get(k).and_then(Value::as_str);
    Some(match kind {
        "text" | "input_text" | "output_text" => text(s("text")?),
        "refusal" => text(s("refusal")?),
        "image_url" => {
            let url = p.get("image_url").and_then(|u| u.get("url").or(Some(u)))?;
            media("image", url.as_str()?)
        }
        "input_image" => media("image", s("image_url")?),
        "input_audio" => {
            let a = p.get("input_audio")?;
            let format = a.get("format").and_then(Value::as_str).unwrap_or("wav");
            blob(
                "audio",
                Some(&format!("audio/{format}")),
                a.get("data")?.as_str()?,
            )
        }
        _ => p.clone(),
    })
}

#[cfg(test)]
mod tests;
