//! Response parsers: pure functions that turn captured upstream bytes into facts.
//!
//! Nothing in here does I/O, spawns tasks or panics on malformed input; every
//! function takes a byte slice (or an incremental decoder is fed chunks) and
//! returns plain data. The layers are:
//!
//! - [`budget`]: the parse budget — a body whose `Value`s would cost more
//!   than a multiple of the capture cap is not parsed.
//! - [`decode`]: undo `Content-Encoding` (gzip, deflate, br, zstd, comma
//!   lists) on a captured, possibly truncated body copy, with a size cap.
//! - [`sse`]: incremental Server-Sent Events decoder (WHATWG rules) that
//!   also reports each event's byte range in the stream.
//! - [`usage`]: provider token-usage objects normalised to [`Usage`] and
//!   rendered as MLflow's `mlflow.chat.tokenUsage` attribute.
//! - [`openai_chat`]: OpenAI Chat Completions responses, plain JSON or SSE
//!   stream, reconstructed into one `chat.completion` object
//!   ([`Outcome`]).
//! - [`openai_responses`]: OpenAI Responses API, plain JSON or typed-event
//!   stream (the terminal event's response, or one rebuilt from the items).
//! - [`openai_completions`]: legacy OpenAI Completions, plain JSON or SSE
//!   stream, reconstructed into one `text_completion` object.
//! - [`openai_embeddings`]: OpenAI Embeddings, with the vectors replaced by
//!   short placeholders.
//! - [`anthropic`]: Anthropic Messages responses, plain JSON or SSE stream,
//!   reconstructed into one `message` object ([`Outcome`]).
//! - [`outcome`]: the [`Outcome`] every response parser returns.
//!
//! Internally, `common` holds what every response parser shares (the
//! JSON-or-SSE choice, reading a body, walking a stream's JSON events), and
//! `choices` the stream merging that Chat Completions and legacy Completions
//! share.

pub mod anthropic;
pub mod budget;
mod choices;
mod common;
pub mod decode;
pub mod openai_chat;
pub mod openai_completions;
pub mod openai_embeddings;
pub mod openai_responses;
pub mod outcome;
pub mod sse;
pub mod usage;
mod value;

#[cfg(test)]
mod test_support;

pub use outcome::{Outcome, ProviderError, StreamFacts};
pub use usage::Usage;
