//! A durable disk spool between the parse workers and the sinks: append-only
//! segment files of checksummed records, replayed on open, deleted once every
//! record in them has been acknowledged by a sink.
//!
//! # Layout
//!
//! The spool directory holds `seg-<20-digit sequence>.spool` segment files
//! and, beside some of them, `seg-<sequence>.acks` ack files (byte layout in
//! [`record`]). The highest-numbered unsealed segment is the *write head*;
//! every other segment is *sealed*. Opening a spool seals everything already
//! on disk: a process only ever appends to segments it created itself.
//!
//! A [`RecordId`] is a segment's sequence and the record's byte offset in it.
//! Offsets, unlike ordinals, stay the same when damage makes a scan skip
//! records, so ids (and persisted acks) mean the same thing to every process.
//!
//! # Invariants
//!
//! 1. **A record is either complete and checksummed, or detected as torn.**
//!    Every record is `[len][crc32(body)][body]`, written with one append
//!    (a group commit's records bound for one segment share one append:
//!    [`joint`]; a failed one is cut back to where the group began).
//!    The reader believes a record only when its length fits the data and its
//!    checksum matches; anything else is a damaged region.
//! 2. **A damaged region is skipped and counted, never a panic.** A torn tail,
//!    a flipped byte, zeroed pages: the scanner skips to the next valid record
//!    (by the stated length when only the body is bad, else by resyncing byte
//!    by byte) and `records_corrupt_skipped` / `bytes_corrupt_skipped` count
//!    it, once per region and per process (the open scan counts what is on
//!    disk; later reads count only damage it did not see). No file content can
//!    make the spool panic or allocate more than one record's bytes.
//! 3. **A segment file is deleted only when it is sealed, the read pass has
//!    passed its end, and every record handed out from it has been acked.**
//!    A damaged record cannot be acked, so it does not keep its segment alive.
//!    The segment file goes first, its ack file second: a crash in between
//!    leaves an orphan ack file, which the next open removes.
//! 4. **Replay hands out every unacked record exactly once per process
//!    lifetime** (unless [`Spool::nack`]ed back): the read pass moves forward
//!    only, and records behind it are in flight or queued for redelivery.
//!    Across crashes delivery is at least once: an ack lost in a crash means
//!    its record is sent again, which the sink's upsert makes harmless.
//! 5. **Acks survive restarts.** [`Spool::ack`] appends the acked byte ranges
//!    (coalesced: in-order acks collapse to one range) as one checksummed
//!    record to the segment's ack file. On open they are loaded and replay
//!    skips them. A torn or corrupt ack record is skipped like any damaged
//!    record: its records are resent, never lost. A segment whose records are
//!    all acked is deleted, not given an ack record.
//! 6. **Memory is bounded whatever the backlog.** Records are read back in
//!    [`Spool::next_batch`]es bounded by count and bytes, through a 64 KiB
//!    buffer (larger only for a larger record). Per segment the spool keeps a
//!    few counters and the ranges acked by an earlier process (in-order acks
//!    make that one range); per record, a few dozen bytes of metadata, and
//!    only for records the caller holds (in flight or nacked).
//! 7. **After a failed write the spool stays consistent.** The failed append
//!    returns an error (the caller counts the loss); the partial bytes are
//!    truncated away when the disk allows, and the head is sealed either way,
//!    so the next append starts a fresh segment and a leftover partial record
//!    is a torn tail that the next open skips and counts. A record whose
//!    append failed is never handed out by this process.
//! 8. **Size cap.** An append never takes the bytes on disk (segments and
//!    ack files) past `max_bytes`: one that would is refused with
//!    [`SpoolError::Full`] and counted in `records_dropped_full`. Ack records
//!    (8 bytes per coalesced range) are always written; they are what frees
//!    space.
//!
//! # Durability
//!
//! Appends go straight to the file (no user-space buffer), so once `append`
//! returns `Ok` the record survives the process being killed (`kill -9`) in
//! either mode. What survives a power loss or kernel crash depends on `fsync`:
//!
//! - [`Fsync::Always`]: `append` returns `Ok` only after the record has been
//!   `fdatasync`ed (and a new segment's directory entry synced). An acked
//!   write survives power loss, given a disk that honours flushes. A failed
//!   fsync fails the append: the record is truncated away and the head sealed
//!   (if the truncation fails too the record may reappear after a restart and
//!   be delivered, an extra rather than a loss).
//! - [`Fsync::Interval`]: data is synced by [`Spool::flush`], which the owner
//!   calls every interval and at shutdown, and by an `append` that finds the
//!   interval elapsed. A power loss loses at most the records appended since
//!   the last successful flush, roughly one interval's worth; what it cuts
//!   short is a torn tail, skipped on open. A failed flush is returned and
//!   seals the head; its records are still delivered by this process.
//!
//! Ack files are synced by `flush` in both modes but never on their own: a
//! lost ack only means a duplicate delivery.

mod ack;
mod fs;
pub mod group;
mod joint;
mod open;
mod read;
mod record;
mod scan;
mod segment;
mod tail;
mod write;

#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io;
use std::path::PathBuf;
use std::time::{Duration, Instant};

pub use fs::{RealFs, SpoolFs};
pub use record::MAX_PAYLOAD;
use segment::Segment;
pub use tail::TAIL_BYTES;

/// When appended records are made durable.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// Before `append` returns.
    Always,
    /// At most this long after `append` returns (see the module notes).
    Interval(Duration),
}

