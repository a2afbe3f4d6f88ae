//! A conversation's history as a chain of prefix hashes. Pure.
//!
//! `hashes[0]` covers the system prompt (OpenAI chat: it is a message like
//! any other; Anthropic: `system`; Responses: `instructions`), `hashes[k]`
//! the system prompt and the first `k` messages (Responses: `input` items).
//! Each link is a keyed hash of the previous link and the message's
//! canonical form, so equal prefixes give equal hashes and nothing else does
//! (up to 64-bit collisions under a per-process random key).
//!
//! Canonical form, so that what a client resends matches what it sent:
//! object keys in sorted order; `null` values, `cache_control` (Claude Code
//! moves its cache markers every turn), `annotations` and `logprobs` left
//! out; a string `content` equals one text block; `input_text` /
//! `output_text` blocks equal `text` blocks; on Responses items, the
//! server-assigned `id` and `status` are left out (clients may or may not
//! echo them). The model and sampling parameters are not part of the history.
//! A Responses request chained to stored state has no history here: its
//! `input` holds only the new items.

use std::hash::{BuildHasher, Hash, Hasher};

use serde_json::Value;

use crate::route::Api;

/// Keys whose values never make two messages different.
const IGNORED_KEYS: [&str; 3] = ["cache_control", "annotations", "logprobs"];

/// The most messages hashed; a longer history is not matched at all.
pub const MAX_MESSAGES: usize = 10_000;

/// The prefix hashes of a request's conversation, or `None` when the API
/// has no message history (completions, embeddings) or the body has none.
pub fn prefix_hashes(api: Api, body: &Value, key: &impl BuildHasher) -> Option<Vec<u64>> {
    let (system, items, is_responses) = match api {
        Api::ChatCompletions => (None, body.get("messages")?.as_array()?.as_slice(), false),
        Api::Messages => (
            body.get("system"),
            body.get("messages")?.as_array()?.as_slice(),
            false,
        ),
        Api::Responses => return responses(body, key),
        _ => return None,
    };
    chain(system, items.iter(), is_responses, key)
}

/// A Responses request chained to stored state (`previous_response_id`,
/// `conversation`) sends only the new items: its `input` is no history.
fn responses(body: &Value, key: &impl BuildHasher) -> Option<Vec<u64>> {
    let chained = ["previous_response_id", "conversation"];
    if chained
        .iter()
        .any(|k| body.get(k).is_some_and(|v| !v.is_null()))
    {
        return None;
    }
    let system = body.get("instructions");
    match body.get("input")? {
        Value::String(s) => {
            let item = serde_json::json!({"role": "user", "content": s});
            chain(system, std::iter::once(&item), true, key)
        }
        Value::Array(items) => chain(system, items.iter(), true, key),
        _ => None,
    }
}

fn chain<'a>(
    system: Option<&Value>,
    items: impl ExactSizeIterator<Item = &'a Value>,
    is_responses: bool,
    key: &impl BuildHasher,
) -> Option<Vec<u64>> {
    if items.len() == 0 || items.len() > MAX_MESSAGES {
        return None;
    }
    let mut hashes = Vec::with_capacity(items.len() + 1);
    let mut h = key.build_hasher();
    h.write_u8(b'S');
    if let Some(s) = system.filter(|s| !s.is_null()) {
        feed_content(s, &mut h);
    }
    let mut last = h.finish();
    hashes.push(last);
    for item in items {
        let mut h = key.build_hasher();
        h.write_u64(last);
        feed_item(item, is_responses, &mut h);
        last = h.finish();
        hashes.push(last);
    }
    Some(hashes)
}

/// One message or Responses input item.
fn feed_item(item: &Value, is_responses: bool, h: &mut impl Hasher) {
    let Value::Object(map) = item else {
        return feed(item, h);
    };
    h.write_u8(b'{');
    for (k, v) in map {
        let server_side = is_responses && (k == "id" || k == "status");
        let plain_message = is_responses && k == "type" && v == "message";
        if server_side || plain_message || skip(k, v) {
            continue;
        }
        k.hash(h);
        if k == "content" {
            feed_content(v, h);
        } else {
            feed(v, h);
        }
    }
    h.write_u8(b'}');
}

/// A `content` value: a string is one text block.
fn feed_content(v: &Value, h: &mut impl Hasher) {
    match v {
        Value::String(s) => {
            h.write_u8(b'[');
            text_block(s, h);
            h.write_u8(b']');
        }
        other => feed(other, h),
    }
}

/// `{"text": s, "type": "text"}` in canonical key order.
fn text_block(s: &str, h: &mut impl Hasher) {
    h.write_u8(b'{');
    "text".hash(h);
    feed_str(s, h);
    "type".hash(h);
    feed_str("text", h);
    h.write_u8(b'}');
}

