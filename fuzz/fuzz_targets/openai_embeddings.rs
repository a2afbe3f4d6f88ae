//! `llmtap::parse::openai_embeddings::parse` on arbitrary bytes (both flag
//! values) and `request_summary` on whatever of them is JSON: no panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common/outcome.rs"]
mod outcome;

fuzz_target!(|data: &[u8]| {
    outcome::check(data, llmtap::parse::openai_embeddings::parse);
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(data) {
        let _ = llmtap::parse::openai_embeddings::request_summary(&v);
    }
});
