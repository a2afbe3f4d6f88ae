//! `SseDecoder` fed in fuzzer-chosen chunks yields exactly `decode_all`'s
//! events (chunking never changes the result), with offsets in bounds and in
//! order. Small inputs are also fed one byte at a time.
//!
//! Input layout: byte 0 low 3 bits = number of cut points `k` (0..=7), then
//! `k` little-endian u16 cut positions (taken modulo len+1 and sorted), then
//! the stream bytes. A seed made from a plain stream is `\0` + the stream.
#![no_main]

use libfuzzer_sys::fuzz_target;
use llmtap::parse::sse::{decode_all, SseDecoder, SseEvent};

/// Offsets within the stream, events in stream order and never overlapping.
fn check_offsets(events: &[SseEvent], len: usize) {
    let mut prev_end = 0;
    for e in events {
        assert!(
            prev_end <= e.start && e.start <= e.end && e.end <= len,
            "bad offsets {}..{} (previous end {prev_end}, len {len})",
            e.start,
            e.end
        );
        prev_end = e.end;
    }
}

/// Feed `stream` cut at `cuts` (sorted, each <= len); every event must end
/// within the bytes fed so far.
fn decode_chunked(stream: &[u8], cuts: &[usize]) -> Vec<SseEvent> {
    let mut dec = SseDecoder::new();
    let mut out = Vec::new();
    let mut last = 0;
    for &p in cuts.iter().chain([stream.len()].iter()) {
        for e in dec.feed(&stream[last..p]) {
            assert!(e.end <= p, "event ends at {} but only {p} bytes fed", e.end);
            out.push(e);
        }
        last = p;
    }
    out.extend(dec.finish());
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&head, rest)) = data.split_first() else {
        return;
    };
    let k = usize::from(head & 7).min(rest.len() / 2);
    let (cut_bytes, stream) = rest.split_at(2 * k);
    let mut cuts: Vec<usize> = cut_bytes
        .chunks_exact(2)
        .map(|c| usize::from(u16::from_le_bytes([c[0], c[1]])) % (stream.len() + 1))
        .collect();
    cuts.sort_unstable();

    let whole = decode_all(stream);
    check_offsets(&whole, stream.len());

    let chunked = decode_chunked(stream, &cuts);
    assert_eq!(chunked, whole, "cuts {cuts:?} changed the events");

    if stream.len() <= 1024 {
        let every: Vec<usize> = (1..stream.len()).collect();
        assert_eq!(
            decode_chunked(stream, &every),
            whole,
            "byte-at-a-time feeding changed the events"
        );
    }
});
