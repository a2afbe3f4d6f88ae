//! Where one sink's feedback waits on disk, and where it ends when it cannot
//! be delivered. Blocking I/O: call it on the blocking pool.
//!
//! Each accepted item is one small JSON file, `fb-<unix ms>-<seq>-<rand>.json`,
//! in `<spool.dir>/feedback/<sink>/`: written to a temporary name, fsynced,
//! renamed, the directory fsynced — so after a crash it is either whole or
//! absent — and deleted once the sink took it. Files are `0600` in `0700`
//! directories. At start every file is read back; one that is not a
//! well-formed item (torn, foreign, too large) goes to the dead-letter file
//! and is deleted, so nothing on disk can fail a start twice.
//!
//! The dead-letter file is `<export.dead_letter_dir>/feedback/<sink>.jsonl`,
//! one JSON line per item given up on, capped at
//! `export.dead_letter_max_file_bytes` (past it items are dropped, logged).
//! With the spool off there is no directory: items live in memory only.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use super::body::{self, Record};
use crate::private;

/// Stored items are small: a larger file is not one of them.
const MAX_FILE_BYTES: u64 = (body::MAX_BODY_BYTES as u64) * 2 + 4096;
const PREFIX: &str = "fb-";
const SUFFIX: &str = ".json";
const TMP_PREFIX: &str = ".tmp-";

/// One sink's feedback directory and dead-letter file.
#[derive(Debug, Clone)]
pub struct Store {
    /// `None`: the spool is off (memory only).
    pub dir: Option<PathBuf>,
    pub dead_letter: PathBuf,
    pub dead_letter_max_bytes: u64,
}

/// What a start found in the directory.
#[derive(Debug, Default)]
pub struct Found {
    /// Well-formed items: file name, trace id, the stored JSON.
    pub items: Vec<(String, String, Vec<u8>)>,
    /// Files that were not, dead-lettered and deleted: how many.
    pub bad: usize,
}

/// A fresh, unique file name for an item accepted at `ms`.
pub fn new_name(ms: u64) -> String {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let seq = SEQ.fetch_add(1, Relaxed) % 1_000_000;
    format!(
        "{PREFIX}{ms:015}-{seq:06}-{:08x}{SUFFIX}",
        fastrand::u32(..)
    )
}

impl Store {
    /// Writes an item durably (see the module docs). Memory-only: nothing.
    pub fn save(&self, name: &str, bytes: &[u8]) -> io::Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        private::create_dir(dir)?;
        let tmp = dir.join(format!("{TMP_PREFIX}{name}"));
        let mut f = create_private(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, dir.join(name))?;
        sync_dir(dir)
    }

    /// Deletes a delivered (or dead-lettered) item.
    pub fn remove(&self, name: &str) -> io::Result<()> {
        let Some(dir) = &self.dir else { return Ok(()) };
        match fs::remove_file(dir.join(name)) {
            Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }

    /// Reads back every item; see the module docs for the bad ones.
    pub fn load(&self, sink: &str) -> Found {
        let mut found = Found::default();
        let Some(dir) = &self.dir else { return found };
        let Ok(entries) = fs::read_dir(dir) else {
            return found;
        };
        let mut names: Vec<String> = entries
            .flatten()
            .filter_map(|e| e.file_name().into_string().ok())
            .collect();
        names.sort();
        for name in names {
            let path = dir.join(&name);
            if name.starts_with(TMP_PREFIX) {
                let _ = fs::remove_file(&path);
            } else if name.starts_with(PREFIX) && name.ends_with(SUFFIX) {
                match read_item(&path) {
                    Ok((record, json)) => found.items.push((name, record.trace_id, json)),
                    Err((reason, raw)) => {
                        tracing::error!(file = %path.display(), reason = %reason, "unreadable feedback file: moved to the dead-letter file");
                        let _ = self.dead_letter(sink, &reason, None, Some(&raw));
                        let _ = fs::remove_file(&path);
                        found.bad += 1;
                    }
                }
            }
        }
        found
    }

    /// Appends one line `{"time_unix_ms", "sink", "reason", "feedback",
    /// "raw"}` and fsyncs it. `Ok(false)`: the file is at its cap, the item
    /// is dropped.
    pub fn dead_letter(
        &self,
        sink: &str,
        reason: &str,
        record: Option<&Record>,
        raw: Option<&str>,
    ) -> io::Result<bool> {
        let mut line = serde_json::json!({
            "time_unix_ms": super::now_ms(),
            "sink": sink,
            "reason": reason,
            "feedback": record,
            "raw": raw,
        })
        .to_string();
        line.push('\n');
        if let Some(parent) = self.dead_letter.parent() {
            private::create_dir(parent)?;
        }
        let mut f = private::open_append(&self.dead_letter)?;
        let size = f.metadata()?.len();
        if size > 0 && size + line.len() as u64 > self.dead_letter_max_bytes {
            return Ok(false);
        }
        f.write_all(line.as_bytes())?;
        f.sync_data()?;
        Ok(true)
    }
}

