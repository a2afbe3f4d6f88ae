//! An event stream (SSE) rewritten for privacy, event by event, so the
//! parsers read it as they read the original.
//!
//! A streamed answer arrives as many deltas, and a secret may be split
//! across two of them (`"alice@"` + `"example.com"`): redacting each event
//! alone would miss it. So the string values streamed as deltas
//! ([`json::STREAMED`] keys) are gathered across the events — one sequence
//! per JSON pointer and event type (`choices/0/delta/content` of
//! `chat.completion.chunk`, `delta/text` of `content_block_delta`, ...) —
//! and redacted as one text ([`Redactor::redact_pieces`]): no event keeps a
//! fragment of a secret. Other strings are redacted one by one.
//!
//! Events are written back as `event:`/`id:`/`data:` lines (the JSON
//! re-serialised on one line). Comments are dropped. An event whose data is
//! not JSON is kept redacted as text, except `[DONE]` kept as it is and a
//! last event cut mid-JSON, dropped (its fragment may hold the start of a
//! secret). In the `metadata` mode every JSON event is reduced
//! ([`json::reduce`]) and non-JSON events other than `[DONE]` dropped.

use std::collections::HashMap;

use serde_json::Value;

use super::json::{self, json_escaped};
use super::redact::Redactor;
use super::Op;
use crate::parse::sse::{decode_all, SseEvent};

/// A rewritten stream.
#[derive(Debug, Default)]
pub struct Stream {
    pub bytes: Vec<u8>,
    /// Each kept event's end: in the input, in `bytes`.
    pub events: Vec<(usize, usize)>,
    pub redactions: usize,
}

/// Rewrites the event stream `data` for `op`.
pub fn rewrite(data: &[u8], op: Op<'_>) -> Stream {
    let events = decode_all(data);
    let last = events.len().saturating_sub(1);
    let mut values: Vec<Option<Value>> = events
        .iter()
        .map(|e| serde_json::from_str(&e.data).ok())
        .collect();
    let mut redactions = 0;
    if let Op::Reduce(_) = op {
        values.iter_mut().flatten().for_each(json::reduce);
    }
    if let Some(r) = op.redactor() {
        redactions += redact_values(&events, &mut values, r);
    }
    let mut out = Stream::default();
    for (i, (e, v)) in events.iter().zip(&values).enumerate() {
        let done = e.data.trim() == "[DONE]";
        let data = match (v, op) {
            (Some(v), _) => Some(Value::to_string(v)),
            (None, _) if done || e.data.is_empty() => Some(e.data.clone()),
            (None, Op::Reduce(_)) => None,
            (None, Op::Redact(_)) if i == last && !ends_event(data) => None,
            (None, Op::Redact(r)) => Some(match r.redact_counted(&e.data, json_escaped) {
                Some((s, n)) => {
                    redactions += n;
                    s
                }
                None => e.data.clone(),
            }),
        };
        if let Some(data) = data {
            write_event(&mut out.bytes, e, &data);
            out.events.push((e.end, out.bytes.len()));
        }
    }
    out.redactions = redactions;
    out
}

/// True when `data` ends with a blank line (its last event is whole).
fn ends_event(data: &[u8]) -> bool {
    data.ends_with(b"\n\n") || data.ends_with(b"\r\n\r\n") || data.ends_with(b"\r\r")
}

fn write_event(out: &mut Vec<u8>, e: &SseEvent, data: &str) {
    if let Some(name) = &e.event {
        out.extend_from_slice(format!("event: {name}\n").as_bytes());
    }
    if let Some(id) = &e.id {
        out.extend_from_slice(format!("id: {id}\n").as_bytes());
    }
    if !data.is_empty() {
        for line in data.split('\n') {
            out.extend_from_slice(format!("data: {line}\n").as_bytes());
        }
    }
    out.push(b'\n');
}

/// Redacts the JSON events: streamed deltas joined per sequence, every
/// other string alone. Returns the matches replaced.
fn redact_values(events: &[SseEvent], values: &mut [Option<Value>], r: &Redactor) -> usize {
    let mut n = 0;
    // Sequence key -> (event index, pointer) in stream order.
    let mut order: Vec<String> = Vec::new();
    let mut sequences: HashMap<String, Vec<(usize, String)>> = HashMap::new();
    for (i, v) in values.iter_mut().enumerate() {
        let Some(v) = v else { continue };
        let kind = event_kind(&events[i], v);
        let mut streamed = Vec::new();
        n += walk(v, &mut String::new(), None, r, &mut streamed);
        for pointer in streamed {
            let key = format!("{kind}\u{0}{pointer}");
            let seq = sequences.entry(key.clone()).or_insert_with(|| {
                order.push(key);
                Vec::new()
            });
            seq.push((i, pointer));
        }
    }
    for key in order {
        let Some(seq) = sequences.remove(&key) else {
            continue;
        };
        let mut pieces: Vec<String> = seq
            .iter()
            .map(|(i, p)| text_at(values, *i, p).unwrap_or_default())
            .collect();
        let hits = r.redact_pieces(&mut pieces);
        if hits == 0 {
            continue;
        }
        n += hits;
        for ((i, p), piece) in seq.iter().zip(pieces) {
            if let Some(Value::String(s)) = values[*i].as_mut().and_then(|v| v.pointer_mut(p)) {
                *s = piece;
            }
        }
    }
    n
}

fn text_at(values: &[Option<Value>], i: usize, pointer: &str) -> Option<String> {
    let v = values.get(i)?.as_ref()?.pointer(pointer)?;
    v.as_str().map(str::to_string)
}

