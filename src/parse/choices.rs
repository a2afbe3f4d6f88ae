//! What the two `choices`-shaped OpenAI APIs, Chat Completions
//! ([`super::openai_chat`]) and legacy Completions
//! ([`super::openai_completions`]), share: finish reasons of a plain body in
//! choice order, and the stream walk that merges chunks back into one
//! response object.
//!
//! A stream is a series of chunk objects ended by `data: [DONE]`. The
//! top-level fields of the chunks are kept (first non-null value wins); each
//! choice is merged by its `index` with the API's [`Choice`]; usage is read
//! from whichever chunk carries it: OpenAI's usage-only chunk
//! (`choices: []`), whose byte range is reported, or the last choice chunk as
//! vLLM/Azure/Databricks send it. `{"error": ...}` chunks become the
//! [`ProviderError`]; malformed events are counted and skipped.

use std::collections::BTreeMap;

use serde_json::{Map, Value};

use super::common::{bounded_entry, json_body, json_events, str_of, MAX_PARTS};
use super::outcome::{Outcome, ProviderError, StreamFacts};
use super::sse::SseEvent;
use super::usage::Usage;

/// Merged state of one choice of a stream, per API.
pub(crate) trait Choice: Default {
    /// Merge one chunk choice; true when it carried output tokens.
    fn absorb(&mut self, c: &Value) -> bool;
    /// The last non-empty `finish_reason` seen.
    fn finish_reason(&self) -> Option<&str>;
    /// The choice of the equivalent non-stream response.
    fn to_json(&self, index: u64) -> Value;
}

/// Top-level chunk fields every reconstructed response has (null when never
/// seen).
const REQUIRED_KEYS: [&str; 3] = ["id", "created", "model"];

/// Parse a complete (non-stream) JSON response body.
pub(crate) fn parse_json(body: &[u8]) -> Outcome {
    let Some(v) = json_body(body) else {
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
        finish_reasons: finish.into_iter().map(|(_, f)| f).collect(),
        error: ProviderError::from_openai(&v),
        ..Outcome::of_body(v)
    }
}

/// Parse a captured SSE stream of chunks into the equivalent `object`
/// response; `optional_keys` are the top-level fields copied beyond
/// [`REQUIRED_KEYS`] when some chunk has them.
pub(crate) fn parse_stream<C: Choice>(
    body: &[u8],
    object: &str,
    optional_keys: &[&str],
) -> Outcome {
    let mut acc = StreamAcc::<C>::default();
    let mut facts = StreamFacts::default();
    let mut error = None;
    let saw_done = json_events(body, &mut facts, |facts, ev, chunk| {
        if let Some(err) = ProviderError::from_openai(&chunk) {
            error.get_or_insert(err);
        } else {
            facts.chunks += 1;
            acc.absorb(&chunk, ev, facts, optional_keys);
        }
    });
    facts.saw_end = saw_done;
    let (built, finish_reasons) = acc.build(object, optional_keys);
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

fn choices(v: &Value) -> &[Value] {
    v.get("choices")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// A list element's `index` field, falling back to its position.
pub(crate) fn index_of(v: &Value, pos: usize) -> u64 {
    v.get("index").and_then(Value::as_u64).unwrap_or(pos as u64)
}

/// Merged state of a whole stream.
#[derive(Debug, Default)]
struct StreamAcc<C> {
    top: Map<String, Value>,
    usage: Option<Value>,
    choices: BTreeMap<u64, C>,
}

impl<C: Choice> StreamAcc<C> {
    fn absorb(
        &mut self,
        chunk: &Value,
        ev: &SseEvent,
        facts: &mut StreamFacts,
        optional_keys: &[&str],
    ) {
        for &key in REQUIRED_KEYS.iter().chain(optional_keys) {
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
            let mut spare = C::default();
            let index = index_of(c, pos);
            token |= bounded_entry(&mut self.choices, index, MAX_PARTS, &mut spare).absorb(c);
        }
        if token {
            facts.first_token_offset.get_or_insert(ev.start);
        }
    }

    /// The equivalent non-stream `object` response and the finish reasons.
    fn build(&self, object: &str, optional_keys: &[&str]) -> (Value, Vec<String>) {
        let mut resp = Map::new();
        for key in REQUIRED_KEYS {
            resp.insert(
                key.into(),
                self.top.get(key).cloned().unwrap_or(Value::Null),
            );
        }
        resp.insert("object".into(), object.into());
        for &key in optional_keys {
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
            .filter_map(|c| c.finish_reason().map(str::to_owned))
            .collect();
        (Value::Object(resp), finish)
    }
}
