//! The spool's tail in memory: the records this process appended most
//! recently, kept (bounded) so that the read pass hands them out without
//! reading the file back. A caught-up reader — the usual case — then costs
//! no read syscall, no buffer fill and no checksum per record.
//!
//! The file stays the truth: a record enters the tail only once its append
//! (and, with `fsync = "always"`, its sync) succeeded, so what the tail hands
//! out is byte for byte what is on disk. The tail is a cache, never a
//! source: an evicted or skipped record is read from the file as before, and
//! the reader takes a record from it only at the exact place its read pass
//! has reached. Nothing is kept across a restart.

use std::collections::VecDeque;

use super::RecordId;

/// Bytes of payload the tail keeps at most, per spool (the exchange journal
/// and each sink's spool: see [`crate::memory_bound`]).
pub const TAIL_BYTES: usize = 4 << 20;

/// One appended record: where it is, where the next one starts, when it was
/// written and its payload.
pub(super) struct Entry {
    pub id: RecordId,
    pub next: u64,
    pub written_ms: u64,
    pub payload: Vec<u8>,
}

/// The most recent appends, oldest first, at most [`TAIL_BYTES`] of payload.
pub(super) struct Tail {
    entries: VecDeque<Entry>,
    bytes: usize,
    max_bytes: usize,
}

impl Tail {
    /// An empty tail that keeps at most `max_bytes` of payload.
    pub fn bounded(max_bytes: usize) -> Self {
        Tail {
            entries: VecDeque::new(),
            bytes: 0,
            max_bytes,
        }
    }

    /// Whether a payload of `len` bytes would be kept: records over a
    /// quarter of the bound are read back from the file instead.
    pub fn keeps(&self, len: usize) -> bool {
        len <= self.max_bytes / 4
    }

    /// Keeps an appended record, evicting the oldest beyond the bound (see
    /// [`Tail::keeps`]).
    pub fn push(&mut self, entry: Entry) {
        let len = entry.payload.len();
        if !self.keeps(len) {
            return;
        }
        while self.bytes + len > self.max_bytes {
            let Some(old) = self.entries.pop_front() else {
                break;
            };
            self.bytes -= old.payload.len();
        }
        self.bytes += len;
        self.entries.push_back(entry);
    }

    /// The record at `at` in `segment`, if the tail has it; entries behind
    /// that place (already read from the file) are dropped on the way.
    pub fn front_at(&mut self, segment: u64, at: u64) -> Option<&Entry> {
        while let Some(e) = self.entries.front() {
            let behind = (e.id.segment, u64::from(e.id.offset)) < (segment, at);
            if !behind {
                break;
            }
            self.pop();
        }
        self.entries
            .front()
            .filter(|e| e.id.segment == segment && u64::from(e.id.offset) == at)
    }

    /// Removes and returns the oldest entry.
    pub fn pop(&mut self) -> Option<Entry> {
        let e = self.entries.pop_front()?;
        self.bytes -= e.payload.len();
        Some(e)
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(segment: u64, offset: u32, len: usize) -> Entry {
        Entry {
            id: RecordId { segment, offset },
            next: u64::from(offset) + 24 + len as u64,
            written_ms: 1,
            payload: vec![7; len],
        }
    }

    #[test]
    fn hands_out_only_the_record_at_the_exact_place() {
        let mut t = Tail::bounded(1000);
        t.push(entry(1, 16, 10));
        t.push(entry(1, 50, 10));
        assert!(t.front_at(1, 17).is_none(), "not a record boundary");
        // Reading past 16 (from the file) drops that entry.
        assert_eq!(t.front_at(1, 50).map(|e| e.id.offset), Some(50));
        assert_eq!(t.len(), 1);
        assert!(t.front_at(2, 16).is_none());
        assert_eq!(t.len(), 0, "a later segment's read drops what is behind it");
    }

    #[test]
    fn stays_within_its_bound_and_skips_large_records() {
        let mut t = Tail::bounded(100);
        for i in 0..10 {
            t.push(entry(1, 16 + i * 50, 20));
        }
        assert_eq!(t.len(), 5, "five 20-byte payloads fit in 100 bytes");
        assert_eq!(t.front_at(1, 16 + 5 * 50).map(|e| e.id.offset), Some(266));
        t.push(entry(1, 10_000, 60));
        assert_eq!(
            t.len(),
            5,
            "a record over a quarter of the bound is not kept"
        );
    }
}
