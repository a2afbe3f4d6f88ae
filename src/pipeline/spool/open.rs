//! Opening a spool: validate the settings, scan every segment on disk (and its
//! acks), count damage, and place the read pass at the first unacked record.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::time::Instant;

use super::record::{
    self, check_header, split_body, Header, ACKS_MAGIC, FILE_HEADER_LEN, RANGE_LEN, SEGMENT_MAGIC,
    TS_LEN,
};
use super::scan::{Item, Scanner};
use super::segment::{acks_path, parse_name, segment_path, Kind, RangeSet, Segment};
use super::{io_err, Spool, SpoolConfig, SpoolError, SpoolFs, SpoolStats};

const MIN_SEGMENT: u64 = 4 << 10;
const MAX_SEGMENT: u64 = 1 << 30;

impl<F: SpoolFs> Spool<F> {
    /// Opens (creating if needed) the spool in `cfg.dir`: scans and validates
    /// every segment, counts damage, removes fully acked segments and orphan
    /// ack files, and positions the read pass at the first unacked record.
    /// Reads everything once, through a bounded buffer.
    pub fn open(mut cfg: SpoolConfig, mut fs: F) -> Result<Self, SpoolError> {
        cfg.segment_bytes = cfg
            .segment_bytes
            .min(cfg.max_bytes / 2)
            .clamp(MIN_SEGMENT, MAX_SEGMENT);
        let dir = cfg.dir.clone();
        fs.create_dir_all(&dir)
            .map_err(|e| io_err("creating directory", &dir, e))?;
        let names = fs
            .list(&dir)
            .map_err(|e| io_err("listing directory", &dir, e))?;
        let mut files: BTreeMap<u64, BTreeSet<Kind>> = BTreeMap::new();
        for (seq, kind) in names.iter().filter_map(|n| parse_name(n)) {
            files.entry(seq).or_default().insert(kind);
        }
        let next_seq = files.keys().next_back().map_or(1, |s| s.saturating_add(1));
        let tail = super::tail::Tail::bounded(cfg.tail_bytes);
        let mut spool = Spool {
            cfg,
            fs,
            segments: Vec::new(),
            next_seq,
            bytes_on_disk: 0,
            in_flight: HashMap::new(),
            redeliver: BTreeMap::new(),
            cursor_ms: None,
            dirty_segments: BTreeSet::new(),
            dirty_acks: BTreeSet::new(),
            dir_dirty: false,
            last_sync: Instant::now(),
            strikes: None,
            stats: SpoolStats::default(),
            tail,
        };
        for (seq, kinds) in files {
            if !kinds.contains(&Kind::Segment) {
                let path = acks_path(&dir, seq);
                if let Err(e) = spool.fs.remove(&path) {
                    tracing::warn!(path = %path.display(), error = %e, "spool: cannot remove orphan ack file");
                }
                continue;
            }
            let has_acks = kinds.contains(&Kind::Acks);
            let seg = spool.load_segment(seq, has_acks)?;
            if spool.cursor_ms.is_none() {
                spool.cursor_ms = seg.1;
            }
            spool.bytes_on_disk += seg.0.bytes();
            spool.segments.push(seg.0);
        }
        if let Err(e) = spool.gc() {
            tracing::warn!(error = %e, "spool: cannot remove a fully acknowledged segment");
        }
        if spool.stats.records_corrupt_skipped > 0 {
            tracing::warn!(
                regions = spool.stats.records_corrupt_skipped,
                bytes = spool.stats.bytes_corrupt_skipped,
                "spool: skipped damaged records on open"
            );
        }
        Ok(spool)
    }

    /// Scans one segment: returns its bookkeeping and the write time of its
    /// first unacked record.
    fn load_segment(
        &mut self,
        seq: u64,
        has_acks: bool,
    ) -> Result<(Segment, Option<u64>), SpoolError> {
        let (acked, acks_len) = if has_acks {
            self.load_acks(seq)?
        } else {
            (RangeSet::default(), 0)
        };
        let path = segment_path(&self.cfg.dir, seq);
        let (disk_len, header) = self.read_header(&path, SEGMENT_MAGIC)?;
        match header {
            Header::Valid => {}
            Header::Unsupported(found) => {
                return Err(SpoolError::UnsupportedVersion { path, found })
            }
            Header::Torn if disk_len == 0 => {}
            Header::Torn | Header::Corrupt => {
                self.stats.records_corrupt_skipped += 1;
                self.stats.bytes_corrupt_skipped += disk_len.min(FILE_HEADER_LEN);
            }
        }
        // Offsets are u32: anything past 4 GiB (no spool writes that) is damage.
        let end = disk_len.min(u64::from(u32::MAX)).max(FILE_HEADER_LEN);
        if disk_len > end {
            self.stats.records_corrupt_skipped += 1;
            self.stats.bytes_corrupt_skipped += disk_len - end;
        }
        let mut seg = Segment {
            seq,
            end,
            disk_len,
            acks_len,
            sealed: true,
            read_off: end,
            counted_to: end,
            acked,
            pending: 0,
            outstanding: 0,
        };
        let mut first_ms = None;
        let mut sc = Scanner::new(&mut self.fs, &path, FILE_HEADER_LEN, end, TS_LEN);
        while let Some(item) = sc.next().map_err(|e| io_err("reading", &path, e))? {
            match item {
                Item::Record { at, body, .. } => {
                    if seg.acked.contains(at as u32) {
                        continue;
                    }
                    if first_ms.is_none() {
                        first_ms = Some(split_body(sc.body(body)).0);
                        seg.read_off = at;
                    }
                    seg.pending += 1;
                }
                Item::Damaged { len, .. } => {
                    self.stats.records_corrupt_skipped += 1;
                    self.stats.bytes_corrupt_skipped += len;
                }
            }
        }
        Ok((seg, first_ms))
    }

    /// A file's length and what its header says.
    fn read_header(&mut self, path: &Path, magic: [u8; 8]) -> Result<(u64, Header), SpoolError> {
        let len = self
            .fs
            .len(path)
            .map_err(|e| io_err("reading length of", path, e))?;
        let mut head = [0u8; FILE_HEADER_LEN as usize];
        let n = self
            .fs
            .read_at(path, 0, &mut head)
            .map_err(|e| io_err("reading", path, e))?;
        Ok((len, check_header(&head[..n], magic)))
    }

    /// Loads an ack file's ranges, skipping damaged ack records.
    fn load_acks(&mut self, seq: u64) -> Result<(RangeSet, u64), SpoolError> {
        let path = acks_path(&self.cfg.dir, seq);
        let (len, header) = self.read_header(&path, ACKS_MAGIC)?;
        match header {
            Header::Valid => {}
            Header::Unsupported(found) => {
                return Err(SpoolError::UnsupportedVersion { path, found })
            }
            Header::Torn | Header::Corrupt => self.stats.ack_records_corrupt_skipped += 1,
        }
        let mut acked = RangeSet::default();
        let end = len.min(u64::from(u32::MAX));
        let mut sc = Scanner::new(&mut self.fs, &path, FILE_HEADER_LEN, end, RANGE_LEN);
        while let Some(item) = sc.next().map_err(|e| io_err("reading", &path, e))? {
            match item {
                Item::Record { body, .. } => {
                    for (start, end) in record::ack_ranges(sc.body(body)) {
                        acked.insert(start, end);
                    }
                }
                Item::Damaged { .. } => self.stats.ack_records_corrupt_skipped += 1,
            }
        }
        Ok((acked, len))
    }
}
