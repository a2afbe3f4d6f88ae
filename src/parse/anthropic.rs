//! Anthropic Messages responses (`POST /v1/messages`): plain JSON or an SSE
//! stream, turned into an [`Outcome`].
//!
//! For a stream, the events are merged back into the equivalent non-stream
//! `message` object, the way Anthropic's SDKs accumulate a stream:
//! `message_start` gives the message skeleton (id, model, role, initial
//! usage); `content_block_start` opens block `index` (text, tool_use,
//! thinking, redacted_thinking, server_tool_use, ...);
//! `content_block_delta` appends `text_delta` / `thinking_delta` text, sets
//! the `signature_delta` signature, appends `citations_delta` citations, and
//! concatenates `input_json_delta` fragments per block, parsed into the
//! block's `input` at the end (kept as the raw string when it does not
//! parse, e.g. a cut stream); `message_delta` sets `stop_reason` /
//! `stop_sequence` (and any other delta field) and merges its cumulative
//! `usage` over `message_start`'s, field by field, so newer API versions that
//! repeat input and cache counts there win; `message_stop` is the end marker;
//! `ping` is ignored; an `error` event becomes the [`ProviderError`].
//! Malformed events are counted and skipped; a cut stream yields whatever was
//! reconstructed. Nothing is fabricated: absent usage stays `None`.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::common::{
    append, bounded_entry, dispatch, json_body, json_events, non_empty, str_of, MAX_PARTS,
};
use super::outcome::{Outcome, ProviderError, StreamFacts};
use super::sse::SseEvent;
use super::usage::Usage;

/// Parse a complete (non-stream) JSON response body: a `message` or an
/// `{"type":"error","error":{...}}` body.
pub fn parse_json(body: &[u8]) -> Outcome {
    let Some(v) = json_body(body) else {
        return Outcome::default();
    };
    Outcome {
        usage: v.get("usage").and_then(Usage::from_anthropic),
        finish_reasons: non_empty(v.get("stop_reason")).into_iter().collect(),
        error: provider_error(&v),
        ..Outcome::of_body(v)
    }
}

/// Parse a captured Messages SSE stream.
pub fn parse_stream(body: &[u8]) -> Outcome {
    let mut acc = StreamAcc::default();
    let mut facts = StreamFacts::default();
    let mut error = None;
    // `[DONE]` (from OpenAI-style proxies) is not the end: `message_stop` is.
    json_events(body, &mut facts, |facts, ev, chunk| {
        let kind = chunk
            .get("type")
            .and_then(Value::as_str)
            .or(ev.event.as_deref())
            .unwrap_or_default();
        if kind == "error" || chunk.get("error").is_some_and(|e| !e.is_null()) {
            let err = provider_error(&chunk).unwrap_or_else(|| ProviderError {
                message: chunk.to_string(),
                kind: None,
            });
            error.get_or_insert(err);
        } else {
            facts.chunks += 1;
            acc.absorb(kind, &chunk, ev, facts);
        }
    });
    let built = acc.build();
    Outcome {
        usage: acc.usage.as_ref().and_then(Usage::from_anthropic),
        model: str_of(built.get("model")),
        response_id: str_of(built.get("id")),
        finish_reasons: non_empty(built.get("stop_reason")).into_iter().collect(),
        response: acc.seen.then_some(built),
        error,
        stream: Some(facts),
    }
}

/// Chooses by content: a body starting (after whitespace) with `{` is JSON;
/// otherwise it is SSE when `is_event_stream` or when it starts like an SSE
/// field (`event:`, `data:`, `id:`, `:`), else it is treated as (non-)JSON.
pub fn parse(body: &[u8], is_event_stream: bool) -> Outcome {
    dispatch(body, is_event_stream, parse_json, parse_stream)
}

/// `{"type":"error","error":{"type":..,"message":..}}` (body or stream event),
/// `{"error":"text"}`, or a bare `{"type":"error"}` (its JSON text as the
/// message).
fn provider_error(v: &Value) -> Option<ProviderError> {
    match v.get("error") {
        Some(e) if !e.is_null() => Some(ProviderError::from_value(e)),
        _ => {
            let is_error = v.get("type").and_then(Value::as_str) == Some("error");
            is_error.then(|| ProviderError {
                message: v.to_string(),
                kind: None,
            })
        }
    }
}

/// Copy `src`'s fields into `dst`; a null never replaces a present value.
fn merge_fields(dst: &mut Map<String, Value>, src: &Map<String, Value>) {
    for (k, v) in src {
        if !v.is_null() || !dst.contains_key(k) {
            dst.insert(k.clone(), v.clone());
        }
    }
}

/// Merged state of a whole stream.
#[derive(Debug, Default)]
struct StreamAcc {
    /// Any message or content event was absorbed.
    seen: bool,
    /// `message_start.message`, the skeleton of the result.
    message: Option<Map<String, Value>>,
    /// Top-level fields from `message_delta` (`delta.*`, `context_management`).
    top: Map<String, Value>,
    /// `message_start` usage with every `message_delta` usage merged over it.
    usage: Option<Value>,
    blocks: BTreeMap<u64, BlockAcc>,
}

/// Merged state of one content block.
#[derive(Debug, Default)]
struct BlockAcc {
    block: Map<String, Value>,
    /// Concatenated `input_json_delta.partial_json` fragments.
    json: Option<String>,
}