/// What kind of event `v` is: its `type` (Anthropic, Responses API), its
/// `object` (Chat Completions) or the SSE event name.
fn event_kind(e: &SseEvent, v: &Value) -> String {
    ["type", "object"]
        .iter()
        .find_map(|k| v.get(k).and_then(Value::as_str))
        .map(str::to_string)
        .or_else(|| e.event.clone())
        .unwrap_or_default()
}

/// Redacts the strings of `v` that are not streamed deltas and lists the
/// pointers of those that are.
fn walk(
    v: &mut Value,
    path: &mut String,
    key: Option<&str>,
    r: &Redactor,
    streamed: &mut Vec<String>,
) -> usize {
    match v {
        Value::String(_) if key.is_some_and(|k| json::STREAMED.contains(&k)) => {
            streamed.push(path.clone());
            0
        }
        Value::String(s) => match r.redact_counted(s, |x| x.into()) {
            Some((new, n)) => {
                *s = new;
                n
            }
            None => 0,
        },
        Value::Array(items) => {
            let mut n = 0;
            for (i, item) in items.iter_mut().enumerate() {
                let len = path.len();
                path.push_str(&format!("/{i}"));
                n += walk(item, path, None, r, streamed);
                path.truncate(len);
            }
            n
        }
        Value::Object(map) => {
            let mut n = 0;
            for (k, item) in map.iter_mut() {
                let len = path.len();
                *path = json::pointer(path, k);
                n += walk(item, path, Some(k), r, streamed);
                path.truncate(len);
            }
            n
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redactor() -> Redactor {
        Redactor::new(&["email".into(), "card".into(), "api_key".into()], &[]).unwrap()
    }

    fn chat_chunk(text: &str) -> String {
        let v = serde_json::json!({"id": "c1", "object": "chat.completion.chunk", "model": "m",
            "choices": [{"index": 0, "delta": {"content": text}, "finish_reason": null}]});
        format!("data: {v}\n\n")
    }

    fn text_of(bytes: &[u8]) -> String {
        let mut text = String::new();
        for e in decode_all(bytes) {
            if let Ok(v) = serde_json::from_str::<Value>(&e.data) {
                if let Some(s) = v
                    .pointer("/choices/0/delta/content")
                    .and_then(Value::as_str)
                {
                    text.push_str(s);
                }
            }
        }
        text
    }

    #[test]
    fn a_secret_split_across_deltas_is_redacted_with_no_fragment_left() {
        let pieces = [
            "Mail ali",
            "ce@exam",
            "ple.com, card 4111 1111",
            " 1111 1111. Done",
        ];
        let mut body: String = pieces.iter().map(|p| chat_chunk(p)).collect();
        body.push_str("data: [DONE]\n\n");
        let out = rewrite(body.as_bytes(), Op::Redact(&redactor()));
        let text = String::from_utf8(out.bytes.clone()).unwrap();
        assert_eq!(
            text_of(&out.bytes),
            "Mail [REDACTED:email], card [REDACTED:card]. Done"
        );
        for fragment in ["ali", "ce@", "exam", "ple.com", "4111", " 1111"] {
            assert!(!text.contains(fragment), "{fragment:?} left in {text}");
        }
        assert!(text.ends_with("data: [DONE]\n\n"));
        assert_eq!(out.events.len(), 5);
        assert_eq!(out.events.last().unwrap().1, out.bytes.len());
        assert_eq!(out.events.last().unwrap().0, body.len());
    }

    #[test]
    fn anthropic_deltas_are_joined_by_their_event_type() {
        let ev = |t: &str| {
            let v = serde_json::json!({"type": "content_block_delta", "index": 0,
                "delta": {"type": "text_delta", "text": t}});
            format!("event: content_block_delta\ndata: {v}\n\n")
        };
        let body = format!(
            "{}{}",
            ev("key sk-ant-api03-abcdefgh"),
            ev("ijklmnopqrstuvwxyz ok")
        );
        let out = rewrite(body.as_bytes(), Op::Redact(&redactor()));
        let text = String::from_utf8(out.bytes).unwrap();
        assert!(text.contains("key [REDACTED:api_key]"), "{text}");
        assert!(text.contains(r#""text":" ok""#), "{text}");
        assert!(
            !text.contains("ijklmnop") && !text.contains("sk-ant"),
            "{text}"
        );
        assert!(text.starts_with("event: content_block_delta\ndata: {"));
    }

    #[test]
    fn a_cut_last_event_is_dropped_and_comments_are_not_kept() {
        let body = format!(
            ": keepalive\n\n{}data: {{\"choices\":[{{\"delta\":{{\"content\":\"bob@exa",
            chat_chunk("hi ")
        );
        let out = rewrite(body.as_bytes(), Op::Redact(&redactor()));
        let text = String::from_utf8(out.bytes).unwrap();
        assert!(
            !text.contains("bob@") && !text.contains("keepalive"),
            "{text}"
        );
        assert_eq!(text_of(text.as_bytes()), "hi ");
    }

    #[test]
    fn metadata_keeps_usage_and_model_but_no_text() {
        let usage = serde_json::json!({"id": "c1", "object": "chat.completion.chunk", "model": "m",
            "choices": [], "usage": {"prompt_tokens": 5, "completion_tokens": 2, "total_tokens": 7}});
        let body = format!(
            "{}{}data: {usage}\n\ndata: [DONE]\n\n",
            chat_chunk("secret "),
            chat_chunk("answer")
        );
        let out = rewrite(body.as_bytes(), Op::Reduce(None));
        let text = String::from_utf8(out.bytes).unwrap();
        assert!(
            !text.contains("secret") && !text.contains("answer"),
            "{text}"
        );
        assert!(text.contains(r#""total_tokens":7"#) && text.contains(r#""model":"m""#));
        assert!(text.ends_with("data: [DONE]\n\n"));
    }
}
