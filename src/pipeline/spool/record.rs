//! Byte layout shared by segment and ack files.
//!
//! ```text
//! file   = header record*
//! header = magic[8] | version: u32 LE | crc32(magic | version): u32 LE      (16 bytes)
//! record = len: u32 LE | crc32(body): u32 LE | body[len]
//! segment record body = written_at_unix_ms: u64 LE | payload
//! ack record body     = (start: u32 LE | end: u32 LE)+   acknowledged byte ranges
//! ```
//!
//! The checksum covers the whole body, so a segment record's write time is
//! as trustworthy as its payload.

pub(super) const FILE_HEADER_LEN: u64 = 16;
pub(super) const FRAME_LEN: u64 = 8;
/// The write time at the start of every segment record's body.
pub(super) const TS_LEN: u64 = 8;
/// One acknowledged range in an ack record's body.
pub(super) const RANGE_LEN: u64 = 8;
pub(super) const VERSION: u32 = 1;
pub(super) const SEGMENT_MAGIC: [u8; 8] = *b"LLMTAPSG";
pub(super) const ACKS_MAGIC: [u8; 8] = *b"LLMTAPAK";

/// The largest payload [`super::Spool::append`] takes.
pub const MAX_PAYLOAD: usize = 64 << 20;
/// The largest body the reader believes in; longer lengths are corruption.
pub(super) const MAX_BODY: u64 = MAX_PAYLOAD as u64 + TS_LEN;

/// What a file's first 16 bytes say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Header {
    Valid,
    /// Shorter than a header: the file's creation was cut short.
    Torn,
    /// Wrong magic or checksum.
    Corrupt,
    /// A well-formed header of a format version this build does not know.
    Unsupported(u32),
}

pub(super) fn file_header(magic: [u8; 8]) -> [u8; FILE_HEADER_LEN as usize] {
    let mut h = [0u8; FILE_HEADER_LEN as usize];
    h[..8].copy_from_slice(&magic);
    h[8..12].copy_from_slice(&VERSION.to_le_bytes());
    let crc = crc32fast::hash(&h[..12]);
    h[12..].copy_from_slice(&crc.to_le_bytes());
    h
}

pub(super) fn check_header(bytes: &[u8], magic: [u8; 8]) -> Header {
    if bytes.len() < FILE_HEADER_LEN as usize {
        return Header::Torn;
    }
    let crc = u32_at(bytes, 12);
    if bytes[..8] != magic || crc32fast::hash(&bytes[..12]) != crc {
        return Header::Corrupt;
    }
    match u32_at(bytes, 8) {
        VERSION => Header::Valid,
        v => Header::Unsupported(v),
    }
}

/// Appends one framed record whose body is the concatenation of `parts`.
pub(super) fn encode(out: &mut Vec<u8>, parts: &[&[u8]]) {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut h = crc32fast::Hasher::new();
    for p in parts {
        h.update(p);
    }
    out.reserve(FRAME_LEN as usize + len);
    out.extend_from_slice(&(len as u32).to_le_bytes());
    out.extend_from_slice(&h.finalize().to_le_bytes());
    for p in parts {
        out.extend_from_slice(p);
    }
}

/// A framed segment record.
pub(super) fn segment_record(written_ms: u64, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::new();
    encode(&mut out, &[&written_ms.to_le_bytes(), payload]);
    out
}

/// Bytes a segment record of `payload_len` occupies on disk.
pub(super) fn segment_record_len(payload_len: usize) -> u64 {
    FRAME_LEN + TS_LEN + payload_len as u64
}

/// A segment record's body as (write time, payload). The caller guarantees
/// `body.len() >= TS_LEN` (the scanner rejects shorter bodies).
pub(super) fn split_body(body: &[u8]) -> (u64, &[u8]) {
    let (ts, payload) = body.split_at(TS_LEN as usize);
    (u64_at(ts, 0), payload)
}

/// An ack record's body for sorted, disjoint ranges.
pub(super) fn ack_body(ranges: &[(u32, u32)]) -> Vec<u8> {
    let mut body = Vec::with_capacity(ranges.len() * RANGE_LEN as usize);
    for &(start, end) in ranges {
        body.extend_from_slice(&start.to_le_bytes());
        body.extend_from_slice(&end.to_le_bytes());
    }
    body
}

/// The ranges in an ack record's body; ill-formed ones are left out.
pub(super) fn ack_ranges(body: &[u8]) -> impl Iterator<Item = (u32, u32)> + '_ {
    body.chunks_exact(RANGE_LEN as usize)
        .map(|c| (u32_at(c, 0), u32_at(c, 4)))
        .filter(|&(start, end)| start < end)
}

pub(super) fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut w = [0u8; 4];
    w.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(w)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut w = [0u8; 8];
    w.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(w)
}

/// Milliseconds since the Unix epoch (0 if the clock is before it).
pub(super) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
