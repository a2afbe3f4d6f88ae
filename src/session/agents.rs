//! The session ids coding agents already send, read from a request's
//! headers and body. Pure; every id is checked by [`clean`].
//!
//! Sources (looked up 2026-12; each names where it was found):
//! - Claude Code, header `X-Claude-Code-Session-Id: <uuid>` (Claude Code
//!   v2.1.86 and later; coder/aibridge PR #241 "handle Claude Code session
//!   detection for new header / metadata format").
//! - Claude Code, Anthropic body `metadata.user_id`, two shapes:
//!   legacy `user_<sha256>_account_<uuid or empty>_session_<uuid>` (before
//!   v2.1.78), and since v2.1.78 a JSON object in the string:
//!   `{"device_id":"…","account_uuid":"…","session_id":"<uuid>"}`
//!   (ding113/claude-code-hub PR #939, coder/aibridge PR #241).
//! - OpenAI Codex CLI, header `session_id: <conversation id>`: openai/codex
//!   `codex-rs/codex-api/src/requests/headers.rs`, `build_conversation_headers`
//!   inserts `session_id`; Codex 0.144 and later send `session-id` (with an
//!   equal `thread-id`) instead (qxcnm/Codex-Manager PR #343, weave-os/router
//!   PR #1046, KarpelesLab/teamclaude PR #352).
//! - Qwen Code, header `X-Qwen-Code-Session-Id` (its docs' comparison table
//!   with Claude Code's header).
//! - The generic `x-session-id`, which several gateways honour (gproxy's
//!   "Session Affinity" docs: `x-session-id` on OpenAI-shaped requests).
//!
//! Not used: OpenAI `prompt_cache_key` (Codex sets it to the conversation id,
//! but other clients share one key across users for caching) and `user`
//! (a user, not a conversation).

use http::HeaderMap;
use serde_json::Value;

/// Headers that carry an agent's session id, most specific first.
pub const SESSION_HEADERS: [&str; 5] = [
    "x-claude-code-session-id",
    "x-qwen-code-session-id",
    "session-id",
    "session_id",
    "x-session-id",
];

/// The longest session id accepted (longer values are ignored, not cut).
pub const MAX_SESSION_LEN: usize = 256;

/// `value` trimmed, if it is a usable session id: not empty, at most
/// [`MAX_SESSION_LEN`] bytes, no control characters.
pub fn clean(value: &str) -> Option<String> {
    let v = value.trim();
    let ok = !v.is_empty() && v.len() <= MAX_SESSION_LEN && !v.chars().any(char::is_control);
    ok.then(|| v.to_owned())
}

/// The first agent session header present with a usable value.
pub fn from_headers(headers: &HeaderMap) -> Option<String> {
    SESSION_HEADERS.iter().find_map(|name| {
        headers
            .get_all(*name)
            .iter()
            .find_map(|v| v.to_str().ok().and_then(clean))
    })
}

/// Claude Code's session id from an Anthropic body's `metadata.user_id`
/// (either shape, see the module header).
pub fn from_metadata(body: &Value) -> Option<String> {
    let user_id = body.get("metadata")?.get("user_id")?.as_str()?;
    if user_id.trim_start().starts_with('{') {
        let inner: Value = serde_json::from_str(user_id).ok()?;
        return inner.get("session_id")?.as_str().and_then(clean);
    }
    let at = user_id.rfind("_session_")?;
    clean(&user_id[at + "_session_".len()..])
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn claude_code_header_wins_over_the_generic_ones() {
        let h = headers(&[
            ("x-session-id", "generic"),
            (
                "X-Claude-Code-Session-Id",
                "57a121ec-f78c-48c3-a745-e3036a3ecc33",
            ),
        ]);
        assert_eq!(
            from_headers(&h).as_deref(),
            Some("57a121ec-f78c-48c3-a745-e3036a3ecc33")
        );
    }

    #[test]
    fn codex_headers_old_and_new_spelling() {
        let old = headers(&[("session_id", "019ee74f-22b5-7043-b5fc-697ca0fbd5a6")]);
        let new = headers(&[
            ("session-id", "019ee74f-22b5-7043-b5fc-697ca0fbd5a7"),
            ("thread-id", "019ee74f-22b5-7043-b5fc-697ca0fbd5a7"),
        ]);
        assert_eq!(
            from_headers(&old).as_deref(),
            Some("019ee74f-22b5-7043-b5fc-697ca0fbd5a6")
        );
        assert_eq!(
            from_headers(&new).as_deref(),
            Some("019ee74f-22b5-7043-b5fc-697ca0fbd5a7")
        );
    }

    #[test]
    fn unusable_header_values_are_skipped() {
        let long = "x".repeat(MAX_SESSION_LEN + 1);
        let h = headers(&[
            ("x-claude-code-session-id", "  "),
            ("session-id", &long),
            ("x-session-id", "ok-1"),
        ]);
        assert_eq!(from_headers(&h).as_deref(), Some("ok-1"));
        assert_eq!(from_headers(&HeaderMap::new()), None);
    }

    #[test]
    fn claude_code_metadata_legacy_and_json_shapes() {
        let legacy = json!({"metadata": {"user_id":
            "user_5dd07c33da27e6d2968d94ea20bf47a7b090b6b158b82328d54da2909a108e84_account__session_d2e70091-3007-41a3-a916-cb8b0d3098de"}});
        assert_eq!(
            from_metadata(&legacy).as_deref(),
            Some("d2e70091-3007-41a3-a916-cb8b0d3098de")
        );
        let inner = json!({"device_id": "3f4a", "account_uuid": "", "session_id": "2c4e1cf0-7a67-4d2e-9a4b-1d16d3f44752"});
        let modern = json!({"metadata": {"user_id": inner.to_string()}});
        assert_eq!(
            from_metadata(&modern).as_deref(),
            Some("2c4e1cf0-7a67-4d2e-9a4b-1d16d3f44752")
        );
    }

    #[test]
    fn a_plain_user_id_is_not_a_session() {
        assert_eq!(
            from_metadata(&json!({"metadata": {"user_id": "alice"}})),
            None
        );
        assert_eq!(
            from_metadata(&json!({"metadata": {"user_id": "{not json"}})),
            None
        );
        assert_eq!(from_metadata(&json!({"messages": []})), None);
    }
}
