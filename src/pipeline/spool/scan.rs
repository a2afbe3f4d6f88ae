//! Reading records back: a forward scanner over one file's byte range that
//! yields valid records and the damaged regions between them, reading through
//! a bounded buffer (never the whole file) and never trusting a length it has
//! not checked.
//!
//! Damage is recovered from in two ways. A record whose length is plausible
//! but whose checksum fails (a flipped payload byte) is skipped by its length
//! when a valid record, or the end, follows it. Otherwise (a damaged length,
//! a torn tail, zeroed pages) the scanner resynchronises: it looks byte by
//! byte for the next offset where a record with a matching checksum starts
//! and is followed by the end, a record-like length or zeroes (a cheap test
//! first, so garbage full of plausible lengths does not cost a checksum of
//! the rest of the file at every byte). What it skips is reported as one
//! damaged region.

use std::io;
use std::ops::Range;
use std::path::Path;

use super::fs::SpoolFs;
use super::record::{u32_at, FRAME_LEN, MAX_BODY};

/// How much the scanner reads at once (more when one record is larger).
const CHUNK: u64 = 64 << 10;

/// One step of a scan.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Item {
    /// A valid record at `at`; its body is `Scanner::body(body)` until the
    /// next call; the record after it starts at `next`.
    Record {
        at: u64,
        next: u64,
        body: Range<usize>,
    },
    /// `len` damaged or missing bytes at `at`, skipped.
    Damaged { at: u64, len: u64 },
}

pub(super) struct Scanner<'a, F: SpoolFs> {
    fs: &'a mut F,
    path: &'a Path,
    pos: u64,
    /// Where the caller believes the data ends.
    limit: u64,
    /// Where it really ends: `limit`, or less if the file turned out shorter.
    end: u64,
    /// Bodies shorter than this are not records.
    min_body: u64,
    buf: Vec<u8>,
    buf_at: u64,
}

impl<'a, F: SpoolFs> Scanner<'a, F> {
    /// Scans `path` from `from` up to `limit`.
    pub(super) fn new(fs: &'a mut F, path: &'a Path, from: u64, limit: u64, min_body: u64) -> Self {
        Scanner {
            fs,
            path,
            pos: from,
            limit,
            end: limit,
            min_body,
            buf: Vec::new(),
            buf_at: 0,
        }
    }

    /// The body of the record last returned.
    pub(super) fn body(&self, r: Range<usize>) -> &[u8] {
        &self.buf[r]
    }

    pub(super) fn next(&mut self) -> io::Result<Option<Item>> {
        if self.pos >= self.end {
            if self.pos < self.limit {
                // The file ends before where it should: the rest is missing.
                let at = self.pos;
                self.pos = self.limit;
                return Ok(Some(Item::Damaged {
                    at,
                    len: self.limit - at,
                }));
            }
            return Ok(None);
        }
        let at = self.pos;
        if let Some(len) = self.record_at(at)? {
            let next = at + FRAME_LEN + len;
            self.pos = next;
            let start = (at + FRAME_LEN - self.buf_at) as usize;
            return Ok(Some(Item::Record {
                at,
                next,
                body: start..start + len as usize,
            }));
        }
        // A plausible length with a bad checksum: a damaged body. Skip it by
        // its length if what follows is a valid record or the end.
        if let Some(len) = self.plausible_len(at)? {
            let next = at + FRAME_LEN + len;
            if next == self.end || self.record_at(next)?.is_some() {
                self.pos = next;
                return Ok(Some(Item::Damaged { at, len: next - at }));
            }
        }
        let mut p = at + 1;
        while p + FRAME_LEN <= self.end {
            if self.followed_well(p)? && self.record_at(p)?.is_some() {
                self.pos = p;
                return Ok(Some(Item::Damaged { at, len: p - at }));
            }
            p += 1;
        }
        self.pos = self.end;
        Ok(Some(Item::Damaged {
            at,
            len: self.end - at,
        }))
    }

    /// The body length of a valid record starting at `at`, if there is one.
    fn record_at(&mut self, at: u64) -> io::Result<Option<u64>> {
        let Some(len) = self.plausible_len(at)? else {
            return Ok(None);
        };
        if !self.fill(at, FRAME_LEN + len)? {
            return Ok(None);
        }
        let b = self.slice(at, FRAME_LEN + len);
        let crc = u32_at(b, 4);
        Ok((crc32fast::hash(&b[FRAME_LEN as usize..]) == crc).then_some(len))
    }

    /// The length field at `at` if it could be a record's: within bounds and
    /// within the data.
    fn plausible_len(&mut self, at: u64) -> io::Result<Option<u64>> {
        if at + FRAME_LEN > self.end || !self.fill(at, FRAME_LEN)? {
            return Ok(None);
        }
        let len = u64::from(u32_at(self.slice(at, FRAME_LEN), 0));
        let fits = at + FRAME_LEN + len <= self.end;
        Ok((len >= self.min_body && len <= MAX_BODY && fits).then_some(len))
    }

    /// Whether a plausible record at `at` is followed by the end of the
    /// data, a plausible length, or zeroes (unwritten pages). Reads 8 bytes
    /// beside the buffer rather than moving it.
    fn followed_well(&mut self, at: u64) -> io::Result<bool> {
        let Some(len) = self.plausible_len(at)? else {
            return Ok(false);
        };
        let next = at + FRAME_LEN + len;
        if next + FRAME_LEN > self.end {
            return Ok(true);
        }
        let mut h = [0u8; FRAME_LEN as usize];
        let buf_end = self.buf_at + self.buf.len() as u64;
        if next >= self.buf_at && next + FRAME_LEN <= buf_end {
            h.copy_from_slice(self.slice(next, FRAME_LEN));
        } else if self.fs.read_at(self.path, next, &mut h)? < h.len() {
            return Ok(true);
        }
        let next_len = u64::from(u32_at(&h, 0));
        Ok(next_len == 0 || (next_len >= self.min_body && next_len <= MAX_BODY))
    }

    /// Makes `[at, at + len)` available in the buffer. `false` when the file
    /// ends first (and `end` shrinks to where it does).
    fn fill(&mut self, at: u64, len: u64) -> io::Result<bool> {
        let buf_end = self.buf_at + self.buf.len() as u64;
        if at >= self.buf_at && at + len <= buf_end {
            return Ok(true);
        }
        if at + len > self.end {
            return Ok(false);
        }
        let want = len.max(CHUNK).min(self.end - at) as usize;
        self.buf.clear();
        self.buf.resize(want, 0);
        let got = self.fs.read_at(self.path, at, &mut self.buf)?;
        self.buf.truncate(got);
        self.buf_at = at;
        if (got as u64) < want as u64 {
            self.end = at + got as u64;
        }
        Ok(got as u64 >= len)
    }

    fn slice(&self, at: u64, len: u64) -> &[u8] {
        let start = (at - self.buf_at) as usize;
        &self.buf[start..start + len as usize]
    }
}