/// An item's record and bytes, or why the file is not one (and an excerpt).
fn read_item(path: &Path) -> Result<(Record, Vec<u8>), (String, String)> {
    let f = File::open(path).map_err(|e| (format!("cannot open: {e}"), String::new()))?;
    let mut bytes = Vec::new();
    f.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| (format!("cannot read: {e}"), String::new()))?;
    let excerpt = || String::from_utf8_lossy(&bytes[..bytes.len().min(1024)]).into_owned();
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(("larger than any feedback item".into(), excerpt()));
    }
    let record: Record = serde_json::from_slice(&bytes)
        .map_err(|e| (format!("not a feedback item: {e}"), excerpt()))?;
    if body::trace_id(&record.trace_id).as_deref() != Ok(record.trace_id.as_str()) {
        return Err(("not a feedback item: bad trace_id".into(), excerpt()));
    }
    Ok((record, bytes))
}

/// Creates a new file `0600`.
fn create_private(path: &Path) -> io::Result<File> {
    let mut o = OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut o, private::FILE_MODE);
    o.open(path)
}

/// Makes a rename in `dir` durable.
fn sync_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    File::open(dir)?.sync_all()?;
    #[cfg(not(unix))]
    let _ = dir;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn store(tmp: &Path, cap: u64) -> Store {
        Store {
            dir: Some(tmp.join("spool/feedback/mlflow")),
            dead_letter: tmp.join("dl/feedback/mlflow.jsonl"),
            dead_letter_max_bytes: cap,
        }
    }

    fn record() -> Record {
        body::parse(
            br#"{"trace_id": "tr-0123456789abcdef0123456789abcdef", "value": 1}"#,
            5,
        )
        .unwrap()
    }

    #[test]
    fn saved_items_come_back_private_and_go_when_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path(), 1 << 20);
        let name = new_name(5);
        s.save(&name, &serde_json::to_vec(&record()).unwrap())
            .unwrap();
        assert_ne!(new_name(5), name);
        let found = s.load("mlflow");
        assert_eq!(found.items.len(), 1);
        assert_eq!(found.items[0].0, name);
        assert_eq!(found.items[0].1, record().trace_id);
        let back: Record = serde_json::from_slice(&found.items[0].2).unwrap();
        assert_eq!(back, record());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = s.dir.as_ref().unwrap().join(&name);
            let mode = fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        s.remove(&name).unwrap();
        s.remove(&name).unwrap();
        assert!(s.load("mlflow").items.is_empty());
    }

    #[test]
    fn bad_files_are_dead_lettered_once_and_temporaries_deleted() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path(), 1 << 20);
        let dir = s.dir.clone().unwrap();
        fs::create_dir_all(&dir).unwrap();
        fs::write(dir.join("fb-1.json"), b"{\"trace_id\": \"tr-12").unwrap();
        fs::write(
            dir.join("fb-2.json"),
            vec![b'x'; MAX_FILE_BYTES as usize + 10],
        )
        .unwrap();
        let foreign = json!({"trace_id": "../x", "name": "n", "value": 1, "comment": null,
            "user": null, "accepted_unix_ms": 1});
        fs::write(dir.join("fb-3.json"), foreign.to_string()).unwrap();
        fs::write(dir.join(".tmp-fb-4.json"), b"half").unwrap();
        fs::write(dir.join("other.txt"), b"left alone").unwrap();
        let found = s.load("mlflow");
        assert_eq!((found.items.len(), found.bad), (0, 3));
        let lines = fs::read_to_string(&s.dead_letter).unwrap();
        assert_eq!(lines.lines().count(), 3);
        assert!(lines.contains("not a feedback item"));
        let left: Vec<_> = fs::read_dir(&dir)
            .unwrap()
            .flatten()
            .map(|e| e.file_name())
            .collect();
        assert_eq!(left, ["other.txt"]);
        assert_eq!(s.load("mlflow").bad, 0, "nothing is dead-lettered twice");
    }

    #[test]
    fn the_dead_letter_file_is_capped() {
        let tmp = tempfile::tempdir().unwrap();
        let s = store(tmp.path(), 300);
        assert!(s
            .dead_letter("mlflow", "gone", Some(&record()), None)
            .unwrap());
        assert!(!s
            .dead_letter("mlflow", "gone", Some(&record()), None)
            .unwrap());
        let line: serde_json::Value =
            serde_json::from_str(fs::read_to_string(&s.dead_letter).unwrap().trim()).unwrap();
        assert_eq!(line["feedback"]["trace_id"], record().trace_id);
        assert_eq!(line["reason"], "gone");
    }

    #[test]
    fn memory_only_stores_nothing() {
        let tmp = tempfile::tempdir().unwrap();
        let s = Store {
            dir: None,
            ..store(tmp.path(), 100)
        };
        s.save("fb-x.json", b"{}").unwrap();
        assert!(s.load("m").items.is_empty());
        assert!(!tmp.path().join("spool").exists());
    }
}
