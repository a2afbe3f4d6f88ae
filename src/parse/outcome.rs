//! The common result of every response parser: what the tracer needs from
//! one response, whatever API produced it.

use serde_json::Value;

use super::usage::Usage;
use super::value::{scalar_text, str_of};

/// Everything the tracer needs from one response, whatever its API.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Outcome {
    /// The response body as JSON; for a stream, the reconstructed
    /// equivalent non-stream response object of the same API. `None` when the body
    /// is not JSON at all / no chunk parsed.
    pub response: Option<Value>,
    /// `None` when the provider reported none.
    pub usage: Option<Usage>,
    pub model: Option<String>,
    pub response_id: Option<String>,
    /// Per choice, in index order, only those present.
    pub finish_reasons: Vec<String>,
    /// Provider-reported error (`{"error":{...}}` body or stream event).
    pub error: Option<ProviderError>,
    /// `Some` when the body was parsed as a stream.
    pub stream: Option<StreamFacts>,
}

impl Outcome {
    /// The outcome of a plain JSON body: the body itself as the response,
    /// its top-level `model` and `id`; the rest left empty for the caller.
    pub(crate) fn of_body(v: Value) -> Self {
        Outcome {
            model: str_of(v.get("model")),
            response_id: str_of(v.get("id")),
            response: Some(v),
            ..Outcome::default()
        }
    }
}

/// An error object reported by the provider.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProviderError {
    /// `error.message`, or the error JSON text when there is none.
    pub message: String,
    /// `error.type`, falling back to `error.code`.
    pub kind: Option<String>,
}

impl ProviderError {
    /// An error object (`message`, and `type` or else `code` as the kind) or
    /// an error string, whatever the API.
    pub(crate) fn from_value(err: &Value) -> Self {
        if let Some(text) = err.as_str() {
            return ProviderError {
                message: text.to_owned(),
                kind: None,
            };
        }
        ProviderError {
            message: str_of(err.get("message")).unwrap_or_else(|| err.to_string()),
            kind: scalar_text(err, &["type", "code"]),
        }
    }

    /// The OpenAI-style error of a body or stream chunk: `{"error": {...}}` /
    /// `{"error": "text"}`, or vLLM's flat `{"object": "error", ...}`.
    pub(crate) fn from_openai(v: &Value) -> Option<Self> {
        match v.get("error") {
            Some(e) if !e.is_null() => Some(Self::from_value(e)),
            _ if v.get("object").and_then(Value::as_str) == Some("error") => {
                Some(Self::from_value(v))
            }
            _ => None,
        }
    }
}

/// Facts about the stream framing itself.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct StreamFacts {
    /// Data events parsed as JSON chunks (error events not counted).
    pub chunks: usize,
    /// The stream's end marker was seen (`data: [DONE]` for OpenAI chat and
    /// completions, `response.completed`/`failed`/`incomplete` for Responses,
    /// `message_stop` for Anthropic).
    pub saw_end: bool,
    /// `SseEvent::start` of the first chunk carrying non-empty content,
    /// refusal, or a tool-call delta.
    pub first_token_offset: Option<usize>,
    /// Data events that were not valid JSON objects (never fatal).
    pub bad_events: usize,
    /// Byte range of OpenAI's usage-only chunk event (`choices: []` + usage).
    pub usage_only_chunk: Option<(usize, usize)>,
}
