//! Joint appends: a group commit's records bound for the same write head
//! go to the disk in one write (and, with `fsync = "always"`, one sync)
//! instead of one each. The records and the file are exactly what appending
//! them one at a time makes; only the syscalls are fewer.
//!
//! A record that needs anything but a plain append — a new head, a full
//! spool, an oversized payload — first sends the records gathered so far,
//! then takes the one-at-a-time path ([`Spool::append_owned`]). A joint
//! write or sync that fails is cut back like a single one
//! ([`Spool::write_failed`]); once the file is back where the group began,
//! its records are appended again one at a time, so a fault costs no record
//! that appending singly would have kept (when the cut-back fails too, they
//! fail, as a single record whose cut-back failed does: some may be whole
//! on disk, and a second copy would be delivered twice).

use super::record::{self, MAX_PAYLOAD};
use super::segment::segment_path;
use super::tail::Entry;
use super::{io_err, RecordId, Spool, SpoolError, SpoolFs};

/// The records gathered for one write: their framed bytes, and per record
/// its offset, framed length and payload (kept for the tail).
#[derive(Default)]
struct Run {
    seq: u64,
    written_ms: u64,
    start: u64,
    bytes: Vec<u8>,
    records: Vec<(u64, Vec<u8>)>,
}

impl<F: SpoolFs> Spool<F> {
    /// Appends `payloads` in order, those bound for one write head in one
    /// write; each record's outcome, in order (as [`Spool::append_owned`]
    /// would have had it).
    pub fn append_all(&mut self, payloads: Vec<Vec<u8>>) -> Vec<Result<RecordId, SpoolError>> {
        let mut out = Vec::with_capacity(payloads.len());
        let mut run = Run::default();
        for payload in payloads {
            let rec_len = record::segment_record_len(payload.len());
            let plain = payload.len() <= MAX_PAYLOAD
                && self.head_index().is_some()
                && !self.needs_new_head(rec_len)
                && self.fits(rec_len);
            if !plain {
                self.write_run(&mut run, &mut out);
                out.push(self.append_owned(payload));
                continue;
            }
            let (seq, at) = self.head_end().expect("a plain append has a head");
            if run.records.is_empty() {
                (run.seq, run.start, run.written_ms) = (seq, at, record::now_ms());
            }
            record::encode(&mut run.bytes, &[&run.written_ms.to_le_bytes(), &payload]);
            run.records.push((at, payload));
            // Counted as written now, so the next record's checks see it;
            // a failed write cuts it back.
            self.grow_head(rec_len);
        }
        self.write_run(&mut run, &mut out);
        out
    }

    /// The write head's sequence number and end.
    fn head_end(&self) -> Option<(u64, u64)> {
        let h = self.head_index()?;
        Some((self.segments[h].seq, self.segments[h].end))
    }

    /// Writes the gathered records (one write, one sync with
    /// `Fsync::Always`); on failure appends them again one at a time.
    fn write_run(&mut self, run: &mut Run, out: &mut Vec<Result<RecordId, SpoolError>>) {
        let Run {
            seq,
            written_ms,
            start,
            bytes,
            records,
        } = std::mem::take(run);
        if records.is_empty() {
            return;
        }
        if let Err(e) = self.write_joint(seq, start, &bytes) {
            // Cut back cleanly, the file holds none of these records: they
            // are appended again one at a time. Otherwise some may be whole
            // on disk, and appending them again would store them twice:
            // they fail, as a single record whose cut-back failed does.
            let clean = self
                .segment_index(seq)
                .is_some_and(|i| self.segments[i].disk_len == start);
            tracing::debug!(error = %e, records = records.len(), clean, "spool: a joint append failed");
            match clean {
                true => out.extend(records.into_iter().map(|(_, p)| self.append_owned(p))),
                false => {
                    self.stats.records_dropped_error += records.len() as u64;
                    out.extend(records.iter().map(|_| Err(copy(&e))));
                }
            }
            return;
        }
        // (A sync on the interval may have sealed the head since: it is
        // still this run's segment.)
        if let Some(i) = self.segment_index(seq) {
            self.segments[i].pending += records.len() as u64;
        }
        self.stats.records_written += records.len() as u64;
        self.cursor_ms.get_or_insert(written_ms);
        let end = start + bytes.len() as u64;
        let mut records = records.into_iter().peekable();
        while let Some((at, payload)) = records.next() {
            let next = records.peek().map_or(end, |r| r.0);
            let id = RecordId {
                segment: seq,
                offset: at as u32,
            };
            self.tail.push(Entry {
                id,
                next,
                written_ms,
                payload,
            });
            out.push(Ok(id));
        }
    }

    /// The joint write itself and, by the sync policy, its sync; a failure
    /// cuts the head back to `start` and seals it.
    fn write_joint(&mut self, seq: u64, start: u64, bytes: &[u8]) -> Result<(), SpoolError> {
        let path = segment_path(&self.cfg.dir, seq);
        if let Err(e) = self.fs.append(&path, bytes) {
            self.write_failed(start, 0);
            return Err(io_err("appending to", &path, e));
        }
        self.settle(seq, &path, start)
    }
}

/// The same failure for every record of a failed joint write.
fn copy(e: &SpoolError) -> SpoolError {
    match e {
        SpoolError::Io {
            context,
            path,
            source,
        } => io_err(
            context,
            path,
            std::io::Error::new(source.kind(), source.to_string()),
        ),
        SpoolError::Full { used, max } => SpoolError::Full {
            used: *used,
            max: *max,
        },
        SpoolError::TooLarge { len, max } => SpoolError::TooLarge {
            len: *len,
            max: *max,
        },
        SpoolError::UnsupportedVersion { path, found } => SpoolError::UnsupportedVersion {
            path: path.clone(),
            found: *found,
        },
    }
}
