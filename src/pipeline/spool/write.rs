//! The write side: appending records to the head segment, rolling over to a
//! new segment, recovering from failed writes, and syncing.

use std::time::Instant;

use super::record::{self, file_header, FILE_HEADER_LEN, MAX_PAYLOAD, SEGMENT_MAGIC};
use super::segment::{acks_path, segment_path, Segment};
use super::tail::Entry;
use super::{io_err, Fsync, RecordId, Spool, SpoolError, SpoolFs};

/// A stored record: where it is, where the next one starts, when written.
struct Appended {
    id: RecordId,
    next: u64,
    written_ms: u64,
}

impl<F: SpoolFs> Spool<F> {
    /// Appends one record. Fails with [`SpoolError::Full`] (counted) when it
    /// would take the spool past `max_bytes`, and with an I/O error when the
    /// write (or, with [`Fsync::Always`], the fsync) fails; either way the
    /// record is not stored and later appends work once the fault clears.
    pub fn append(&mut self, payload: &[u8]) -> Result<RecordId, SpoolError> {
        let appended = self.try_append(payload);
        let keep = self.tail.keeps(payload.len()).then(|| payload.to_vec());
        self.appended(appended, keep)
    }

    /// [`Spool::append`], taking the payload: the read pass hands this very
    /// buffer out again ([`super::tail`]), without reading it back.
    pub fn append_owned(&mut self, payload: Vec<u8>) -> Result<RecordId, SpoolError> {
        let appended = self.try_append(&payload);
        self.appended(appended, Some(payload))
    }

    /// Counts a failed append; keeps a stored record in the tail.
    fn appended(
        &mut self,
        appended: Result<Appended, SpoolError>,
        payload: Option<Vec<u8>>,
    ) -> Result<RecordId, SpoolError> {
        match appended {
            Ok(a) => {
                if let Some(payload) = payload {
                    self.tail.push(Entry {
                        id: a.id,
                        next: a.next,
                        written_ms: a.written_ms,
                        payload,
                    });
                }
                Ok(a.id)
            }
            Err(e) => {
                if !matches!(e, SpoolError::Full { .. }) {
                    self.stats.records_dropped_error += 1;
                }
                Err(e)
            }
        }
    }

    fn try_append(&mut self, payload: &[u8]) -> Result<Appended, SpoolError> {
        if payload.len() > MAX_PAYLOAD {
            return Err(SpoolError::TooLarge {
                len: payload.len(),
                max: MAX_PAYLOAD,
            });
        }
        let rec_len = record::segment_record_len(payload.len());
        if !self.fits(rec_len) {
            // A head holding nothing unacked only takes room: retire it.
            if let Some(h) = self.head_index() {
                if self.segments[h].pending == 0 {
                    self.seal_head();
                    let _ = self.gc();
                }
            }
            if !self.fits(rec_len) {
                self.stats.records_dropped_full += 1;
                return Err(SpoolError::Full {
                    used: self.bytes_on_disk,
                    max: self.cfg.max_bytes,
                });
            }
        }
        if self.needs_new_head(rec_len) {
            self.seal_head();
            let _ = self.gc();
            self.create_head()?;
        }
        let h = self.head_index().ok_or_else(|| {
            io_err(
                "no write head in",
                &self.cfg.dir,
                std::io::Error::other("bug"),
            )
        })?;
        let seq = self.segments[h].seq;
        let at = self.segments[h].end;
        let path = segment_path(&self.cfg.dir, seq);
        let written_ms = record::now_ms();
        let bytes = record::segment_record(written_ms, payload);
        if let Err(e) = self.fs.append(&path, &bytes) {
            self.write_failed(at, rec_len);
            return Err(io_err("appending to", &path, e));
        }
        self.grow_head(rec_len);
        self.settle(seq, &path, at)?;
        let seg = &mut self.segments[h];
        seg.pending += 1;
        self.stats.records_written += 1;
        if self.cursor_ms.is_none() {
            self.cursor_ms = Some(written_ms);
        }
        Ok(Appended {
            id: RecordId {
                segment: seq,
                offset: at as u32,
            },
            next: at + rec_len,
            written_ms,
        })
    }

    /// After a write to segment `seq` (at `path`) that began at
    /// `good_end`: syncs it now ([`Fsync::Always`]; a failure cuts the
    /// write away) or marks it for the interval's sync.
    pub(super) fn settle(
        &mut self,
        seq: u64,
        path: &std::path::Path,
        good_end: u64,
    ) -> Result<(), SpoolError> {
        match self.cfg.fsync {
            Fsync::Always => {
                if let Err(e) = self.fs.sync(path) {
                    self.stats.sync_errors += 1;
                    self.write_failed(good_end, 0);
                    return Err(io_err("syncing", path, e));
                }
            }
            Fsync::Interval(every) => {
                self.dirty_segments.insert(seq);
                if self.last_sync.elapsed() >= every {
                    // Counted and logged by flush; the record itself is
                    // stored and will be delivered.
                    let _ = self.flush();
                }
            }
        }
        Ok(())
    }

