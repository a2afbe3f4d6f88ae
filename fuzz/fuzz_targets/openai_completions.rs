//! `llmtap::parse::openai_completions::parse` on arbitrary bytes, as JSON and as SSE:
//! no panic, stream offsets inside the body.
#![no_main]

use libfuzzer_sys::fuzz_target;

#[path = "common/outcome.rs"]
mod outcome;

fuzz_target!(|data: &[u8]| {
    outcome::check(data, llmtap::parse::openai_completions::parse);
});
