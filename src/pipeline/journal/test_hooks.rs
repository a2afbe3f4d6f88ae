//! Test hooks, in debug builds only (`cargo test` builds the binary so;
//! release builds do not have them), for `tests/poison.rs`: a parse worker
//! that meets a captured request body containing a marker
//!
//! - `LLMTAP_DEBUG_ABORT_ON_PARSE=<marker>`: aborts the process, as an OOM
//!   kill would (after a second, so that the call's response reaches its
//!   client first);
//! - `LLMTAP_DEBUG_STALL_ON_PARSE=<marker>`: sleeps 30 s mid-parse, so that
//!   a crash meanwhile finds the record being parsed.

use std::sync::OnceLock;
use std::time::Duration;

use crate::exchange::Exchange;

fn marker(cell: &'static OnceLock<Option<Vec<u8>>>, var: &str) -> Option<&'static [u8]> {
    cell.get_or_init(|| {
        std::env::var(var)
            .ok()
            .filter(|m| !m.is_empty())
            .map(String::into_bytes)
    })
    .as_deref()
}

fn body_has(ex: &Exchange, marker: &[u8]) -> bool {
    ex.request
        .as_ref()
        .is_some_and(|b| b.capture.bytes().windows(marker.len()).any(|w| w == marker))
}

/// Runs the hooks the environment asks for on an exchange about to be parsed.
pub fn on_parse(ex: &Exchange) {
    static ABORT: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    static STALL: OnceLock<Option<Vec<u8>>> = OnceLock::new();
    if let Some(m) = marker(&STALL, "LLMTAP_DEBUG_STALL_ON_PARSE") {
        if body_has(ex, m) {
            tracing::warn!(
                "LLMTAP_DEBUG_STALL_ON_PARSE: stalling mid-parse (a debug-build test hook)"
            );
            std::thread::sleep(Duration::from_secs(30));
        }
    }
    if let Some(m) = marker(&ABORT, "LLMTAP_DEBUG_ABORT_ON_PARSE") {
        if body_has(ex, m) {
            tracing::warn!(
                "LLMTAP_DEBUG_ABORT_ON_PARSE: aborting mid-parse (a debug-build test hook)"
            );
            std::thread::sleep(Duration::from_secs(1));
            std::process::abort();
        }
    }
}