    /// Syncs every file written since the last sync. The owner calls this on
    /// its fsync interval and at shutdown; with [`Fsync::Always`] only ack
    /// files are ever unsynced. A failed sync seals the write head.
    pub fn flush(&mut self) -> Result<(), SpoolError> {
        self.last_sync = Instant::now();
        let mut first = None;
        for seq in std::mem::take(&mut self.dirty_segments) {
            if self.segment_index(seq).is_none() {
                continue;
            }
            let path = segment_path(&self.cfg.dir, seq);
            if let Err(e) = self.fs.sync(&path) {
                self.stats.sync_errors += 1;
                tracing::warn!(path = %path.display(), error = %e, "spool: fsync failed; records since the last sync may not survive a power loss");
                if self
                    .head_index()
                    .is_some_and(|h| self.segments[h].seq == seq)
                {
                    self.seal_head();
                }
                first.get_or_insert(io_err("syncing", &path, e));
            }
        }
        for seq in std::mem::take(&mut self.dirty_acks) {
            if self.segment_index(seq).is_none() {
                continue;
            }
            let path = acks_path(&self.cfg.dir, seq);
            if let Err(e) = self.fs.sync(&path) {
                self.stats.sync_errors += 1;
                first.get_or_insert(io_err("syncing", &path, e));
            }
        }
        if std::mem::take(&mut self.dir_dirty) {
            if let Err(e) = self.fs.sync_dir(&self.cfg.dir) {
                self.stats.sync_errors += 1;
                first.get_or_insert(io_err("syncing directory", &self.cfg.dir, e));
            }
        }
        first.map_or(Ok(()), Err)
    }

    pub(super) fn fits(&self, rec_len: u64) -> bool {
        let header = if self.needs_new_head(rec_len) {
            FILE_HEADER_LEN
        } else {
            0
        };
        self.bytes_on_disk + rec_len + header <= self.cfg.max_bytes
    }

    /// No head, or a non-empty head this record would take past
    /// `segment_bytes` (an oversized record gets a segment of its own).
    pub(super) fn needs_new_head(&self, rec_len: u64) -> bool {
        match self.head_index() {
            None => true,
            Some(h) => {
                let s = &self.segments[h];
                s.end > FILE_HEADER_LEN && s.end + rec_len > self.cfg.segment_bytes
            }
        }
    }

    pub(super) fn grow_head(&mut self, by: u64) {
        if let Some(h) = self.head_index() {
            let s = &mut self.segments[h];
            s.end += by;
            s.disk_len = s.disk_len.max(s.end);
            self.bytes_on_disk += by;
        }
    }

    /// Starts a new write head with a fresh sequence number.
    fn create_head(&mut self) -> Result<(), SpoolError> {
        let seq = self.next_seq;
        self.next_seq += 1;
        let path = segment_path(&self.cfg.dir, seq);
        let synced = match self.fs.append(&path, &file_header(SEGMENT_MAGIC)) {
            Err(e) => Err(io_err("creating", &path, e)),
            Ok(()) if self.cfg.fsync == Fsync::Always => {
                let r = self
                    .fs
                    .sync(&path)
                    .and_then(|_| self.fs.sync_dir(&self.cfg.dir));
                r.map_err(|e| {
                    self.stats.sync_errors += 1;
                    io_err("syncing new segment", &path, e)
                })
            }
            Ok(()) => {
                self.dirty_segments.insert(seq);
                self.dir_dirty = true;
                Ok(())
            }
        };
        if let Err(e) = synced {
            self.stats.write_errors += 1;
            // A leftover partial file is a torn header the next open removes.
            let _ = self.fs.remove(&path);
            self.dirty_segments.remove(&seq);
            return Err(e);
        }
        self.segments.push(Segment::head(seq));
        self.bytes_on_disk += FILE_HEADER_LEN;
        Ok(())
    }

    /// A write (of `attempted` bytes at `good_end`) or its sync failed: cut
    /// the head back to `good_end` if the disk allows and seal it.
    pub(super) fn write_failed(&mut self, good_end: u64, attempted: u64) {
        self.stats.write_errors += 1;
        let Some(h) = self.head_index() else { return };
        let path = segment_path(&self.cfg.dir, self.segments[h].seq);
        let disk_len = match self.fs.truncate(&path, good_end) {
            Ok(()) => good_end,
            Err(_) => self
                .fs
                .len(&path)
                .unwrap_or(self.segments[h].disk_len + attempted),
        };
        let s = &mut self.segments[h];
        self.bytes_on_disk = self.bytes_on_disk - s.disk_len + disk_len;
        s.disk_len = disk_len;
        s.end = good_end;
        self.seal_head();
        let _ = self.gc();
    }

    /// The head becomes an ordinary sealed segment; the next append starts a
    /// new one.
    fn seal_head(&mut self) {
        if let Some(h) = self.head_index() {
            self.segments[h].sealed = true;
        }
    }
}
