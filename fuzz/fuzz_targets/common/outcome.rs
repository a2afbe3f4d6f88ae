//! Shared by the response-parser targets: run `parse` both ways and check
//! what must hold for any input.

use llmtap::parse::Outcome;

/// Runs `parse(data, flag)` for both flags and checks the stream offsets.
pub fn check(data: &[u8], parse: fn(&[u8], bool) -> Outcome) {
    for is_event_stream in [false, true] {
        let outcome = parse(data, is_event_stream);
        if let Some(facts) = &outcome.stream {
            if let Some(off) = facts.first_token_offset {
                assert!(
                    off <= data.len(),
                    "first_token_offset {off} > {}",
                    data.len()
                );
            }
            if let Some((start, end)) = facts.usage_only_chunk {
                assert!(
                    start <= end && end <= data.len(),
                    "usage_only_chunk {start}..{end} outside 0..{}",
                    data.len()
                );
            }
        }
        // The trace builder serialises the response; that must not panic either.
        if let Some(v) = &outcome.response {
            let _ = v.to_string();
        }
    }
}