/// A spool's settings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpoolConfig {
    pub dir: PathBuf,
    pub fsync: Fsync,
    /// Cap on bytes on disk; appends beyond it fail with [`SpoolError::Full`].
    pub max_bytes: u64,
    /// A segment is sealed once it would grow past this (clamped to
    /// 4 KiB..=1 GiB and to at most half of `max_bytes`).
    pub segment_bytes: u64,
    /// Payload bytes of this process's latest appends kept in memory for
    /// the read pass ([`tail`]); 0 reads every record back from the file.
    pub tail_bytes: usize,
}

impl SpoolConfig {
    /// Defaults: fsync every 100 ms, 1 GiB cap, 16 MiB segments, a 4 MiB tail.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        SpoolConfig {
            dir: dir.into(),
            fsync: Fsync::Interval(Duration::from_millis(100)),
            max_bytes: 1 << 30,
            segment_bytes: 16 << 20,
            tail_bytes: TAIL_BYTES,
        }
    }
}

/// Where a record lives: its segment and byte offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RecordId {
    segment: u64,
    offset: u32,
}

impl RecordId {
    pub fn segment(&self) -> u64 {
        self.segment
    }

    pub fn offset(&self) -> u32 {
        self.offset
    }

    /// An id for tests outside the spool.
    #[cfg(test)]
    pub fn at(segment: u64, offset: u32) -> Self {
        RecordId { segment, offset }
    }
}

/// Counters since open, and the spool's current size.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SpoolStats {
    /// Segment and ack files, in bytes.
    pub bytes_on_disk: u64,
    pub segments: usize,
    /// Valid records not yet acknowledged (including those in flight).
    pub records_pending: u64,
    /// Records handed out and not yet acked or nacked.
    pub records_in_flight: usize,
    pub records_written: u64,
    pub records_acked: u64,
    /// Appends refused because the spool was full.
    pub records_dropped_full: u64,
    /// Appends that failed otherwise (an I/O error such as ENOSPC, a failed
    /// fsync, a record over the size limit): the record is not stored.
    pub records_dropped_error: u64,
    /// Damaged regions skipped (a flipped payload byte: one record; a
    /// damaged length or torn tail: everything up to the next valid record).
    pub records_corrupt_skipped: u64,
    pub bytes_corrupt_skipped: u64,
    /// Damaged ack records skipped (their records are delivered again).
    pub ack_records_corrupt_skipped: u64,
    /// Appends (and ack writes) that failed with an I/O error.
    pub write_errors: u64,
    pub sync_errors: u64,
    /// Age of the oldest unacknowledged record, by its write time.
    pub oldest_unacked_age: Option<Duration>,
}

#[derive(Debug, thiserror::Error)]
pub enum SpoolError {
    #[error("spool full ({used} of {max} bytes used); record dropped")]
    Full { used: u64, max: u64 },
    #[error("record of {len} bytes is larger than the spool's {max}-byte limit")]
    TooLarge { len: usize, max: usize },
    #[error("spool: {context} {}: {source}", path.display())]
    Io {
        context: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("spool: {} has format version {found}; this build reads version {}", path.display(), record::VERSION)]
    UnsupportedVersion { path: PathBuf, found: u32 },
}

fn io_err(context: &'static str, path: &std::path::Path, source: io::Error) -> SpoolError {
    SpoolError::Io {
        context,
        path: path.to_path_buf(),
        source,
    }
}

/// What the spool remembers about a record the caller holds.
#[derive(Debug, Clone, Copy)]
struct Meta {
    payload_len: u32,
    written_ms: u64,
}

/// The spool. Single-owner and synchronous: call it from one thread (or via
/// `spawn_blocking`); it starts no threads of its own.
pub struct Spool<F: SpoolFs = RealFs> {
    cfg: SpoolConfig,
    fs: F,
    /// Ascending by sequence; the last is the write head unless sealed.
    segments: Vec<Segment>,
    next_seq: u64,
    bytes_on_disk: u64,
    in_flight: HashMap<RecordId, Meta>,
    redeliver: BTreeMap<RecordId, Meta>,
    /// Write time of the next record the read pass will hand out, if any.
    cursor_ms: Option<u64>,
    dirty_segments: BTreeSet<u64>,
    dirty_acks: BTreeSet<u64>,
    dir_dirty: bool,
    last_sync: Instant,
    /// Consecutive read failures at one place, to skip it eventually.
    strikes: Option<(RecordId, u32)>,
    stats: SpoolStats,
    /// Records appended by this process, kept for the read pass ([`tail`]).
    tail: tail::Tail,
}

impl<F: SpoolFs> Spool<F> {
    /// Current size and counters.
    pub fn stats(&self) -> SpoolStats {
        let oldest = self
            .in_flight
            .values()
            .chain(self.redeliver.values())
            .map(|m| m.written_ms)
            .chain(self.cursor_ms)
            .min();
        SpoolStats {
            bytes_on_disk: self.bytes_on_disk,
            segments: self.segments.len(),
            records_pending: self.segments.iter().map(|s| s.pending).sum(),
            records_in_flight: self.in_flight.len(),
            oldest_unacked_age: oldest
                .map(|ms| Duration::from_millis(record::now_ms().saturating_sub(ms))),
            ..self.stats.clone()
        }
    }

    /// The settings in effect (after clamping).
    pub fn config(&self) -> &SpoolConfig {
        &self.cfg
    }

    fn segment_index(&self, seq: u64) -> Option<usize> {
        self.segments.binary_search_by_key(&seq, |s| s.seq).ok()
    }

    fn head_index(&self) -> Option<usize> {
        let i = self.segments.len().checked_sub(1)?;
        (!self.segments[i].sealed).then_some(i)
    }
}