impl StreamAcc {
    fn absorb(&mut self, kind: &str, chunk: &Value, ev: &SseEvent, facts: &mut StreamFacts) {
        match kind {
            "message_start" => {
                self.seen = true;
                if let Some(msg) = chunk.get("message").and_then(Value::as_object) {
                    if self.message.is_none() {
                        self.message = Some(msg.clone());
                    }
                    self.merge_usage(msg.get("usage"));
                }
            }
            "content_block_start" => {
                self.seen = true;
                let next = self
                    .blocks
                    .keys()
                    .next_back()
                    .map_or(0, |i| i.saturating_add(1));
                let index = chunk.get("index").and_then(Value::as_u64).unwrap_or(next);
                let mut spare = BlockAcc::default();
                let acc = bounded_entry(&mut self.blocks, index, MAX_PARTS, &mut spare);
                if let Some(start) = chunk.get("content_block").and_then(Value::as_object) {
                    for (k, v) in start {
                        acc.block.entry(k.clone()).or_insert_with(|| v.clone());
                    }
                }
            }
            "content_block_delta" => {
                self.seen = true;
                facts.first_token_offset.get_or_insert(ev.start);
                let last = self.blocks.keys().next_back().copied().unwrap_or(0);
                let index = chunk.get("index").and_then(Value::as_u64).unwrap_or(last);
                let delta = chunk.get("delta").unwrap_or(&Value::Null);
                let mut spare = BlockAcc::default();
                bounded_entry(&mut self.blocks, index, MAX_PARTS, &mut spare).absorb(delta);
            }
            "content_block_stop" => self.seen = true,
            "message_delta" => {
                self.seen = true;
                if let Some(delta) = chunk.get("delta").and_then(Value::as_object) {
                    merge_fields(&mut self.top, delta);
                }
                if let Some(cm) = chunk.get("context_management").filter(|v| !v.is_null()) {
                    self.top.insert("context_management".into(), cm.clone());
                }
                self.merge_usage(chunk.get("usage"));
            }
            "message_stop" => facts.saw_end = true,
            _ => {} // `ping` and event types this parser does not know
        }
    }

    fn merge_usage(&mut self, usage: Option<&Value>) {
        let Some(src) = usage.and_then(Value::as_object) else {
            return;
        };
        let dst = self.usage.get_or_insert_with(|| Value::Object(Map::new()));
        if let Some(dst) = dst.as_object_mut() {
            merge_fields(dst, src);
        }
    }

    /// The equivalent non-stream `message` object.
    fn build(&self) -> Value {
        let mut msg = self.message.clone().unwrap_or_else(|| {
            let skeleton = json!({"id": null, "type": "message", "role": "assistant",
                "model": null, "content": [], "stop_reason": null, "stop_sequence": null});
            skeleton.as_object().cloned().unwrap_or_default()
        });
        merge_fields(&mut msg, &self.top);
        if !self.blocks.is_empty() || !msg.get("content").is_some_and(Value::is_array) {
            let content = self.blocks.values().map(BlockAcc::to_json).collect();
            msg.insert("content".into(), Value::Array(content));
        }
        if let Some(usage) = &self.usage {
            msg.insert("usage".into(), usage.clone());
        }
        Value::Object(msg)
    }
}

impl BlockAcc {
    /// Merge one `content_block_delta.delta`.
    fn absorb(&mut self, delta: &Value) {
        match delta
            .get("type")
            .and_then(Value::as_str)
            .unwrap_or_default()
        {
            "text_delta" => {
                self.default_type("text");
                self.append_to("text", delta.get("text"));
            }
            "thinking_delta" => {
                self.default_type("thinking");
                self.append_to("thinking", delta.get("thinking"));
            }
            "signature_delta" => {
                self.default_type("thinking");
                if let Some(sig) = delta.get("signature").filter(|s| !s.is_null()) {
                    self.block.insert("signature".into(), sig.clone());
                }
            }
            "input_json_delta" => {
                self.default_type("tool_use");
                let buf = self.json.get_or_insert_with(String::new);
                append(buf, delta.get("partial_json"));
            }
            "citations_delta" => {
                self.default_type("text");
                if let Some(citation) = delta.get("citation").filter(|c| !c.is_null()) {
                    match self.block.get_mut("citations") {
                        Some(Value::Array(list)) => list.push(citation.clone()),
                        _ => {
                            let list = Value::Array(vec![citation.clone()]);
                            self.block.insert("citations".into(), list);
                        }
                    }
                }
            }
            _ => {}
        }
    }

    /// Give a block whose `content_block_start` was never seen a type.
    fn default_type(&mut self, kind: &str) {
        self.block
            .entry("type")
            .or_insert_with(|| Value::String(kind.to_owned()));
    }

    fn append_to(&mut self, key: &str, fragment: Option<&Value>) {
        match self.block.get_mut(key) {
            Some(Value::String(text)) => append(text, fragment),
            _ => {
                let mut text = String::new();
                append(&mut text, fragment);
                self.block.insert(key.into(), Value::String(text));
            }
        }
    }

    fn to_json(&self) -> Value {
        let mut block = self.block.clone();
        if let Some(raw) = self.json.as_deref().filter(|s| !s.trim().is_empty()) {
            let input = serde_json::from_str::<Value>(raw)
                .unwrap_or_else(|_| Value::String(raw.to_owned()));
            block.insert("input".into(), input);
        } else if self.json.is_some() && !block.contains_key("input") {
            block.insert("input".into(), Value::Object(Map::new()));
        }
        Value::Object(block)
    }
}

#[cfg(test)]
mod tests;
