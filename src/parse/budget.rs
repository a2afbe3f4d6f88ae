//! The parse budget: what turning a body into `serde_json::Value`s would
//! cost, estimated by one scan that allocates nothing, so that a body which
//! would cost more than the budget is never parsed (its trace says so, and
//! keeps the call's facts and the body's text).
//!
//! A `Value` can cost far more than its text: `[0,0,0,...]` is 2 bytes of
//! text per element but 32 bytes of `Value` (64 once the array's `Vec` has
//! doubled), and `[{"a":0},...]` is 8 bytes of text per object but a whole
//! BTreeMap leaf node (~632 bytes) each. The estimate counts, outside
//! strings, every value, string, object and map entry at an upper bound of
//! its cost on a 64-bit target (serde_json's default BTreeMap-backed maps,
//! glibc malloc), plus the text itself (which bounds the strings' bytes).
//! Nesting needs no term: serde_json refuses depth past 128.
//!
//! For an SSE stream, events are decoded and parsed one at a time
//! ([`super::sse::for_each_event`]), so the peak is the dearest single event
//! plus what the stream accumulators keep, which is bounded by a small
//! multiple of the stream's text ([`STREAM_KEPT`]).

use super::common::is_stream;
use super::sse;

/// The parse budget is this many times the capture cap.
pub const PARSE_FACTOR: usize = 16;

/// A `Value` (32 bytes), in a `Vec` that may have doubled.
const VALUE: usize = 64;
/// The smallest heap block a `String` takes (its text is counted as text).
const STRING: usize = 32;
/// One BTreeMap leaf node: 11 keys and values, plus malloc's header.
const OBJECT: usize = 640;
/// A map entry past the first leaf, amortised: leaves are at least half
/// full, plus the internal nodes above them.
const ENTRY: usize = 128;
/// What a stream's accumulators keep per byte of its text, at most: the
/// merged text once, plus the per-chunk state of choices, blocks and items
/// (each at least one event, tens of bytes of text, long).
pub const STREAM_KEPT: usize = 8;

/// The parse budget for a capture cap of `cap` bytes.
pub fn parse_budget(cap: usize) -> usize {
    cap.saturating_mul(PARSE_FACTOR)
}

/// Estimated peak heap bytes of parsing `text` into a `serde_json::Value`
/// (an over-estimate for ordinary JSON; text that is not JSON fails early,
/// but is estimated as if it were).
pub fn value_cost(text: &[u8]) -> usize {
    let mut cost = text.len();
    let mut in_string = false;
    let mut escaped = false;
    let mut in_scalar = false;
    for &b in text {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        let scalar = matches!(b, b'0'..=b'9' | b'-' | b'+' | b'.' | b'a'..=b'z' | b'A'..=b'Z');
        cost = cost.saturating_add(match b {
            b'"' => {
                in_string = true;
                VALUE + STRING
            }
            b'{' => VALUE + OBJECT,
            b'[' => VALUE,
            b':' => ENTRY,
            _ if scalar && !in_scalar => VALUE,
            _ => 0,
        });
        in_scalar = scalar;
    }
    cost
}

/// The most any one byte of text can add to [`value_cost`] or
/// [`body_cost`]: the byte itself, the dearest item it can open (`{`), and
/// what a stream keeps per byte.
const DEAREST_BYTE: usize = 1 + VALUE + OBJECT + STREAM_KEPT;

/// Whether parsing `text` (a body, `is_event_stream` as for [`body_cost`])
/// stays within `budget`. Text short enough that even its dearest reading
/// fits is not scanned: the usual case, as the budget is many times the
/// capture cap.
pub fn within(text: &[u8], is_event_stream: bool, budget: usize) -> bool {
    text.len().saturating_mul(DEAREST_BYTE) <= budget || body_cost(text, is_event_stream) <= budget
}

/// Whether parsing `text` as one JSON value stays within `budget` (see
/// [`within`]).
pub fn value_within(text: &[u8], budget: usize) -> bool {
    text.len().saturating_mul(DEAREST_BYTE) <= budget || value_cost(text) <= budget
}

