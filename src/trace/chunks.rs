//! `mlflow.chunk.item.N` span events: one per streamed chunk, as MLflow's
//! OpenAI autologging records them (`mlflow/openai/autolog.py`
//! `_add_span_event`; names and key from `mlflow/tracing/constant.py`
//! `STREAM_CHUNK_EVENT_NAME_FORMAT` / `STREAM_CHUNK_EVENT_VALUE_KEY`).
//!
//! Autolog's value is `json.dumps` of the SDK's chunk object, which carries
//! every field the SDK models (nulls included); llmtap's is the provider's
//! `data:` payload in the same `json.dumps` style — the same chunk without
//! the SDK-only nulls. Anthropic's autologging records no chunk events.
//!
//! Off by default: `[trace] chunk_events` / `LLMTAP_CHUNK_EVENTS` turns it
//! on, and the parse worker then calls [`attach`] on the span
//! [`crate::trace::build`] made (see docs/autolog-fidelity.md for the cost:
//! ~600 bytes per chunk). At most [`MAX_EVENTS`] per span. Pure.

use crate::exchange::Exchange;
use crate::parse::sse;
use crate::record::{SpanEvent, SpanRecord};
use crate::route::Api;
use crate::trace::pyjson;

/// The most chunk events one span carries (~600 KB of them); the chunks
/// past it are still in the reconstructed output, just not as events.
pub const MAX_EVENTS: usize = 1000;

/// The event name of chunk `n`.
pub fn name(n: usize) -> String {
    format!("mlflow.chunk.item.{n}")
}

/// The event attribute holding the chunk.
pub const VALUE_KEY: &str = "mlflow.chunk.value";

/// Whether the API's autologging records chunk events.
pub fn recorded(api: Api) -> bool {
    matches!(
        api,
        Api::ChatCompletions | Api::Responses | Api::Completions
    )
}

/// Adds the chunk events of `ex`'s streamed response to its span, before
/// any event already there (autolog records the chunks, then the
/// exception). Each event is timed by the arrival of its first byte; a
/// compressed stream's events (offsets into the decoded text) get the
/// span's end. `cap` is the capture cap. Nothing for a body that is not an
/// event stream, or an API whose autologging records no chunks.
pub fn attach(span: &mut SpanRecord, ex: &Exchange, cap: usize) {
    let Some(body) = &ex.response else {
        return;
    };
    if !(recorded(ex.api) || ex.api == Api::Invocations) || !super::is_event_stream(body) {
        return;
    }
    let decoded = super::decode(body, cap);
    let end = span.end_unix_nano;
    let time_of = |offset: usize| match decoded.encoded {
        true => end,
        false => body
            .capture
            .arrival_of(offset as u64)
            .map_or(end, |at| super::unix_nanos(ex, at)),
    };
    let chunks = events(&decoded.text, MAX_EVENTS, time_of);
    span.events.splice(0..0, chunks);
}

/// The chunk events of a captured SSE body: one per `data:` payload that is
/// JSON (`[DONE]` and comments are not chunks), numbered from 0, at most
/// `max` of them; `time_of(offset)` gives the Unix-nanosecond arrival of
/// the byte at `offset` (the event's first byte).
pub fn events(body: &[u8], max: usize, time_of: impl Fn(usize) -> u64) -> Vec<SpanEvent> {
    let mut out = Vec::new();
    sse::for_each_event(body, |ev| {
        if out.len() >= max {
            return;
        }
        if is_error(&ev.data) {
            return;
        }
        let Some(value) = pyjson::dumps(&ev.data) else {
            return;
        };
        out.push(SpanEvent {
            name: name(out.len()),
            time_unix_nano: time_of(ev.start),
            attributes: vec![(VALUE_KEY.to_string(), value.into())],
        });
    });
    out
}

/// An error event (`{"error": {...}}`): the openai SDK raises on it
/// (`_streaming.py`) instead of yielding a chunk, so autolog has no event.
fn is_error(data: &str) -> bool {
    data.contains("\"error\"")
        && serde_json::from_str::<serde_json::Value>(data)
            .ok()
            .and_then(|v| v.get("error").map(|e| !e.is_null()))
            .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::AttrValue;

    fn fixture(path: &str) -> Vec<u8> {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/");
        std::fs::read(format!("{dir}{path}")).unwrap_or_else(|e| panic!("{path}: {e}"))
    }

    fn value(ev: &SpanEvent) -> serde_json::Value {
        let [(key, AttrValue::Str(text))] = &ev.attributes[..] else {
            panic!("{ev:?}");
        };
        assert_eq!(key, VALUE_KEY);
        serde_json::from_str(text).unwrap()
    }

    #[test]
    fn one_event_per_chunk_named_and_shaped_as_autolog() {
        // stream_basic.sse is what autolog's chat_stream saw
        // (tests/fixtures/autolog/mlflow-3.17.2.json): 11 chunks, then [DONE].
        let body = fixture("openai_chat/stream_basic.sse");
        let evs = events(&body, 1000, |offset| offset as u64);
        assert_eq!(evs.len(), 11);
        assert_eq!(evs[0].name, "mlflow.chunk.item.0");
        assert_eq!(evs[10].name, "mlflow.chunk.item.10");
        assert_eq!(evs[0].time_unix_nano, 0);
        assert!(evs[1].time_unix_nano > evs[0].time_unix_nano);
        assert_eq!(value(&evs[1])["choices"][0]["delta"]["content"], "Hello");
        assert_eq!(value(&evs[10])["choices"][0]["finish_reason"], "stop");
        // json.dumps style, the payload's own key order.
        let AttrValue::Str(text) = &evs[0].attributes[0].1 else {
            unreachable!()
        };
        assert!(text.starts_with(r#"{"id": "chatcmpl-"#), "{text}");
    }

    #[test]
    fn capped_and_only_for_openai_streams() {
        let body = fixture("openai_chat/stream_basic.sse");
        assert_eq!(events(&body, 3, |_| 0).len(), 3);
        assert!(events(b"data: [DONE]\n\n: comment\n\n", 10, |_| 0).is_empty());
        assert!(recorded(Api::ChatCompletions) && recorded(Api::Responses));
        assert!(!recorded(Api::Messages) && !recorded(Api::Embeddings));
    }
}
