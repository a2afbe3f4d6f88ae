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

use super::outcome::{Outcome, ProviderError, StreamFacts};
use super::sse::{self, SseEvent};
use super::usage::Usage;

/// Parse a complete (non-stream) JSON response body.
pub fn parse_json(body: &[u8]) -> Outcome {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Outcome::default();
    };
    let mut finish: Vec<(u64, String)> = choices(&v)
        .iter()
        .enumerate()
        .filter_map(|(pos, c)| Some((index_of(c, pos), str_of(c.get("finish_reason"))?)))
        .collect();
    finish.sort_by_key(|(i, _)| *i);
    Outcome {
        usage: v.get("usage").and_then(Usage::from_openai),
        model: str_of(v.get("model")),
        response_id: str_of(v.get("id")),
        finish_reasons: finish.into_iter().map(|(_, f)| f).collect(),
        error: provider_error(&v),
        stream: None,
        response: Some(v),
    }
}

/// Parse a captured SSE stream of `chat.completion.chunk` events.
pub fn parse_stream(body: &[u8]) -> Outcome {
    let mut acc = StreamAcc::default();
    let mut facts = StreamFacts::default();
    let mut error = None;
    for ev in sse::decode_all(body) {
        let data = ev.data.trim();
        if data == "[DONE]" {
            facts.saw_end = true;
            continue;
        }
        match serde_json::from_str::<Value>(data) {
            Ok(chunk) if chunk.is_object() => {
                if let Some(err) = provider_error(&chunk) {
                    error.get_or_insert(err);
                } else {
                    facts.chunks += 1;
                    acc.absorb(&chunk, &ev, &mut facts);
                }
            }
            _ if data.is_empty() => {} // e.g. `event: ping` without data
            _ => facts.bad_events += 1,
        }
    }
    let (built, finish_reasons) = acc.build();
    Outcome {
        usage: acc.usage.as_ref().and_then(Usage::from_openai),
        model: str_of(acc.top.get("model")),
        response_id: str_of(acc.top.get("id")),
        response: (facts.chunks > 0).then_some(built),
        finish_reasons,
        error,
        stream: Some(facts),
    }
}

/// Chooses by content: a body starting (after whitespace) with `{` is JSON;
/// otherwise it is SSE when `is_event_stream` or when it starts like an SSE
/// field (`data:`, `event:`, `id:`, `:`), else it is treated as (non-)JSON.
pub fn parse(body: &[u8], is_event_stream: bool) -> Outcome {
    let rest = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let rest = rest.trim_ascii_start();
    let sse_like = [&b"data:"[..], b"event:", b"id:", b":"]
        .iter()
        .any(|p| rest.starts_with(p));
    if rest.starts_with(b"{") {
        parse_json(body)
    } else if is_event_stream || sse_like {
        parse_stream(body)
    } else {
        parse_json(body)
    }
}

fn str_of(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_owned)
}

fn choices(v: &Value) -> &[Value] {
    v.get("choices")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// A list element's `index` field, falling back to its position.
fn index_of(v: &Value, pos: usize) -> u64 {
    v.get("index").and_then(Value::as_u64).unwrap_or(pos as u64)
}

/// `{"error": {...}}` / `{"error": "text"}`, or vLLM's `{"object": "error", ...}`.
fn provider_error(v: &Value) -> Option<ProviderError> {
    let err = match v.get("error") {
        Some(Value::Null) | None if v.get("object").and_then(Value::as_str) == Some("error") => v,
        Some(Value::Null) | None => return None,
        Some(e) => e,
    };
    if let Some(text) = err.as_str() {
        return Some(ProviderError {
            message: text.to_owned(),
            kind: None,
        });
    }
    let kind = ["type", "code"].iter().find_map(|k| match err.get(*k) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    });
    let message = str_of(err.get("message")).unwrap_or_else(|| err.to_string());
    Some(ProviderError { message, kind })
}

/// Top-level chunk fields copied into the reconstructed response (first
/// non-null value wins).
const TOP_KEYS: [&str; 5] = [
    "id",
    "created",
    "model",
    "system_fingerprint",
    "service_tier",
];

/// Merged state of a whole stream.
#[derive(Debug, Default)]
struct StreamAcc {
    top: Map<String, Value>,
    usage: Option<Value>,
    choices: BTreeMap<u64, ChoiceAcc>,
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

/// Append a streamed text fragment (a non-string fragment is appended as JSON).
fn append(dst: &mut String, v: Option<&Value>) {
    match v {
        Some(Value::String(s)) => dst.push_str(s),
        None | Some(Value::Null) => {}
        Some(other) => dst.push_str(&other.to_string()),
    }
}

/// A non-empty string field.
fn non_empty(v: Option<&Value>) -> Option<String> {
    str_of(v).filter(|s| !s.is_empty())
}

impl StreamAcc {
    fn absorb(&mut self, chunk: &Value, ev: &SseEvent, facts: &mut StreamFacts) {
        for key in TOP_KEYS {
            if let Some(v) = chunk.get(key).filter(|v| !v.is_null()) {
                self.top.entry(key).or_insert_with(|| v.clone());
            }
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage.clone());
            if chunk
                .get("choices")
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty)
            {
                facts.usage_only_chunk = Some((ev.start, ev.end));
            }
        }
        let mut token = false;
        for (pos, c) in choices(chunk).iter().enumerate() {
            token |= self.choices.entry(index_of(c, pos)).or_default().absorb(c);
        }
        if token {
            facts.first_token_offset.get_or_insert(ev.start);
        }
    }

    /// The equivalent `chat.completion` object and the finish reasons.
    fn build(&self) -> (Value, Vec<String>) {
        let mut resp = Map::new();
        for key in ["id", "created", "model"] {
            resp.insert(
                key.into(),
                self.top.get(key).cloned().unwrap_or(Value::Null),
            );
        }
        resp.insert("object".into(), "chat.completion".into());
        for key in ["system_fingerprint", "service_tier"] {
            if let Some(v) = self.top.get(key) {
                resp.insert(key.into(), v.clone());
            }
        }
        let choices = self.choices.iter().map(|(i, c)| c.to_json(*i)).collect();
        resp.insert("choices".into(), Value::Array(choices));
        if let Some(usage) = &self.usage {
            resp.insert("usage".into(), usage.clone());
        }
        let finish = self
            .choices
            .values()
            .filter_map(|c| c.finish.clone())
            .collect();
        (Value::Object(resp), finish)
    }
}

impl ChoiceAcc {
    /// Merge one chunk choice; true when it carried output tokens.
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
                self.tools.entry(index_of(tc, pos)).or_default().absorb(tc);
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
