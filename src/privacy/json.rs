//! Redaction and reduction inside JSON values. Only string *values* are
//! touched (never keys, numbers or structure), so a rewritten body is valid
//! JSON whatever the replacement holds: serialising escapes it.
//!
//! - [`redact`]: every string value through the [`Redactor`].
//! - [`reduce`]: for the `metadata` capture mode, every string value emptied
//!   except those under keys that name the call rather than its content
//!   ([`KEEP`]: model, ids, types, roles, finish reasons, status codes), and
//!   vectors of numbers that encode content (embeddings, token bytes)
//!   emptied; numbers (usage, counts, parameters) and booleans are kept.

use serde_json::Value;

use super::redact::Redactor;

/// Keys whose string values survive the `metadata` mode: what names the
/// call, not its content (`user`, `user_id` and `safety_identifier` are the
/// end user's id, which the trace keeps in every mode).
pub const KEEP: [&str; 20] = [
    "model",
    "id",
    "object",
    "type",
    "role",
    "finish_reason",
    "stop_reason",
    "status",
    "code",
    "system_fingerprint",
    "service_tier",
    "reasoning_effort",
    "encoding_format",
    "reason",
    "event",
    "response_id",
    "previous_response_id",
    "user",
    "user_id",
    "safety_identifier",
];

/// Keys whose arrays of numbers are content (emptied by [`reduce`]).
const CONTENT_VECTORS: [&str; 2] = ["embedding", "bytes"];

/// Redacts every string value in `v`; the number of matches replaced.
pub fn redact(v: &mut Value, r: &Redactor) -> usize {
    match v {
        Value::String(s) => match r.redact_counted(s, |r| r.into()) {
            Some((new, n)) => {
                *s = new;
                n
            }
            None => 0,
        },
        Value::Array(items) => items.iter_mut().map(|i| redact(i, r)).sum(),
        Value::Object(map) => map.values_mut().map(|i| redact(i, r)).sum(),
        _ => 0,
    }
}

/// Reduces `v` to its metadata (see the module docs).
pub fn reduce(v: &mut Value) {
    reduce_under(v, None);
}

fn reduce_under(v: &mut Value, key: Option<&str>) {
    match v {
        Value::String(s) if !key.is_some_and(|k| KEEP.contains(&k)) => s.clear(),
        Value::Array(items) if key.is_some_and(|k| CONTENT_VECTORS.contains(&k)) => items.clear(),
        Value::Array(items) => items.iter_mut().for_each(|i| reduce_under(i, None)),
        Value::Object(map) => map
            .iter_mut()
            .for_each(|(k, i)| reduce_under(i, Some(k.as_str()))),
        _ => {}
    }
}

/// Keys whose string values are streamed as deltas: text joined across a
/// stream's events before it is redacted ([`crate::privacy::stream`]).
pub const STREAMED: [&str; 9] = [
    "content",
    "text",
    "arguments",
    "partial_json",
    "thinking",
    "delta",
    "refusal",
    "reasoning_content",
    "reasoning",
];

/// `s` as the inside of a JSON string literal.
pub fn json_escaped(s: &str) -> std::borrow::Cow<'_, str> {
    let quoted = serde_json::Value::from(s).to_string();
    std::borrow::Cow::Owned(quoted[1..quoted.len() - 1].to_string())
}

/// The JSON pointer of `key` under `parent`.
pub fn pointer(parent: &str, key: &str) -> String {
    let escaped = key.replace('~', "~0").replace('/', "~1");
    format!("{parent}/{escaped}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn replacements_are_escaped_by_serialising() {
        let r = Redactor::new(
            &[],
            &[super::super::redact::RuleSpec {
                name: "q".into(),
                pattern: "secret".into(),
                replacement: "\"quoted\\\" \n}".into(),
            }],
        )
        .unwrap();
        let mut v = json!({"messages": [{"role": "user", "content": "a secret here"}], "n": 1});
        assert_eq!(redact(&mut v, &r), 1);
        let text = serde_json::to_string(&v).unwrap();
        let back: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back["messages"][0]["content"], "a \"quoted\\\" \n} here");
        assert_eq!(back["n"], 1);
    }

    #[test]
    fn keys_and_numbers_are_never_touched() {
        let r = Redactor::new(&["card".into()], &[]).unwrap();
        let mut v = json!({"4111111111111111": 4111111111111111u64, "x": "4111111111111111"});
        assert_eq!(redact(&mut v, &r), 1);
        assert_eq!(
            v,
            json!({"4111111111111111": 4111111111111111u64, "x": "[REDACTED:card]"})
        );
    }

    #[test]
    fn reduce_keeps_the_call_and_drops_the_content() {
        let mut v = json!({
            "id": "chatcmpl-1", "model": "gpt-4o-mini", "object": "chat.completion",
            "choices": [{"index": 0, "finish_reason": "stop",
                "message": {"role": "assistant", "content": "the answer",
                    "tool_calls": [{"id": "call_1", "type": "function",
                        "function": {"name": "lookup", "arguments": "{\"q\":\"x\"}"}}]}}],
            "usage": {"prompt_tokens": 9, "completion_tokens": 3, "total_tokens": 12},
            "data": [{"embedding": [0.1, 0.2], "index": 0}],
            "temperature": 0.2, "stream": false, "user": "user-42",
            "system": "you are a secret agent"
        });
        reduce(&mut v);
        assert_eq!(v["model"], "gpt-4o-mini");
        assert_eq!(v["id"], "chatcmpl-1");
        assert_eq!(v["choices"][0]["finish_reason"], "stop");
        assert_eq!(v["choices"][0]["message"]["role"], "assistant");
        assert_eq!(v["choices"][0]["message"]["content"], "");
        let call = &v["choices"][0]["message"]["tool_calls"][0];
        assert_eq!(call["function"]["arguments"], "");
        assert_eq!(call["function"]["name"], "");
        assert_eq!(v["usage"]["total_tokens"], 12);
        assert_eq!(v["data"][0]["embedding"], json!([]));
        assert_eq!(v["temperature"], 0.2);
        assert_eq!(v["user"], "user-42");
        assert_eq!(v["system"], "");
    }

    #[test]
    fn pointers_escape_their_keys() {
        assert_eq!(pointer("/a", "b/c~d"), "/a/b~1c~0d");
    }
}
