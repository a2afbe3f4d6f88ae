//! `[sessions]`: how llmtap recognises the conversation a call belongs to
//! when the caller does not say (`docs/sessions.md`, [`crate::session`]).

use crate::session::SessionConfig;

use super::layers::parse_bool;
use super::{count_max, duration_max, Layers, DAY};

/// Keys of the `[sessions]` table.
pub const KEYS: &[&str] = &["history", "ttl", "max_histories", "max_responses"];

/// The most entries either map may be given: about 370 bytes each at worst,
/// so 0.4 GB per map (`crate::memory_bound`).
pub const MAX_ENTRIES: usize = 1_000_000;

/// Reads the four settings (env over file over default).
pub(super) fn resolve(l: &mut Layers<'_>) -> SessionConfig {
    let d = SessionConfig::default();
    SessionConfig {
        history: l.parsed(
            Some("LLMTAP_SESSION_HISTORY"),
            ("sessions", "history"),
            d.history,
            parse_bool,
        ),
        ttl: l.parsed(
            Some("LLMTAP_SESSION_TTL"),
            ("sessions", "ttl"),
            d.ttl,
            duration_max(30 * DAY),
        ),
        max_prefixes: l.parsed(
            Some("LLMTAP_SESSION_MAX_HISTORIES"),
            ("sessions", "max_histories"),
            d.max_prefixes,
            count_max(MAX_ENTRIES),
        ),
        max_responses: l.parsed(
            Some("LLMTAP_SESSION_MAX_RESPONSES"),
            ("sessions", "max_responses"),
            d.max_responses,
            count_max(MAX_ENTRIES),
        ),
    }
}
