//! A segment's in-memory bookkeeping, file names, and the acknowledged-range
//! set loaded from its ack file.

use std::path::{Path, PathBuf};

use super::record::FILE_HEADER_LEN;

/// What a file in the spool directory is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(super) enum Kind {
    Segment,
    Acks,
}

pub(super) fn segment_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("seg-{seq:020}.spool"))
}

pub(super) fn acks_path(dir: &Path, seq: u64) -> PathBuf {
    dir.join(format!("seg-{seq:020}.acks"))
}

/// `seg-<20 digits>.spool` or `.acks`; anything else is not ours.
pub(super) fn parse_name(name: &str) -> Option<(u64, Kind)> {
    let rest = name.strip_prefix("seg-")?;
    let (digits, kind) = if let Some(d) = rest.strip_suffix(".spool") {
        (d, Kind::Segment)
    } else {
        (rest.strip_suffix(".acks")?, Kind::Acks)
    };
    if digits.len() != 20 || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((digits.parse().ok()?, kind))
}

/// One segment file and its ack file, as the spool tracks them.
#[derive(Debug)]
pub(super) struct Segment {
    pub(super) seq: u64,
    /// Where the readable data ends: bytes written (this process) or the
    /// file's length when opened.
    pub(super) end: u64,
    /// Bytes the segment file occupies (may exceed `end` after a failed write).
    pub(super) disk_len: u64,
    /// Bytes its ack file occupies; 0 when there is none.
    pub(super) acks_len: u64,
    /// No longer the write head; never appended to again.
    pub(super) sealed: bool,
    /// Where the forward read pass continues in this segment.
    pub(super) read_off: u64,
    /// Damage before this offset was counted already (by the open scan).
    pub(super) counted_to: u64,
    /// Records acknowledged by an earlier process, which the read pass skips.
    /// Emptied once the read pass is past the segment.
    pub(super) acked: RangeSet,
    /// Valid records not yet acknowledged.
    pub(super) pending: u64,
    /// Records handed out (in flight or awaiting redelivery), not acknowledged.
    pub(super) outstanding: u64,
}

impl Segment {
    /// A fresh write head whose header has been written.
    pub(super) fn head(seq: u64) -> Self {
        Segment {
            seq,
            end: FILE_HEADER_LEN,
            disk_len: FILE_HEADER_LEN,
            acks_len: 0,
            sealed: false,
            read_off: FILE_HEADER_LEN,
            counted_to: FILE_HEADER_LEN,
            acked: RangeSet::default(),
            pending: 0,
            outstanding: 0,
        }
    }

    /// Sealed and read to its end: nothing in it will be handed out for the
    /// first time again.
    pub(super) fn drained(&self) -> bool {
        self.sealed && self.read_off >= self.end
    }

    /// Drained with nothing awaiting acknowledgement: its files may go.
    pub(super) fn deletable(&self) -> bool {
        self.drained() && self.outstanding == 0
    }

    pub(super) fn bytes(&self) -> u64 {
        self.disk_len + self.acks_len
    }
}

/// Sorted, disjoint, non-adjacent half-open `u32` ranges. Records acked in
/// order merge into one range, so this stays small whatever the backlog.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(super) struct RangeSet {
    ranges: Vec<(u32, u32)>,
}

impl RangeSet {
    pub(super) fn insert(&mut self, start: u32, end: u32) {
        if start >= end {
            return;
        }
        // The first range that ends at or after `start` (touching merges).
        let i = self.ranges.partition_point(|r| r.1 < start);
        let mut j = i;
        let (mut lo, mut hi) = (start, end);
        while j < self.ranges.len() && self.ranges[j].0 <= end {
            lo = lo.min(self.ranges[j].0);
            hi = hi.max(self.ranges[j].1);
            j += 1;
        }
        self.ranges.splice(i..j, [(lo, hi)]);
    }

    pub(super) fn contains(&self, x: u32) -> bool {
        let i = self.ranges.partition_point(|r| r.1 <= x);
        i < self.ranges.len() && self.ranges[i].0 <= x
    }

    pub(super) fn ranges(&self) -> &[(u32, u32)] {
        &self.ranges
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ranges.is_empty()
    }
}
