//! OpenAI Embeddings (`POST /v1/embeddings`, JSON only), turned into an
//! [`Outcome`] that does not carry the vectors.
//!
//! A trace has no use for thousands of floats per input, and they would
//! dwarf everything else in it: in the recorded `response`, each
//! `data[i].embedding` is replaced by a short placeholder saying what was
//! there (`"<1536 floats omitted>"`, or `"<base64 vector omitted, 6144
//! bytes>"` for `encoding_format: "base64"`). Usage maps `prompt_tokens` to
//! input and `total_tokens` to total, with no output tokens. Embeddings have
//! no response id and no finish reasons.
//!
//! [`request_summary`] does the same for the request side: token-array
//! inputs (`[1, 2, ...]` or `[[1, 2, ...], ...]`) become `"<N tokens
//! omitted>"`; text inputs are kept, as they are what a reader wants to see.

use serde_json::Value;

use super::common::json_body;
use super::outcome::{Outcome, ProviderError};
use super::usage::Usage;

/// Parse a JSON response body.
pub fn parse_json(body: &[u8]) -> Outcome {
    let Some(mut v) = json_body(body) else {
        return Outcome::default();
    };
    omit_vectors(&mut v);
    Outcome {
        usage: v.get("usage").and_then(Usage::from_openai),
        error: ProviderError::from_openai(&v),
        ..Outcome::of_body(v)
    }
}

/// Embeddings never stream, so the body is always parsed as JSON;
/// `is_event_stream` is accepted for symmetry with the other parsers.
pub fn parse(body: &[u8], is_event_stream: bool) -> Outcome {
    let _ = is_event_stream;
    parse_json(body)
}

/// The request body for the trace, with token-array inputs replaced by
/// `"<N tokens omitted>"` (per inner array for a batch of token arrays).
/// Anything else, text inputs included, is kept as is.
pub fn request_summary(req: &Value) -> Value {
    let mut req = req.clone();
    if let Some(input) = req.get_mut("input") {
        if is_token_array(input) {
            *input = tokens_omitted(input);
        } else if let Some(batch) = input.as_array_mut() {
            for item in batch.iter_mut().filter(|i| is_token_array(i)) {
                *item = tokens_omitted(item);
            }
        }
    }
    req
}

/// A non-empty array of numbers.
fn is_token_array(v: &Value) -> bool {
    v.as_array()
        .is_some_and(|a| !a.is_empty() && a.iter().all(Value::is_number))
}

fn tokens_omitted(v: &Value) -> Value {
    let n = v.as_array().map_or(0, Vec::len);
    format!("<{n} tokens omitted>").into()
}

/// Replace each `data[i].embedding` with a placeholder.
fn omit_vectors(v: &mut Value) {
    let Some(data) = v.get_mut("data").and_then(Value::as_array_mut) else {
        return;
    };
    for item in data {
        let Some(embedding) = item.get_mut("embedding") else {
            continue;
        };
        let placeholder = match embedding {
            Value::Array(floats) => format!("<{} floats omitted>", floats.len()),
            Value::String(b64) => {
                format!("<base64 vector omitted, {} bytes>", base64_decoded_len(b64))
            }
            _ => continue,
        };
        *embedding = placeholder.into();
    }
}

/// The decoded size of a base64 string, from its length alone.
fn base64_decoded_len(s: &str) -> usize {
    let s = s.trim_end().trim_end_matches('=');
    s.len() / 4 * 3 + (s.len() % 4 * 3 / 4)
}

#[cfg(test)]
mod tests;
