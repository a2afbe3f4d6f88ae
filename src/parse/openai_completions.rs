//! Legacy OpenAI Completions (`POST /v1/completions`): plain JSON or an SSE
//! stream, turned into an [`Outcome`].
//!
//! A stream is a series of `text_completion` objects, each with partial
//! `text` per choice, ended by `data: [DONE]`. They are merged back into the
//! equivalent non-stream object: text concatenated per choice `index` (so
//! `n > 1` interleavings come apart), legacy logprobs lists (`tokens`,
//! `token_logprobs`, `top_logprobs`, `text_offset`) appended, the last
//! `finish_reason` kept. Usage is read from whichever chunk carries it:
//! OpenAI's usage-only chunk (`choices: []`, with
//! `stream_options.include_usage`), whose byte range is reported, or the
//! last choice chunk as vLLM sends it. Malformed events are counted and
//! skipped; a cut stream yields whatever was reconstructed; absent usage
//! stays `None`.

use serde_json::{json, Map, Value};

use super::choices::{self, Choice};
use super::common::{dispatch, non_empty};
use super::outcome::Outcome;

/// Parse a complete (non-stream) JSON response body.
pub fn parse_json(body: &[u8]) -> Outcome {
    choices::parse_json(body)
}

/// Parse a captured SSE stream of `text_completion` chunks.
pub fn parse_stream(body: &[u8]) -> Outcome {
    choices::parse_stream::<ChoiceAcc>(body, "text_completion", &["system_fingerprint"])
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
    text: String,
    /// Legacy logprobs object, its lists appended chunk by chunk.
    logprobs: Option<Map<String, Value>>,
    finish: Option<String>,
}

impl Choice for ChoiceAcc {
    /// Merge one chunk choice; true when it carried text.
    fn absorb(&mut self, c: &Value) -> bool {
        let text = c.get("text").and_then(Value::as_str).unwrap_or_default();
        self.text.push_str(text);
        if let Some(lp) = c.get("logprobs").and_then(Value::as_object) {
            let merged = self.logprobs.get_or_insert_with(Map::new);
            for (key, v) in lp {
                match (merged.get_mut(key), v) {
                    (Some(Value::Array(have)), Value::Array(more)) => {
                        have.extend(more.iter().cloned());
                    }
                    _ => {
                        merged.insert(key.clone(), v.clone());
                    }
                }
            }
        }
        if let Some(finish) = non_empty(c.get("finish_reason")) {
            self.finish = Some(finish);
        }
        !text.is_empty()
    }

    fn finish_reason(&self) -> Option<&str> {
        self.finish.as_deref()
    }

    fn to_json(&self, index: u64) -> Value {
        json!({
            "text": self.text,
            "index": index,
            "logprobs": self.logprobs.clone().map_or(Value::Null, Value::Object),
            "finish_reason": self.finish,
        })
    }
}

#[cfg(test)]
mod tests;
