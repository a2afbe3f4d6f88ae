//! Helpers shared by the response parsers: the JSON-or-SSE choice every
//! `parse` makes, reading a plain JSON body, walking a stream's JSON data
//! events, and small `serde_json::Value` accessors (the two that
//! [`super::outcome`] needs too live in [`super::value`]). Pure, and none of them
//! panics on any input.

use std::collections::BTreeMap;

use serde_json::Value;

use super::outcome::{Outcome, StreamFacts};
use super::sse::{self, SseEvent};
pub(crate) use super::value::{scalar_text, str_of};

/// The UTF-8 byte order mark some servers put before a body.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The starts of an SSE field line (`:` opens a comment).
const SSE_FIELDS: [&[u8]; 4] = [b"data:", b"event:", b"id:", b":"];

/// Chooses by content: a body starting (after a BOM and whitespace) with `{`
/// is JSON; otherwise it is SSE when `is_event_stream` or when it starts like
/// an SSE field (`data:`, `event:`, `id:`, `:`), else it is treated as
/// (non-)JSON.
pub(crate) fn dispatch(
    body: &[u8],
    is_event_stream: bool,
    json: fn(&[u8]) -> Outcome,
    stream: fn(&[u8]) -> Outcome,
) -> Outcome {
    if is_stream(body, is_event_stream) {
        stream(body)
    } else {
        json(body)
    }
}

/// The choice [`dispatch`] makes: true for SSE, false for (non-)JSON.
pub(crate) fn is_stream(body: &[u8], is_event_stream: bool) -> bool {
    let rest = strip_bom(body).trim_ascii_start();
    let sse_like = SSE_FIELDS.iter().any(|p| rest.starts_with(p));
    !rest.starts_with(b"{") && (is_event_stream || sse_like)
}

fn strip_bom(body: &[u8]) -> &[u8] {
    body.strip_prefix(BOM).unwrap_or(body)
}

/// A whole body (after a leading BOM) as JSON; `None` when it is not JSON.
pub(crate) fn json_body(body: &[u8]) -> Option<Value> {
    serde_json::from_slice(strip_bom(body)).ok()
}

/// Decodes a captured SSE body and hands each data event that is a JSON
/// object to `each`, with `facts` for it to count chunks in; other data is
/// counted in `facts.bad_events`. Events without data (`event: ping`,
/// comments) and `data: [DONE]` are skipped; the result says whether a
/// `[DONE]` was seen.
pub(crate) fn json_events(
    body: &[u8],
    facts: &mut StreamFacts,
    mut each: impl FnMut(&mut StreamFacts, &SseEvent, Value),
) -> bool {
    let mut done = false;
    sse::for_each_event(body, |ev| {
        let data = ev.data.trim();
        if data == "[DONE]" {
            done = true;
            return;
        }
        if data.is_empty() {
            return;
        }
        match serde_json::from_str::<Value>(data) {
            Ok(v) if v.is_object() => each(facts, &ev, v),
            _ => facts.bad_events += 1,
        }
    });
    done
}

/// Most choices, content blocks or output items a stream merges: each needs
/// only an event of a few dozen bytes but costs a kilobyte or two once
/// rebuilt, so a stream of tiny events with ever new indexes would cost far
/// more than its text. Parts past this are left out of the rebuilt response.
pub(crate) const MAX_PARTS: usize = 128;
/// Most tool calls of one choice, or content / summary parts of one item.
pub(crate) const MAX_SUBPARTS: usize = 64;

/// The entry for `key` in a map of at most `max` entries; past that,
/// `spare` (reset first), which takes the event and is never output.
pub(crate) fn bounded_entry<'a, K: Ord, V: Default>(
    map: &'a mut BTreeMap<K, V>,
    key: K,
    max: usize,
    spare: &'a mut V,
) -> &'a mut V {
    if map.len() >= max && !map.contains_key(&key) {
        *spare = V::default();
        return spare;
    }
    map.entry(key).or_default()
}

/// A non-empty string field.
pub(crate) fn non_empty(v: Option<&Value>) -> Option<String> {
    str_of(v).filter(|s| !s.is_empty())
}

/// Append a streamed text fragment (a non-string fragment is appended as JSON).
pub(crate) fn append(dst: &mut String, v: Option<&Value>) {
    match v {
        Some(Value::String(s)) => dst.push_str(s),
        None | Some(Value::Null) => {}
        Some(other) => dst.push_str(&other.to_string()),
    }
}
