//! The span handoff: the spans a sink's spool took most recently, kept as
//! spans for that sink's delivery task, so that a caught-up delivery sends
//! them without decoding them back from the spool's bytes (decoding was
//! ~5 % of a traced call's CPU).
//!
//! Like the spool's tail ([`super::spool`]) it is a cache, never a source:
//! a span enters only once its record is appended, the delivery task takes
//! a span only for the exact record id its spool read handed out (the span
//! the record's bytes encode), and anything evicted, skipped or handed out
//! again after a failed send is decoded from the bytes as before. Bounded by
//! the spans' encoded size ([`HANDOFF_BYTES`] per sink); nothing is kept
//! across a restart.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::trace::v1::Span;

use super::batch::Weight;
use super::spool::RecordId;

/// Encoded span bytes a sink's handoff keeps at most (the spans themselves
/// take a few times that: see [`crate::memory_bound`]). As much as the
/// spool's tail keeps: a delivery task reads a batch's records some time
/// after they were written (it lets a partial batch fill for a while), and
/// a smaller handoff would have let the older half of a busy batch go
/// (measured: 1 MiB took the decoding from 5.3 % of a traced call's CPU
/// only to 3.2 %).
pub const HANDOFF_BYTES: usize = super::spool::TAIL_BYTES;

/// A sink's handoff, shared by the parse workers and its delivery task.
pub type SharedHandoff = Arc<Mutex<Handoff>>;

/// Spans by record id, oldest first.
pub struct Handoff {
    entries: VecDeque<(RecordId, Span, usize)>,
    bytes: usize,
    max_bytes: usize,
}

impl Handoff {
    /// An empty handoff keeping at most `max_bytes` of encoded spans.
    pub fn bounded(max_bytes: usize) -> Self {
        Handoff {
            entries: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// A shared handoff of [`HANDOFF_BYTES`].
    pub fn shared() -> SharedHandoff {
        Arc::new(Mutex::new(Handoff::bounded(HANDOFF_BYTES)))
    }

    /// Keeps the span record `id` holds (ids arrive in append order); the
    /// oldest go beyond the bound, and a span over a quarter of it is not
    /// kept.
    pub fn push(&mut self, id: RecordId, span: Span) {
        let len = span.weight();
        if len > self.max_bytes / 4 {
            return;
        }
        while self.bytes + len > self.max_bytes {
            let Some((_, _, old)) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= old;
        }
        self.bytes += len;
        self.entries.push_back((id, span, len));
    }

    /// The span of record `id`, if kept; spans of records before it are
    /// dropped on the way (their records were read, and will be decoded if
    /// handed out again).
    pub fn take(&mut self, id: RecordId) -> Option<Span> {
        while let Some((front, ..)) = self.entries.front() {
            if *front > id {
                return None;
            }
            let (front, span, len) = self.entries.pop_front()?;
            self.bytes -= len;
            if front == id {
                return Some(span);
            }
        }
        None
    }

    #[cfg(test)]
    pub fn kept(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prost::Message;

    fn span(n: u8, name_len: usize) -> Span {
        Span {
            span_id: vec![n; 8],
            name: "x".repeat(name_len),
            ..Span::default()
        }
    }

    fn id(offset: u32) -> RecordId {
        RecordId::at(1, offset)
    }

    #[test]
    fn hands_out_only_the_span_of_the_exact_record() {
        let mut h = Handoff::bounded(1 << 20);
        for k in 0..4 {
            h.push(id(16 + k * 100), span(k as u8, 10));
        }
        assert!(
            h.take(id(15)).is_none(),
            "before the first: nothing, nothing dropped"
        );
        assert_eq!(h.kept(), 4);
        assert!(
            h.take(id(17)).is_none(),
            "not a kept record: the one before it goes"
        );
        assert_eq!(h.kept(), 3);
        assert_eq!(h.take(id(216)).map(|s| s.span_id), Some(vec![2; 8]));
        assert_eq!(h.kept(), 1, "taken, and the skipped one dropped");
        assert!(
            h.take(id(116)).is_none(),
            "a record read again is decoded, not taken"
        );
        assert_eq!(h.take(id(316)).map(|s| s.span_id), Some(vec![3; 8]));
        assert_eq!(h.kept(), 0);
    }

    #[test]
    fn stays_within_its_bound_and_skips_large_spans() {
        let one = span(0, 100).encoded_len();
        let mut h = Handoff::bounded(one * 5);
        for k in 0..10 {
            h.push(id(16 + k), span(k as u8, 100));
        }
        assert_eq!(h.kept(), 5, "the newest five");
        assert!(h.take(id(16)).is_none(), "evicted");
        h.push(id(1000), span(9, one * 2));
        assert_eq!(h.kept(), 5, "over a quarter of the bound: not kept");
        assert!(h.take(id(21)).is_some());
    }
}
