//! The read side: bounded batches of records not yet handed out — first those
//! nacked back, then the forward read pass — and redelivery on nack.

use super::record::{split_body, FRAME_LEN, TS_LEN};
use super::scan::{Item, Scanner};
use super::segment::segment_path;
use super::{io_err, Meta, RecordId, Spool, SpoolError, SpoolFs};

/// Consecutive read errors at one place before it is skipped as damaged.
const MAX_STRIKES: u32 = 3;

type Batch = Vec<(RecordId, Vec<u8>)>;

impl<F: SpoolFs> Spool<F> {
    /// Up to `max_records` records (and `max_bytes` of payload, though at
    /// least one record when any is available) not handed out yet, oldest
    /// first: nacked records, then the read pass. Each stays in flight until
    /// [`Spool::ack`]ed or [`Spool::nack`]ed. A read error is returned only if
    /// nothing could be read; a place that fails three times in a row is
    /// skipped and counted as damaged, so a bad sector cannot stall the spool.
    pub fn next_batch(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<Batch, SpoolError> {
        let want = Want {
            records: max_records,
            bytes: max_bytes,
            at_least_one: true,
        };
        self.read(want).map(|(batch, _)| batch)
    }

    /// [`Spool::next_batch`], and whether it stopped at a limit with
    /// records left (`true`: the batch is full), for a caller that tops its
    /// batch up ([`Spool::next_batch_within`]) until it is.
    pub fn next_batch_and_full(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<(Batch, bool), SpoolError> {
        self.read(Want {
            records: max_records,
            bytes: max_bytes,
            at_least_one: true,
        })
    }

    /// Like [`Spool::next_batch`], for topping up a batch the caller already
    /// holds: never more than `max_bytes` (so possibly nothing), and whether
    /// it stopped at a limit with records left (`true`: the caller's batch
    /// is full).
    pub fn next_batch_within(
        &mut self,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<(Batch, bool), SpoolError> {
        let want = Want {
            records: max_records,
            bytes: max_bytes,
            at_least_one: false,
        };
        self.read(want)
    }

    fn read(&mut self, want: Want) -> Result<(Batch, bool), SpoolError> {
        let mut out = Vec::new();
        if want.records == 0 {
            return Ok((out, true));
        }
        let mut bytes = 0;
        let r = self.take_redelivered(&mut out, &mut bytes, want);
        let r = r.and_then(|full| match full {
            true => Ok(true),
            false => self.read_forward(&mut out, &mut bytes, want),
        });
        let _ = self.gc();
        match r {
            Err(e) if out.is_empty() => Err(e),
            Err(e) => {
                tracing::warn!(error = %e, "spool: read error; returning a partial batch");
                Ok((out, false))
            }
            Ok(full) => Ok((out, full)),
        }
    }

    /// Hands these records out again on a later [`Spool::next_batch`]
    /// (their delivery failed). Ids not in flight are ignored.
    pub fn nack(&mut self, ids: &[RecordId]) {
        for id in ids {
            if let Some(meta) = self.in_flight.remove(id) {
                self.redeliver.insert(*id, meta);
            }
        }
    }

    /// Nacked records, re-read by id. `Ok(true)` when the batch is full.
    fn take_redelivered(
        &mut self,
        out: &mut Batch,
        bytes: &mut usize,
        want: Want,
    ) -> Result<bool, SpoolError> {
        while let Some((&id, &meta)) = self.redeliver.first_key_value() {
            if !want.fits(out, *bytes, meta.payload_len as usize) {
                return Ok(true);
            }
            let path = segment_path(&self.cfg.dir, id.segment);
            let len = FRAME_LEN + TS_LEN + u64::from(meta.payload_len);
            let at = u64::from(id.offset);
            let mut sc = Scanner::new(&mut self.fs, &path, at, at + len, TS_LEN);
            let payload = match sc.next() {
                Ok(Some(Item::Record { at: got, body, .. })) if got == at => {
                    Some(split_body(sc.body(body)).1.to_vec())
                }
                Ok(_) => None,
                Err(e) if self.strike(id) => {
                    tracing::warn!(error = %e, ?id, "spool: record unreadable; skipped");
                    None
                }
                Err(e) => return Err(io_err("reading", &path, e)),
            };
            self.redeliver.remove(&id);
            match payload {
                Some(p) => {
                    *bytes += p.len();
                    self.in_flight.insert(id, meta);
                    out.push((id, p));
                }
                None => {
                    // Damaged since it was first read: it can never be acked.
                    self.stats.records_corrupt_skipped += 1;
                    self.stats.bytes_corrupt_skipped += len;
                    if let Some(i) = self.segment_index(id.segment) {
                        let s = &mut self.segments[i];
                        s.outstanding = s.outstanding.saturating_sub(1);
                        s.pending = s.pending.saturating_sub(1);
                    }
                }
            }
        }
        Ok(false)
    }

    /// The forward read pass, segment by segment from where it left off:
    /// from the tail in memory while it has the next record, else from the
    /// file. `Ok(true)` when the batch is full.
    fn read_forward(
        &mut self,
        out: &mut Batch,
        bytes: &mut usize,
        want: Want,
    ) -> Result<bool, SpoolError> {
        for i in 0..self.segments.len() {
            if self.read_tail(i, out, bytes, want) {
                return Ok(true);
            }
            let seg = &mut self.segments[i];
            if seg.read_off >= seg.end {
                continue;
            }
            let path = segment_path(&self.cfg.dir, seg.seq);
            let mut sc = Scanner::new(&mut self.fs, &path, seg.read_off, seg.end, TS_LEN);
            loop {
                let item = match sc.next() {
                    Ok(item) => item,
                    Err(e) => {
                        let here = RecordId {
                            segment: seg.seq,
                            offset: seg.read_off as u32,
                        };
                        if strike(&mut self.strikes, here) {
                            tracing::warn!(error = %e, segment = seg.seq, "spool: segment unreadable; skipping its rest");
                            self.stats.records_corrupt_skipped += 1;
                            self.stats.bytes_corrupt_skipped += seg.end - seg.read_off;
                            seg.read_off = seg.end;
                        }
                        return Err(io_err("reading", &path, e));
                    }
                };
                match item {
                    None => {
                        seg.read_off = seg.end;
                        break;
                    }
                    Some(Item::Damaged { at, len }) => {
                        if at >= seg.counted_to {
                            self.stats.records_corrupt_skipped += 1;
                            self.stats.bytes_corrupt_skipped += len;
                            seg.counted_to = at + len;
                        }
                        seg.read_off = at + len;
                    }
                    Some(Item::Record { at, next, body }) => {
                        if seg.acked.contains(at as u32) {
                            seg.read_off = next;
                            continue;
                        }
                        let (written_ms, payload) = split_body(sc.body(body));
                        if !want.fits(out, *bytes, payload.len()) {
                            self.cursor_ms = Some(written_ms);
                            return Ok(true);
                        }
                        let id = RecordId {
                            segment: seg.seq,
                            offset: at as u32,
                        };
                        let meta = Meta {
                            payload_len: payload.len() as u32,
                            written_ms,
                        };
                        *bytes += payload.len();
                        out.push((id, payload.to_vec()));
                        self.in_flight.insert(id, meta);
                        seg.outstanding += 1;
                        seg.read_off = next;
                        self.strikes = None;
                    }
                }
            }
        }
        self.cursor_ms = None;
        Ok(false)
    }

    /// Hands out segment `i`'s records from the tail in memory, from its
    /// read place on, for as long as the tail has the very next one (see
    /// [`super::tail`]); `true` when the batch is full.
    fn read_tail(&mut self, i: usize, out: &mut Batch, bytes: &mut usize, want: Want) -> bool {
        let seg = &mut self.segments[i];
        while seg.read_off < seg.end {
            let Some(e) = self.tail.front_at(seg.seq, seg.read_off) else {
                break;
            };
            if seg.acked.contains(e.id.offset) {
                break; // an earlier process's ack: the file path skips it
            }
            if !want.fits(out, *bytes, e.payload.len()) {
                self.cursor_ms = Some(e.written_ms);
                return true;
            }
            let Some(e) = self.tail.pop() else { break };
            let meta = Meta {
                payload_len: e.payload.len() as u32,
                written_ms: e.written_ms,
            };
            *bytes += e.payload.len();
            self.in_flight.insert(e.id, meta);
            seg.outstanding += 1;
            seg.read_off = e.next;
            self.strikes = None;
            out.push((e.id, e.payload));
        }
        false
    }

    /// Counts a read failure at `id`; true once it has failed too often.
    fn strike(&mut self, id: RecordId) -> bool {
        strike(&mut self.strikes, id)
    }
}

fn strike(strikes: &mut Option<(RecordId, u32)>, id: RecordId) -> bool {
    let n = match *strikes {
        Some((at, n)) if at == id => n + 1,
        _ => 1,
    };
    *strikes = (n < MAX_STRIKES).then_some((id, n));
    n >= MAX_STRIKES
}

/// How much one read may hand out.
#[derive(Clone, Copy)]
struct Want {
    records: usize,
    bytes: usize,
    /// A first record is handed out whatever its size.
    at_least_one: bool,
}

impl Want {
    /// Whether a payload of `len` bytes still fits the batch.
    fn fits(&self, out: &Batch, bytes: usize, len: usize) -> bool {
        (self.at_least_one && out.is_empty())
            || (out.len() < self.records && bytes + len <= self.bytes)
    }
}
