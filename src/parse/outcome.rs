//! The common result of every response parser: what the tracer needs from
//! one response, whatever API produced it.

use serde_json::Value;

use super::usage::Usage;

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

/// An error object reported by the provider.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ProviderError {
    /// `error.message`, or the error JSON text when there is none.
    pub message: String,
    /// `error.type`, falling back to `error.code`.
    pub kind: Option<String>,
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