/// Estimated peak heap bytes of parsing a decoded response or request body
/// the way the parsers will (`is_event_stream`: the response's content
/// type says SSE).
pub fn body_cost(body: &[u8], is_event_stream: bool) -> usize {
    if !is_stream(body, is_event_stream) {
        return value_cost(body);
    }
    let mut dearest = 0;
    sse::for_each_event(body, |ev| {
        dearest = dearest.max(value_cost(ev.data.as_bytes()));
    });
    body.len()
        .saturating_mul(STREAM_KEPT)
        .saturating_add(dearest)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_byte_costs_more_than_the_short_cut_assumes() {
        for b in 0..=255u8 {
            let text = vec![b; 64];
            assert!(value_cost(&text) <= text.len() * DEAREST_BYTE, "byte {b}");
        }
        let dense = "{".repeat(1000);
        let stream = format!("data: {dense}\n\n").repeat(10);
        for (text, sse) in [(dense.as_bytes(), false), (stream.as_bytes(), true)] {
            let cost = body_cost(text, sse);
            assert!(cost <= text.len() * DEAREST_BYTE);
            assert!(within(text, sse, cost) && !within(text, sse, cost - 1));
        }
        assert!(value_within(dense.as_bytes(), value_cost(dense.as_bytes())));
        assert!(!value_within(
            dense.as_bytes(),
            value_cost(dense.as_bytes()) - 1
        ));
        let plain = br#"{"a":"b"}"#;
        assert!(
            within(plain, false, plain.len() * DEAREST_BYTE),
            "short text is not scanned"
        );
    }

    #[test]
    fn dense_arrays_and_tiny_objects_cost_far_more_than_their_text() {
        let zeros = format!("[{}0]", "0,".repeat(1000));
        assert!(value_cost(zeros.as_bytes()) >= 1000 * VALUE);
        let objects = format!("[{}{{}}]", "{\"a\":0},".repeat(1000));
        assert!(value_cost(objects.as_bytes()) >= 1000 * OBJECT);
    }

    #[test]
    fn strings_cost_their_text_and_hide_their_punctuation() {
        let s = format!("\"{}\"", "{[:,0\\\"".repeat(1000));
        assert_eq!(value_cost(s.as_bytes()), s.len() + VALUE + STRING);
        assert_eq!(
            value_cost(b"12345.5e10"),
            10 + VALUE,
            "one number, one value"
        );
        assert_eq!(value_cost(b"[true,null]"), 11 + 3 * VALUE);
    }

    #[test]
    fn an_ordinary_chat_response_fits_a_small_multiple() {
        let body = include_bytes!("../../tests/fixtures/openai_chat/plain.json");
        let cost = value_cost(body);
        assert!(cost > body.len() && cost < 40 * body.len(), "{cost}");
    }

    #[test]
    fn a_stream_costs_its_dearest_event_plus_what_is_kept() {
        let mut s = String::new();
        for _ in 0..100 {
            s.push_str("data: {\"a\":1}\n\n");
        }
        let zeros = format!("[{}0]", "0,".repeat(99));
        s.push_str(&format!("data: {zeros}\n\n"));
        let cost = body_cost(s.as_bytes(), true);
        assert_eq!(cost, s.len() * STREAM_KEPT + value_cost(zeros.as_bytes()));
        // A body starting with `{` is JSON whatever its content type says.
        assert_eq!(body_cost(b"{\"a\":1}", true), value_cost(b"{\"a\":1}"));
    }

    #[test]
    fn streams_of_ever_new_indexes_keep_at_most_max_parts() {
        use crate::parse::common::{MAX_PARTS, MAX_SUBPARTS};
        let mut chat = String::new();
        let mut blocks = String::new();
        for i in 0..1000 {
            chat.push_str(&format!(
                "data: {{\"choices\":[{{\"index\":{i},\"delta\":{{\"content\":\"x\"}}}}]}}\n\n"
            ));
            chat.push_str(&format!("data: {{\"choices\":[{{\"index\":0,\"delta\":{{\"tool_calls\":[{{\"index\":{i},\"function\":{{\"arguments\":\"a\"}}}}]}}}}]}}\n\n"));
            blocks.push_str(&format!("event: content_block_start\ndata: {{\"type\":\"content_block_start\",\"index\":{i},\"content_block\":{{\"type\":\"text\",\"text\":\"\"}}}}\n\n"));
        }
        let out = crate::parse::openai_chat::parse(chat.as_bytes(), true);
        let v = out.response.expect("rebuilt");
        assert_eq!(v["choices"].as_array().map(Vec::len), Some(MAX_PARTS));
        let tools = &v["choices"][0]["message"]["tool_calls"];
        assert_eq!(tools.as_array().map(Vec::len), Some(MAX_SUBPARTS));
        let out = crate::parse::anthropic::parse(blocks.as_bytes(), true);
        let v = out.response.expect("rebuilt");
        assert_eq!(v["content"].as_array().map(Vec::len), Some(MAX_PARTS));
    }

    #[test]
    fn the_budget_scales_with_the_cap() {
        assert_eq!(parse_budget(1 << 20), PARSE_FACTOR << 20);
        assert_eq!(parse_budget(usize::MAX), usize::MAX);
    }
}