/// Any JSON value, canonically (serde_json's map keeps keys sorted).
fn feed(v: &Value, h: &mut impl Hasher) {
    match v {
        Value::Null => h.write_u8(b'n'),
        Value::Bool(b) => h.write_u8(if *b { b't' } else { b'f' }),
        Value::Number(n) => {
            h.write_u8(b'#');
            n.to_string().hash(h);
        }
        Value::String(s) => feed_str(s, h),
        Value::Array(items) => {
            h.write_u8(b'[');
            items.iter().for_each(|i| feed(i, h));
            h.write_u8(b']');
        }
        Value::Object(map) => {
            h.write_u8(b'{');
            for (k, v) in map.iter().filter(|(k, v)| !skip(k, v)) {
                k.hash(h);
                match (k.as_str(), v) {
                    ("content", _) => feed_content(v, h),
                    ("type", Value::String(t)) if t == "input_text" || t == "output_text" => {
                        feed_str("text", h)
                    }
                    _ => feed(v, h),
                }
            }
            h.write_u8(b'}');
        }
    }
}

fn feed_str(s: &str, h: &mut impl Hasher) {
    h.write_u8(b'"');
    s.hash(h);
}

fn skip(k: &str, v: &Value) -> bool {
    v.is_null() || IGNORED_KEYS.contains(&k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::hash::RandomState;

    fn hashes(api: Api, body: Value, key: &RandomState) -> Vec<u64> {
        prefix_hashes(api, &body, key).expect("a history")
    }

    #[test]
    fn a_resent_history_has_the_same_prefix_hashes() {
        let key = RandomState::new();
        let first = hashes(
            Api::ChatCompletions,
            json!({"model": "m", "messages": [{"role": "system", "content": "be brief"},
                {"role": "user", "content": "hi"}]}),
            &key,
        );
        let second = hashes(
            Api::ChatCompletions,
            json!({"model": "other", "temperature": 0.2, "messages": [
                {"role": "system", "content": [{"type": "text", "text": "be brief"}]},
                {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello", "refusal": null, "annotations": []},
                {"role": "user", "content": "more"}]}),
            &key,
        );
        assert_eq!(first.len(), 3);
        assert_eq!(second.len(), 5);
        assert_eq!(first[..], second[..3]);
    }

    #[test]
    fn moved_cache_markers_do_not_change_anthropic_history() {
        let key = RandomState::new();
        let block = |cc: bool| {
            let mut b = json!({"type": "text", "text": "read the file"});
            if cc {
                b["cache_control"] = json!({"type": "ephemeral"});
            }
            b
        };
        let a = hashes(
            Api::Messages,
            json!({"system": "sys", "messages": [{"role": "user", "content": [block(true)]}]}),
            &key,
        );
        let b = hashes(
            Api::Messages,
            json!({"system": [{"type": "text", "text": "sys"}],
                   "messages": [{"role": "user", "content": [block(false)]}]}),
            &key,
        );
        assert_eq!(a, b);
    }

    #[test]
    fn system_prompt_and_content_tell_histories_apart() {
        let key = RandomState::new();
        let body = |sys: &str, text: &str| json!({"system": sys, "messages": [{"role": "user", "content": text}]});
        let base = hashes(Api::Messages, body("a", "hi"), &key);
        assert_ne!(base, hashes(Api::Messages, body("b", "hi"), &key));
        assert_ne!(base[1], hashes(Api::Messages, body("a", "hi!"), &key)[1]);
    }

    #[test]
    fn responses_items_match_with_or_without_server_ids() {
        let key = RandomState::new();
        let sent = hashes(
            Api::Responses,
            json!({"instructions": "x", "input": "hi"}),
            &key,
        );
        let resent = hashes(
            Api::Responses,
            json!({"instructions": "x", "input": [
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
                {"type": "message", "id": "msg_1", "status": "completed", "role": "assistant",
                 "content": [{"type": "output_text", "text": "hello", "annotations": []}]},
                {"role": "user", "content": "next"}]}),
            &key,
        );
        assert_eq!(sent[..], resent[..2]);
    }

    #[test]
    fn apis_without_a_conversation_have_no_history() {
        let key = RandomState::new();
        assert!(prefix_hashes(Api::Embeddings, &json!({"input": "x"}), &key).is_none());
        assert!(prefix_hashes(Api::ChatCompletions, &json!({"messages": []}), &key).is_none());
        assert!(prefix_hashes(Api::ChatCompletions, &json!({"messages": "x"}), &key).is_none());
        let chained = json!({"previous_response_id": "resp_1", "input": "x"});
        assert!(prefix_hashes(Api::Responses, &chained, &key).is_none());
    }
}
