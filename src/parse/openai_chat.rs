//! OpenAI Chat Completions responses: plain JSON or an SSE stream, turned
//! into an [`Outcome`].
//!
//! For a stream, the `chat.completion.chunk` deltas are merged back into the
//! equivalent non-stream `chat.completion` object: content and refusal text
//! concatenated per choice, tool calls merged by their `index` (arguments
//! concatenated), logprobs lists appended, the last `finish_reason` kept.
//! Usage is read from whichever chunk carries it (OpenAI's usage-only chunk
//! with `choices: []`, or the last choice chunk as vLLM/Azure/Databricks
//! send it). Malformed events are counted and skipped; a cut stream yields
//! whatever was reconstructed. Nothing is fabricated: absent usage stays
//! `None`.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::choices::{self, index_of, Choice};
use super::common::{append, bounded_entry, dispatch, non_empty, MAX_SUBPARTS};
use super::outcome::Outcome;

/// Parse a complete (non-stream) JSON response body.
pub fn parse_json(body: &[u8]) -> Outcome {
    choices::parse_json(body)
}

/// Parse a captured SSE stream of `chat.completion.chunk` events.
pub fn parse_stream(body: &[u8]) -> Outcome {
    choices::parse_stream::<ChoiceAcc>(
        body,
        "chat.completion",
        &["system_fingerprint", "service_tier"],
    )
}

/// Chooses by content: a body starting (after whitespace) with `{` is JSON;
/// otherwise it is SSE when `is_event_stream` or when it starts like an SSE
/// field (`data:`, `event:`, `id:`, `:`), else it is treated as (non-)JSON.
pub fn parse(body: &[u8], is_event_stream: bool) -> Outcome {
    dispatch(body, is_event_stream, parse_json, parse_stream)
}

/// Merged state of one choice.
#[derive(Debug, Default)]
struct ChoiceAcc {
    role: Option<String>,
    content: Option<String>,
    refusal: Option<String>,
    tools: BTreeMap<u64, ToolAcc>,
    /// Legacy `function_call` delta: (name, arguments).
    function_call: Option<(String, String)>,
    lp_content: Option<Vec<Value>>,
    lp_refusal: Option<Vec<Value>>,
    finish: Option<String>,
}

/// Merged state of one tool call.
#[derive(Debug, Default)]
struct ToolAcc {
    id: Option<String>,
    kind: Option<String>,
    name: Option<String>,
    arguments: String,
}

impl Choice for ChoiceAcc {
    fn absorb(&mut self, c: &Value) -> bool {
        let delta = c.get("delta").unwrap_or(&Value::Null);
        let mut token = false;
        if let Some(role) = non_empty(delta.get("role")) {
            self.role = Some(role);
        }
        for (key, slot) in [
            ("content", &mut self.content),
            ("refusal", &mut self.refusal),
        ] {
            if let Some(text) = delta.get(key).and_then(Value::as_str) {
                token |= !text.is_empty();
                slot.get_or_insert_with(String::new).push_str(text);
            }
        }
        if let Some(calls) = delta.get("tool_calls").and_then(Value::as_array) {
            token |= !calls.is_empty();
            for (pos, tc) in calls.iter().enumerate() {
                let mut spare = ToolAcc::default();
                let index = index_of(tc, pos);
                bounded_entry(&mut self.tools, index, MAX_SUBPARTS, &mut spare).absorb(tc);
            }
        }
        if let Some(fc) = delta.get("function_call").filter(|f| f.is_object()) {
            token = true;
            let (name, args) = self.function_call.get_or_insert_with(Default::default);
            if name.is_empty() {
                *name = non_empty(fc.get("name")).unwrap_or_default();
            }
            append(args, fc.get("arguments"));
        }
        if let Some(lp) = c.get("logprobs").filter(|l| l.is_object()) {
            for (key, slot) in [
                ("content", &mut self.lp_content),
                ("refusal", &mut self.lp_refusal),
            ] {
                if let Some(items) = lp.get(key).and_then(Value::as_array) {
                    slot.get_or_insert_with(Vec::new)
                        .extend(items.iter().cloned());
                }
            }
        }
        if let Some(finish) = non_empty(c.get("finish_reason")) {
            self.finish = Some(finish);
        }
        token
    }

    fn finish_reason(&self) -> Option<&str> {
        self.finish.as_deref()
    }

    fn to_json(&self, index: u64) -> Value {
        let mut msg = Map::new();
        msg.insert(
            "role".into(),
            self.role.as_deref().unwrap_or("assistant").into(),
        );
        msg.insert(
            "content".into(),
            self.content.clone().map_or(Value::Null, Value::String),
        );
        if let Some(refusal) = &self.refusal {
            msg.insert("refusal".into(), refusal.clone().into());
        }
        if !self.tools.is_empty() {
            let calls = self.tools.values().map(ToolAcc::to_json).collect();
            msg.insert("tool_calls".into(), Value::Array(calls));
        }
        if let Some((name, arguments)) = &self.function_call {
            msg.insert(
                "function_call".into(),
                json!({"name": name, "arguments": arguments}),
            );
        }
        let logprobs = if self.lp_content.is_none() && self.lp_refusal.is_none() {
            Value::Null
        } else {
            json!({"content": self.lp_content, "refusal": self.lp_refusal})
        };
        json!({"index": index, "message": msg, "logprobs": logprobs, "finish_reason": self.finish})
    }
}

impl ToolAcc {
    fn absorb(&mut self, tc: &Value) {
        if self.id.is_none() {
            self.id = non_empty(tc.get("id"));
        }
        if self.kind.is_none() {
            self.kind = non_empty(tc.get("type"));
        }
        let func = tc.get("function").unwrap_or(&Value::Null);
        if self.name.is_none() {
            self.name = non_empty(func.get("name"));
        }
        append(&mut self.arguments, func.get("arguments"));
    }

    fn to_json(&self) -> Value {
        json!({
            "id": self.id,
            "type": self.kind.as_deref().unwrap_or("function"),
            "function": {"name": self.name, "arguments": self.arguments},
        })
    }
}

#[cfg(test)]
mod tests;
