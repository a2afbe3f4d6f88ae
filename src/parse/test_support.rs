//! What the response parsers' unit tests share: the recorded fixtures, the
//! parts of an [`Outcome`] they look at, SSE bodies built from JSON values,
//! and the checks every parser must pass on any input.

use serde_json::Value;

use super::outcome::{Outcome, StreamFacts};

/// The bytes of `tests/fixtures/<api>/<name>`, embedded at compile time (so
/// usable in a `const`).
macro_rules! fixture {
    ($api:literal, $name:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/tests/fixtures/",
            $api,
            "/",
            $name
        ))
        .as_slice()
    };
}
pub(crate) use fixture;

pub(crate) fn facts(o: &Outcome) -> &StreamFacts {
    o.stream.as_ref().expect("stream facts")
}

pub(crate) fn response(o: &Outcome) -> &Value {
    o.response.as_ref().expect("response")
}

/// `(input, output, total)` tokens of the outcome's usage.
pub(crate) fn tokens(o: &Outcome) -> (u64, u64, u64) {
    let u = o.usage.expect("usage");
    (u.input_tokens, u.output_tokens, u.total_tokens)
}

/// `(cache_read_input, reasoning)` tokens of the outcome's usage.
pub(crate) fn cached_and_reasoning(o: &Outcome) -> (Option<u64>, Option<u64>) {
    let u = o.usage.expect("usage");
    (u.cache_read_input_tokens, u.reasoning_tokens)
}

/// An SSE body with one `data:` event per chunk.
pub(crate) fn data_events(chunks: &[Value]) -> String {
    chunks.iter().map(|c| format!("data: {c}\n\n")).collect()
}

/// An SSE body with one event per value, named by its `type` field.
pub(crate) fn typed_events(events: &[Value]) -> String {
    events
        .iter()
        .map(|e| format!("event: {}\ndata: {e}\n\n", e["type"].as_str().unwrap_or("")))
        .collect()
}

/// A body that is not JSON, or JSON cut short, gives the empty outcome.
pub(crate) fn assert_not_json(parse: fn(&[u8], bool) -> Outcome, parse_json: fn(&[u8]) -> Outcome) {
    assert_eq!(
        parse(b"<html>502 Bad Gateway</html>", false),
        Outcome::default()
    );
    assert_eq!(parse_json(b"{\"id\": \"trunc"), Outcome::default());
}

/// `parse` chooses by content: `json` (a JSON body) is JSON under an
/// event-stream content type, `sse` (a stream) a stream under any other, and
/// an empty event-stream body an empty stream.
pub(crate) fn assert_choice_by_content(parse: fn(&[u8], bool) -> Outcome, json: &[u8], sse: &[u8]) {
    assert!(parse(json, true).stream.is_none());
    assert!(parse(sse, false).stream.is_some());
    assert_eq!(parse(b"", true).stream, Some(StreamFacts::default()));
}

/// `parse` takes any bytes, as JSON and as a stream, without panicking, and
/// the stream offsets it reports lie within them.
pub(crate) fn parse_any(parse: fn(&[u8], bool) -> Outcome, bytes: &[u8]) {
    for is_event_stream in [false, true] {
        let Some(f) = parse(bytes, is_event_stream).stream else {
            continue;
        };
        assert!(f.first_token_offset.is_none_or(|off| off <= bytes.len()));
        assert!(f
            .usage_only_chunk
            .is_none_or(|(start, end)| start <= end && end <= bytes.len()));
    }
}
