//! Server-sent events as the client receives them: bytes may arrive split
//! or coalesced anywhere, so events are cut at blank lines (`\n\n` or
//! `\r\n\r\n`) from a bounded buffer, then classified per provider.

use memchr::memmem;

use crate::cli::Provider;

/// Largest event kept while waiting for its end.
const MAX_EVENT: usize = 1 << 20;

/// What an event means to the measurement.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A piece of the answer's text.
    Content,
    /// The stream's last event (`[DONE]`, `message_stop`).
    Done,
    Other,
}

/// Cuts a byte stream into events.
#[derive(Debug, Default)]
pub struct Events {
    buf: Vec<u8>,
}

impl Events {
    /// Feeds received bytes; calls `on_event` for each complete event.
    pub fn push(&mut self, bytes: &[u8], mut on_event: impl FnMut(&[u8])) -> Result<(), String> {
        self.buf.extend_from_slice(bytes);
        let mut start = 0;
        while let Some((end, sep)) = boundary(&self.buf[start..]) {
            on_event(&self.buf[start..start + end]);
            start += end + sep;
        }
        self.buf.drain(..start);
        if self.buf.len() > MAX_EVENT {
            return Err(format!("an SSE event over {MAX_EVENT} bytes"));
        }
        Ok(())
    }
}

/// The first blank line: (where the event ends, separator length).
fn boundary(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = memmem::find(buf, b"\n\n").map(|i| (i, 2));
    let crlf = memmem::find(buf, b"\r\n\r\n").map(|i| (i, 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

/// What an event is, by the provider's format.
pub fn classify(provider: Provider, event: &[u8]) -> Kind {
    match provider {
        Provider::Openai => {
            if memmem::find(event, b"data: [DONE]").is_some() {
                Kind::Done
            } else if has_text(event) {
                Kind::Content
            } else {
                Kind::Other
            }
        }
        Provider::Anthropic => {
            if memmem::find(event, b"\"type\":\"content_block_delta\"").is_some() {
                Kind::Content
            } else if memmem::find(event, b"\"type\":\"message_stop\"").is_some() {
                Kind::Done
            } else {
                Kind::Other
            }
        }
    }
}

/// A non-empty `"content":"..."` (the role chunk's is empty).
fn has_text(event: &[u8]) -> bool {
    const KEY: &[u8] = b"\"content\":\"";
    memmem::find_iter(event, KEY).any(|i| event.get(i + KEY.len()).is_some_and(|&b| b != b'"'))
}

#[cfg(test)]
mod tests {
    use super::*;

    const OPENAI: &[u8] =
        include_bytes!("../../../tests/fixtures/openai_chat/stream_include_usage.sse");
    const ANTHROPIC: &[u8] = include_bytes!("../../../tests/fixtures/anthropic/stream_text.sse");

    fn kinds(provider: Provider, bytes: &[u8], split: usize) -> Vec<Kind> {
        let mut events = Events::default();
        let mut out = Vec::new();
        for piece in bytes.chunks(split) {
            events
                .push(piece, |e| out.push(classify(provider, e)))
                .unwrap();
        }
        out
    }

    #[test]
    fn recorded_streams_in_any_split() {
        for split in [1, 7, 100, 1 << 20] {
            let k = kinds(Provider::Openai, OPENAI, split);
            assert_eq!(k.iter().filter(|k| **k == Kind::Content).count(), 7);
            assert_eq!(k.last(), Some(&Kind::Done));
            let k = kinds(Provider::Anthropic, ANTHROPIC, split);
            assert_eq!(k.iter().filter(|k| **k == Kind::Content).count(), 3);
            assert_eq!(k.last(), Some(&Kind::Done));
        }
    }

    #[test]
    fn crlf_boundaries_and_a_bound() {
        let crlf =
            b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\r\n\r\ndata: [DONE]\r\n\r\n";
        assert_eq!(
            kinds(Provider::Openai, crlf, 5),
            [Kind::Content, Kind::Done]
        );
        let mut events = Events::default();
        assert!(events.push(&vec![b'x'; MAX_EVENT + 1], |_| {}).is_err());
    }
}
