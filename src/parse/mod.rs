//! Response parsers: pure functions that turn captured upstream bytes into facts.
//!
//! Nothing in here does I/O, spawns tasks or panics on malformed input; every
//! function takes a byte slice (or an incremental decoder is fed chunks) and
//! returns plain data. The layers are:
//!
//! - [`decode`]: undo `Content-Encoding` (gzip, deflate, br, zstd, comma
//!   lists) on a captured, possibly truncated body copy, with a size cap.
//! - [`sse`]: incremental Server-Sent Events decoder (WHATWG rules) that
//!   also reports each event's byte range in the stream.
//! - [`usage`]: provider token-usage objects normalised to [`Usage`] and
//!   rendered as MLflow's `mlflow.chat.tokenUsage` attribute.
//! - [`openai_chat`]: OpenAI Chat Completions responses, plain JSON or SSE
//!   stream, reconstructed into one `chat.completion` object
//!   ([`Outcome`]).
//! - [`outcome`]: the [`Outcome`] every response parser returns.

pub mod decode;
pub mod openai_chat;
pub mod outcome;
pub mod sse;
pub mod usage;

pub use outcome::{Outcome, ProviderError, StreamFacts};
pub use usage::Usage;
