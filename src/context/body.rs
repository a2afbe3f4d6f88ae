//! A call's context as its request body states it: OpenAI's `user`,
//! `safety_identifier`, `prompt_cache_key` and `metadata` (an object of
//! string values), Anthropic's `metadata.user_id`. Read on a parse worker
//! from the already-parsed request, never on the request path; the headers
//! ([`super::CallContext`]) win over anything here.
//!
//! Pure and bounded like the headers: at most [`super::MAX_PAIRS`] metadata
//! entries, keys and values cut to [`super::MAX_KEY`] / [`super::MAX_VALUE`];
//! a metadata value that is not a string is not kept (counted in `dropped`).

use serde_json::Value;

use super::{cut, MAX_KEY, MAX_PAIRS, MAX_VALUE};

/// What the request body said about its context.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BodyContext {
    /// `user`, else `safety_identifier`, else `metadata.user_id`.
    pub user: Option<String>,
    /// OpenAI's `prompt_cache_key`.
    pub prompt_cache_key: Option<String>,
    /// `metadata`'s string entries.
    pub metadata: Vec<(String, String)>,
    /// Metadata entries not kept: not strings, or past the cap.
    pub dropped: usize,
}

/// Reads the context fields of a parsed request body.
pub fn read(body: &Value) -> BodyContext {
    let text = |v: Option<&Value>| {
        v.and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(|s| cut(s, MAX_VALUE))
    };
    let metadata = body.get("metadata").and_then(Value::as_object);
    let mut ctx = BodyContext {
        user: text(body.get("user"))
            .or_else(|| text(body.get("safety_identifier")))
            .or_else(|| text(metadata.and_then(|m| m.get("user_id")))),
        prompt_cache_key: text(body.get("prompt_cache_key")),
        ..BodyContext::default()
    };
    for (k, v) in metadata.into_iter().flatten() {
        match v.as_str() {
            // Anthropic's `metadata.user_id` is the user, not metadata.
            Some(s) if k == "user_id" && ctx.user.as_deref() == Some(s) => {}
            Some(s) if ctx.metadata.len() < MAX_PAIRS && !k.is_empty() => {
                ctx.metadata.push((cut(k, MAX_KEY), cut(s, MAX_VALUE)))
            }
            _ => ctx.dropped += 1,
        }
    }
    ctx
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn openai_fields() {
        let c = read(&json!({
            "model": "gpt-4o", "user": "u-1", "safety_identifier": "hash-9",
            "prompt_cache_key": "pk", "metadata": {"ticket": "T-1", "team": "search"}
        }));
        assert_eq!(c.user.as_deref(), Some("u-1"));
        assert_eq!(c.prompt_cache_key.as_deref(), Some("pk"));
        let mut m = c.metadata.clone();
        m.sort();
        assert_eq!(
            m,
            [
                ("team".to_string(), "search".to_string()),
                ("ticket".to_string(), "T-1".to_string())
            ]
        );
        assert_eq!(c.dropped, 0);
    }

    #[test]
    fn safety_identifier_then_anthropic_user_id_name_the_user() {
        let c = read(&json!({"safety_identifier": "hash-9", "user": ""}));
        assert_eq!(c.user.as_deref(), Some("hash-9"));
        let c = read(&json!({"metadata": {"user_id": "anthropic-user"}}));
        assert_eq!(c.user.as_deref(), Some("anthropic-user"));
        assert!(
            c.metadata.is_empty() && c.dropped == 0,
            "the user, not metadata"
        );
        let c = read(&json!({"user": "u", "metadata": {"user_id": "other"}}));
        assert_eq!(c.metadata, [("user_id".to_string(), "other".to_string())]);
    }

    #[test]
    fn non_string_metadata_and_hostile_shapes() {
        let c = read(&json!({
            "user": 7, "metadata": {"n": 1, "o": {"x": "y"}, "ok": "v", "": "no key"}
        }));
        assert_eq!(c.user, None);
        assert_eq!(c.metadata, [("ok".to_string(), "v".to_string())]);
        assert_eq!(c.dropped, 3);
        assert_eq!(read(&json!({"metadata": "str"})), BodyContext::default());
        assert_eq!(read(&json!([1, 2])), BodyContext::default());
    }

    #[test]
    fn bounded() {
        let meta: serde_json::Map<String, Value> = (0..50)
            .map(|i| (format!("k{i}{}", "x".repeat(300)), json!("v".repeat(5000))))
            .collect();
        let c = read(&json!({ "metadata": meta, "user": "é".repeat(1000) }));
        assert_eq!(c.metadata.len(), MAX_PAIRS);
        assert_eq!(c.dropped, 50 - MAX_PAIRS);
        assert!(c
            .metadata
            .iter()
            .all(|(k, v)| k.len() <= MAX_KEY && v.len() == MAX_VALUE));
        assert!(c.user.unwrap().len() <= MAX_VALUE);
    }
}
