//! OpenAI Responses API (`POST /v1/responses`): plain JSON or an SSE stream
//! of typed events, turned into an [`Outcome`].
//!
//! A plain body is a `response` object (or an `{"error": {...}}` body). Its
//! `status` is the finish reason, except that an `incomplete` response
//! reports `incomplete_details.reason` (e.g. `max_output_tokens`); a
//! `failed` response carries its `error` object.
//!
//! A stream is a sequence of `event: <type>` / `data: {"type": ...}` events
//! with no `[DONE]`: `response.created` and `response.in_progress` carry the
//! response skeleton, item and content events carry the output, and one
//! terminal `response.completed` / `response.failed` / `response.incomplete`
//! carries the complete response object, usage included. That terminal
//! object *is* the equivalent non-stream response and is used as is. When
//! the stream was cut before it, the response is rebuilt from the skeleton
//! plus the output items: finished items from `response.output_item.done`,
//! unfinished ones assembled from their text, refusal, reasoning and
//! function-call-argument deltas, keyed by `output_index`. If the terminal
//! object has an empty `output` while items were streamed (as a
//! `response.failed` may), the streamed items fill it, so partial output is
//! visible. Usage comes only from the terminal object; a cut stream has
//! none. Top-level `error` events (flat `code`/`message`, or a nested
//! `error` object) are reported as the error; malformed events are counted
//! and skipped.

mod rebuild;

use serde_json::Value;

use super::common::{dispatch, json_body, json_events, scalar_text, str_of};
use super::outcome::{Outcome, ProviderError, StreamFacts};
use super::sse::SseEvent;
use super::usage::Usage;
use rebuild::StreamAcc;

/// Parse a complete (non-stream) JSON response body.
pub fn parse_json(body: &[u8]) -> Outcome {
    let Some(v) = json_body(body) else {
        return Outcome::default();
    };
    Outcome {
        usage: v.get("usage").and_then(Usage::from_openai),
        finish_reasons: finish_reasons(&v),
        error: response_error(&v),
        ..Outcome::of_body(v)
    }
}

/// Parse a captured SSE stream of Responses-API events.
pub fn parse_stream(body: &[u8]) -> Outcome {
    let mut acc = StreamAcc::default();
    let mut facts = StreamFacts::default();
    let mut error = None;
    // There is no `[DONE]` (some compatible servers send one anyway): the
    // terminal event is the end.
    json_events(body, &mut facts, |facts, ev, v| {
        if let Some(err) = event_error(&v, ev) {
            error.get_or_insert(err);
        } else {
            facts.chunks += 1;
            acc.absorb(&v, ev, facts);
        }
    });
    let terminal = acc.terminal();
    let built = acc.build();
    let field = |key: &str| built.as_ref().and_then(|r| str_of(r.get(key)));
    Outcome {
        usage: terminal
            .and_then(|r| r.get("usage"))
            .and_then(Usage::from_openai),
        model: field("model"),
        response_id: field("id"),
        finish_reasons: match &built {
            Some(r) if terminal.is_some() => finish_reasons(r),
            _ => Vec::new(),
        },
        error: error.or_else(|| built.as_ref().and_then(response_error)),
        response: built.filter(|_| facts.chunks > 0),
        stream: Some(facts),
    }
}

/// Chooses by content: a body starting (after whitespace) with `{` is JSON;
/// otherwise it is SSE when `is_event_stream` or when it starts like an SSE
/// field (`data:`, `event:`, `id:`, `:`), else it is treated as (non-)JSON.
pub fn parse(body: &[u8], is_event_stream: bool) -> Outcome {
    dispatch(body, is_event_stream, parse_json, parse_stream)
}

/// `[incomplete_details.reason]` when present, else `[status]`.
fn finish_reasons(resp: &Value) -> Vec<String> {
    let reason = resp
        .get("incomplete_details")
        .and_then(|d| d.get("reason"))
        .and_then(Value::as_str)
        .filter(|r| !r.is_empty());
    let status = resp
        .get("status")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty());
    match (status, reason) {
        (Some("incomplete") | None, Some(reason)) => vec![reason.to_owned()],
        (Some(status), _) => vec![status.to_owned()],
        (None, None) => Vec::new(),
    }
}

/// The error of a response body: an `{"error": {...}}` body, a `failed`
/// response's `error` object, or vLLM's `{"object": "error", ...}`. A
/// `failed` response without an error object still reports a failure.
fn response_error(v: &Value) -> Option<ProviderError> {
    ProviderError::from_openai(v).or_else(|| {
        let failed = v.get("status").and_then(Value::as_str) == Some("failed");
        failed.then(|| ProviderError {
            message: "response failed".into(),
            kind: None,
        })
    })
}

/// A stream `error` event: `{"type":"error","code":..,"message":..}`, the
/// same with a nested `error` object, or a bare `{"error": {...}}` payload.
fn event_error(v: &Value, ev: &SseEvent) -> Option<ProviderError> {
    let kind = v
        .get("type")
        .and_then(Value::as_str)
        .or(ev.event.as_deref());
    let nested = v.get("error").filter(|e| !e.is_null());
    match (kind, nested) {
        (Some("error"), Some(e)) | (None, Some(e)) => Some(ProviderError::from_value(e)),
        // Flat form: `type` is the literal "error", so the kind is `code`.
        (Some("error"), None) => Some(ProviderError {
            message: str_of(v.get("message")).unwrap_or_else(|| v.to_string()),
            kind: scalar_text(v, &["code"]),
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests;
