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
use crate::parse::sse::{for_each_event, SseEvent};

/// A rewritten stream.
#[derive(Debug, Default)]
pub struct Stream {
    pub bytes: Vec<u8>,
    /// Each kept event's end: in the input, in `bytes`.
    pub events: Vec<(usize, usize)>,
    pub redactions: usize,
}

/// The streamed deltas of one sequence, redacted together, and how many of
/// them were put back so far.
type Sequences = HashMap<String, (Vec<String>, usize)>;

/// Rewrites the event stream `data` for `op`, in two passes over its events
/// (never all of them in memory at once): the first gathers the streamed
/// deltas and redacts each sequence as one text, the second rewrites each
/// event with its redacted delta.
pub fn rewrite(data: &[u8], op: Op<'_>) -> Stream {
    let mut sequences = Sequences::new();
    let mut out = Stream::default();
    if let Op::Redact(r) = op {
        sequences = gather(data, r);
        out.redactions = sequences.values().map(|(_, n)| n).sum();
        sequences.values_mut().for_each(|(_, n)| *n = 0);
    }
    let cut = !ends_event(data);
    for_each_event(data, |e| {
        let text = match serde_json::from_str::<Value>(&e.data) {
            Ok(mut v) => {
                if let Op::Reduce(_) = op {
                    json::reduce(&mut v);
                }
                if let Some(r) = op.redactor() {
                    out.redactions += put_back(&e, &mut v, r, &mut sequences);
                }
                Some(v.to_string())
            }
            Err(_) => not_json(&e, op, cut && e.end >= data.len(), &mut out.redactions),
        };
        if let Some(text) = text {
            write_event(&mut out.bytes, &e, &text);
            out.events.push((e.end, out.bytes.len()));
        }
    });
    out
}

/// The first pass: every sequence of streamed deltas, redacted as one text
/// ([`Redactor::redact_pieces`]), with the matches it had.
fn gather(data: &[u8], r: &Redactor) -> Sequences {
    let mut sequences = Sequences::new();
    for_each_event(data, |e| {
        let Ok(mut v) = serde_json::from_str::<Value>(&e.data) else {
            return;
        };
        let kind = event_kind(&e, &v);
        walk(&mut v, &mut String::new(), None, None, &mut |pointer, s| {
            let seq = sequences.entry(sequence(&kind, pointer)).or_default();
            seq.0.push(std::mem::take(s));
        });
    });
    for (pieces, n) in sequences.values_mut() {
        *n = r.redact_pieces(pieces);
    }
    sequences
}

/// The second pass, for one JSON event: its other strings redacted, its
/// streamed deltas replaced by their redacted pieces. The matches replaced.
fn put_back(e: &SseEvent, v: &mut Value, r: &Redactor, sequences: &mut Sequences) -> usize {
    let kind = event_kind(e, v);
    walk(v, &mut String::new(), None, Some(r), &mut |pointer, s| {
        if let Some((pieces, at)) = sequences.get_mut(&sequence(&kind, pointer)) {
            if let Some(piece) = pieces.get_mut(*at) {
                *s = std::mem::take(piece);
            }
            *at += 1;
        }
    })
}

/// An event whose data is not JSON: `[DONE]` (or nothing) as it is; in the
/// `metadata` mode nothing else; else redacted as text, unless it is the
/// last event of a stream cut mid-event (`cut_last`), dropped.
fn not_json(e: &SseEvent, op: Op<'_>, cut_last: bool, redactions: &mut usize) -> Option<String> {
    if e.data.trim() == "[DONE]" || e.data.is_empty() {
        return Some(e.data.clone());
    }
    match op {
        Op::Reduce(_) => None,
        Op::Redact(_) if cut_last => None,
        Op::Redact(r) => Some(match r.redact_counted(&e.data, json_escaped) {
            Some((s, n)) => {
                *redactions += n;
                s
            }
            None => e.data.clone(),
        }),
    }
}

/// The key of the sequence a streamed string belongs to.
fn sequence(kind: &str, pointer: &str) -> String {
    format!("{kind}\u{0}{pointer}")
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

/// Fields that say which of several interleaved sequences an object
/// belongs to (Chat Completions' choice `index`, Anthropic's block `index`,
/// the Responses API's `output_index` and `content_index`).
const INDEXES: [&str; 3] = ["index", "output_index", "content_index"];

/// Walks the strings of `v`: those that are streamed deltas go to
/// `streamed` with their JSON pointer, the others are redacted by `r` (when
/// given). Returns the matches replaced.
fn walk(
    v: &mut Value,
    path: &mut String,
    key: Option<&str>,
    r: Option<&Redactor>,
    streamed: &mut dyn FnMut(&str, &mut String),
) -> usize {
    match v {
        Value::String(s) if key.is_some_and(|k| json::STREAMED.contains(&k)) => {
            streamed(path, s);
            0
        }
        Value::String(s) => match r.and_then(|r| r.redact_counted(s, |x| x.into())) {
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
            // Interleaved sequences (the choices of an `n > 1` stream, each
            // chunk carrying one as `choices[0]`) are told apart by index.
            let base = path.len();
            for k in INDEXES {
                if let Some(i) = map.get(k).and_then(Value::as_u64) {
                    path.push_str(&format!("[{k}={i}]"));
                }
            }
            let mut n = 0;
            for (k, item) in map.iter_mut() {
                let len = path.len();
                *path = json::pointer(path, k);
                n += walk(item, path, Some(k), r, streamed);
                path.truncate(len);
            }
            path.truncate(base);
            n
        }
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::sse::decode_all;

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
    fn interleaved_choices_are_redacted_apart() {
        let chunk = |i: u64, t: &str| {
            let v = serde_json::json!({"object": "chat.completion.chunk",
                "choices": [{"index": i, "delta": {"content": t}}]});
            format!("data: {v}\n\n")
        };
        let body = [
            chunk(0, "mail alice@"),
            chunk(1, "plain "),
            chunk(0, "example.com now"),
            chunk(1, "text"),
        ]
        .concat();
        let out = rewrite(body.as_bytes(), Op::Redact(&redactor()));
        assert_eq!(out.redactions, 1);
        let text = String::from_utf8(out.bytes).unwrap();
        let mut by_choice = [String::new(), String::new()];
        for e in decode_all(text.as_bytes()) {
            let v: Value = serde_json::from_str(&e.data).unwrap();
            let i = v["choices"][0]["index"].as_u64().unwrap() as usize;
            by_choice[i].push_str(v["choices"][0]["delta"]["content"].as_str().unwrap());
        }
        assert_eq!(by_choice, ["mail [REDACTED:email] now", "plain text"]);
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
