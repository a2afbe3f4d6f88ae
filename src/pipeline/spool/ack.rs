//! Acknowledgements: persisting acked ranges to ack files, and deleting
//! segments whose records have all been acked.

use std::collections::BTreeMap;
use std::io;

use super::record::{self, file_header, ACKS_MAGIC, FRAME_LEN, TS_LEN};
use super::segment::{acks_path, segment_path, RangeSet};
use super::{io_err, RecordId, Spool, SpoolError, SpoolFs};

impl<F: SpoolFs> Spool<F> {
    /// Marks records delivered: persists the acks (one ack record per
    /// segment touched) and deletes segments now fully acked. Ids not handed
    /// out (or already acked) are ignored. On an I/O error the acks still
    /// hold for this process; after a restart their records may be resent.
    pub fn ack(&mut self, ids: &[RecordId]) -> Result<(), SpoolError> {
        let mut by_segment: BTreeMap<u64, RangeSet> = BTreeMap::new();
        for id in ids {
            let Some(meta) = self
                .in_flight
                .remove(id)
                .or_else(|| self.redeliver.remove(id))
            else {
                continue;
            };
            if let Some(i) = self.segment_index(id.segment) {
                let s = &mut self.segments[i];
                s.outstanding = s.outstanding.saturating_sub(1);
                s.pending = s.pending.saturating_sub(1);
            }
            self.stats.records_acked += 1;
            let end = u64::from(id.offset) + FRAME_LEN + TS_LEN + u64::from(meta.payload_len);
            by_segment
                .entry(id.segment)
                .or_default()
                .insert(id.offset, end as u32);
        }
        let mut first = None;
        for (seq, ranges) in by_segment {
            let Some(i) = self.segment_index(seq) else {
                continue;
            };
            if self.segments[i].deletable() {
                continue; // gc deletes it below; no need to record acks
            }
            if let Err(e) = self.persist_acks(i, &ranges) {
                first.get_or_insert(e);
            }
        }
        if let Err(e) = self.gc() {
            first.get_or_insert(e);
        }
        first.map_or(Ok(()), Err)
    }

    /// Appends one ack record to segment `i`'s ack file (creating it).
    fn persist_acks(&mut self, i: usize, ranges: &RangeSet) -> Result<(), SpoolError> {
        let seq = self.segments[i].seq;
        let before = self.segments[i].acks_len;
        let path = acks_path(&self.cfg.dir, seq);
        let mut bytes = Vec::new();
        if before == 0 {
            bytes.extend_from_slice(&file_header(ACKS_MAGIC));
        }
        record::encode(&mut bytes, &[&record::ack_body(ranges.ranges())]);
        match self.fs.append(&path, &bytes) {
            Ok(()) => {
                self.segments[i].acks_len += bytes.len() as u64;
                self.bytes_on_disk += bytes.len() as u64;
                self.dirty_acks.insert(seq);
                self.dir_dirty |= before == 0;
                Ok(())
            }
            Err(e) => {
                self.stats.write_errors += 1;
                // Cut the partial record away; if that fails too it is a
                // torn ack record, skipped on open (a resend, not a loss).
                let cut = if before == 0 {
                    self.fs.remove(&path).map(|_| 0)
                } else {
                    self.fs.truncate(&path, before).map(|_| before)
                };
                let now = cut
                    .or_else(|_| self.fs.len(&path))
                    .unwrap_or(before + bytes.len() as u64);
                self.bytes_on_disk = self.bytes_on_disk - before + now;
                self.segments[i].acks_len = now;
                Err(io_err("appending acks to", &path, e))
            }
        }
    }

    /// Deletes every segment that is sealed, read to its end, and has
    /// nothing awaiting acknowledgement; settles the counts of drained ones.
    pub(super) fn gc(&mut self) -> Result<(), SpoolError> {
        let mut first = None;
        let mut i = 0;
        while i < self.segments.len() {
            let s = &mut self.segments[i];
            if s.read_off >= s.end {
                // Read to its end: every record is acked, out, or was found
                // damaged (which the count may have included); what is left
                // unacked is what is out.
                s.pending = s.outstanding;
                if !s.acked.is_empty() {
                    s.acked = RangeSet::default();
                }
            }
            if s.deletable() {
                match self.delete_segment(i) {
                    Ok(()) => continue,
                    Err(e) => {
                        first.get_or_insert(e);
                    }
                }
            }
            i += 1;
        }
        first.map_or(Ok(()), Err)
    }

    /// Removes segment `i`'s file, then its ack file (an orphan ack file left
    /// by a failure here is removed by the next open).
    fn delete_segment(&mut self, i: usize) -> Result<(), SpoolError> {
        let seq = self.segments[i].seq;
        let path = segment_path(&self.cfg.dir, seq);
        match self.fs.remove(&path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_err("removing", &path, e)),
        }
        if self.segments[i].acks_len > 0 {
            let acks = acks_path(&self.cfg.dir, seq);
            match self.fs.remove(&acks) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    tracing::warn!(path = %acks.display(), error = %e, "spool: cannot remove ack file; the next open will");
                }
            }
        }
        let s = self.segments.remove(i);
        self.bytes_on_disk = self.bytes_on_disk.saturating_sub(s.bytes());
        self.dirty_segments.remove(&seq);
        self.dirty_acks.remove(&seq);
        Ok(())
    }
}
