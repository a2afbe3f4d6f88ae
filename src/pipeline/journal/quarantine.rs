//! Quarantined journal records: the raw record of an exchange whose parse
//! killed the process twice, kept for a human, never parsed again.
//!
//! One file per record in `<spool.dir>/quarantine/` (directory 0700, files
//! 0600: they hold prompts), named
//! `<unix ms, 13 digits>-<journal segment>-<offset>.exchange` so that names
//! sort oldest first. A file is one line of JSON, then the record's bytes:
//!
//! ```text
//! {"format":"llmtap quarantined exchange","version":1,"reason":"...",
//!  "quarantined_unix_ms":...,"trace_id":"tr-...","journal_segment":...,
//!  "journal_offset":...,"strikes":2,"payload_bytes":...,"payload_truncated":false}\n
//! <payload_bytes bytes: the journal record, a protobuf `ExchangeRecord`
//!  (src/pipeline/journal/codec.rs)>
//! ```
//!
//! `head -1 FILE` shows the header; `tail -n +2 FILE | protoc --decode_raw`
//! shows the record (the request and response bodies appear as strings).
//! Capped: at most [`MAX_FILES`] files and [`MAX_BYTES`] bytes; the oldest
//! are removed to make room, and a record longer than the byte cap is cut.
//!
//! Nothing here decodes the record: decoding may be what crashed.

use std::fs::{self, DirBuilder, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// The quarantine directory inside the spool directory.
pub const DIR: &str = "quarantine";
/// Quarantine files kept at most.
pub const MAX_FILES: usize = 32;
/// Bytes of quarantine files kept at most.
pub const MAX_BYTES: u64 = 256 << 20;
/// Directory entries looked at, at most, when making room.
const MAX_SCAN: usize = 4096;
const SUFFIX: &str = ".exchange";

/// One record to quarantine and why.
pub struct Entry<'a> {
    pub segment: u64,
    pub offset: u32,
    pub trace_id: Option<String>,
    pub strikes: u8,
    pub reason: &'a str,
    pub now_ms: u64,
    pub payload: &'a [u8],
}

/// The header line of a quarantine file (pure).
pub fn header(e: &Entry<'_>, kept: usize) -> String {
    serde_json::json!({
        "format": "llmtap quarantined exchange",
        "version": 1,
        "reason": e.reason,
        "quarantined_unix_ms": e.now_ms,
        "trace_id": e.trace_id,
        "journal_segment": e.segment,
        "journal_offset": e.offset,
        "strikes": e.strikes,
        "payload_bytes": kept,
        "payload_truncated": kept < e.payload.len(),
    })
    .to_string()
}

fn is_ours(name: &str) -> bool {
    name.ends_with(SUFFIX) && name.as_bytes().first().is_some_and(u8::is_ascii_digit)
}

/// The record's file name suffix (same record, same suffix).
fn record_suffix(segment: u64, offset: u32) -> String {
    format!("-{segment}-{offset}{SUFFIX}")
}

/// Writes `e` to `dir` (created 0700), making room first; returns the file.
/// A record already quarantined (a crash between writing its file and
/// acking it) is not written twice.
pub fn write(dir: &Path, e: &Entry<'_>) -> io::Result<PathBuf> {
    DirBuilder::new().recursive(true).mode(0o700).create(dir)?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700))?;
    let suffix = record_suffix(e.segment, e.offset);
    let mut files = existing(dir)?;
    if let Some((name, _)) = files.iter().find(|(n, _)| n.ends_with(&suffix)) {
        return Ok(dir.join(name));
    }
    let kept = e.payload.len().min(MAX_BYTES as usize);
    let head = header(e, kept);
    let size = (head.len() + 1 + kept) as u64;
    make_room(dir, &mut files, size);
    let path = dir.join(format!("{:013}{suffix}", e.now_ms));
    let mut f = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&path)?;
    f.write_all(head.as_bytes())?;
    f.write_all(b"\n")?;
    f.write_all(&e.payload[..kept])?;
    f.sync_all()?;
    fs::File::open(dir)?.sync_all()?;
    Ok(path)
}

/// Our files in `dir`, oldest first, with their sizes.
fn existing(dir: &Path) -> io::Result<Vec<(String, u64)>> {
    let mut files = Vec::new();
    for entry in fs::read_dir(dir)?.take(MAX_SCAN).flatten() {
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        if is_ours(&name) {
            let len = entry.metadata().map_or(0, |m| m.len());
            files.push((name, len));
        }
    }
    files.sort();
    Ok(files)
}

/// Removes the oldest files until one of `size` bytes fits both caps.
fn make_room(dir: &Path, files: &mut Vec<(String, u64)>, size: u64) {
    let mut total: u64 = files.iter().map(|(_, n)| n).sum();
    while !files.is_empty() && (files.len() >= MAX_FILES || total + size > MAX_BYTES) {
        let (name, len) = files.remove(0);
        match fs::remove_file(dir.join(&name)) {
            Ok(()) => {
                tracing::info!(file = %name, "quarantine: removed the oldest file to stay within its cap")
            }
            Err(e) => {
                tracing::warn!(file = %name, error = %e, "quarantine: cannot remove an old file")
            }
        }
        total = total.saturating_sub(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(now_ms: u64, offset: u32, payload: &[u8]) -> Entry<'_> {
        Entry {
            segment: 4,
            offset,
            trace_id: Some("tr-0102".into()),
            strikes: 2,
            reason: "the process died twice while parsing it",
            now_ms,
            payload,
        }
    }

    fn names(dir: &Path) -> Vec<String> {
        existing(dir).unwrap().into_iter().map(|(n, _)| n).collect()
    }

    #[test]
    fn a_quarantine_file_is_a_header_line_then_the_record() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(DIR);
        let payload = b"\x0a\x02\x01\x02raw\nrecord";
        let path = write(&dir, &entry(1_764_000_000_000, 96, payload)).unwrap();
        assert_eq!(
            path.file_name().unwrap().to_str().unwrap(),
            "1764000000000-4-96.exchange"
        );
        let bytes = fs::read(&path).unwrap();
        let nl = bytes.iter().position(|&b| b == b'\n').unwrap();
        let head: serde_json::Value = serde_json::from_slice(&bytes[..nl]).unwrap();
        assert_eq!(head["reason"], "the process died twice while parsing it");
        assert_eq!(head["trace_id"], "tr-0102");
        assert_eq!(head["strikes"], 2);
        assert_eq!(head["payload_bytes"], payload.len());
        assert_eq!(&bytes[nl + 1..], payload);
        let mode = |p: &Path| fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&path), 0o600);
        assert_eq!(mode(&dir), 0o700);
        // The same record again (a crash before its ack): no second file.
        assert_eq!(
            write(&dir, &entry(1_764_000_000_999, 96, payload)).unwrap(),
            path
        );
        assert_eq!(names(&dir).len(), 1);
    }

    #[test]
    fn the_oldest_files_go_to_stay_within_the_cap() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join(DIR);
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("notes.txt"), "not ours").unwrap();
        for i in 0..MAX_FILES as u32 + 3 {
            write(&dir, &entry(1_000_000_000_000 + u64::from(i), i, b"x")).unwrap();
        }
        let kept = names(&dir);
        assert_eq!(kept.len(), MAX_FILES);
        assert_eq!(
            kept[0], "1000000000003-4-3.exchange",
            "the three oldest went"
        );
        assert!(dir.join("notes.txt").exists(), "other files are left alone");
    }
}
