//! The dead-letter files: batches a sink refused for good (4xx other than
//! 408/429/413), with the reason, as JSON lines — never retried forever,
//! never silently dropped. `llmtap replay` can resend them.
//!
//! Lines go to `<dir>/dead-letter.jsonl`. A line that would take it past
//! `export.dead_letter_max_file_bytes` first renames it to
//! `dead-letter-<unix ms>-<seq>.jsonl` (so names sort oldest first, and the
//! current file last); past `export.dead_letter_max_files` files in all the
//! oldest are deleted, and the spans they held are reported to the caller to
//! be counted. Files are `0600` in a `0700` directory; every write is
//! fsynced, on tokio's blocking pool, never on an async worker thread.

use std::fs::{self, File};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

use crate::private;

/// The file lines are appended to.
const CURRENT: &str = "dead-letter.jsonl";
/// Rotated files: `dead-letter-<ms>-<seq>.jsonl`.
const ROTATED_PREFIX: &str = "dead-letter-";

/// Appends refused batches to the dead-letter files; see the module docs.
pub struct DeadLetter {
    dir: PathBuf,
    files: Arc<Mutex<Files>>,
}

/// The blocking side: the open current file and the rotation.
struct Files {
    dir: PathBuf,
    max_file_bytes: u64,
    max_files: usize,
    current: Option<(File, u64)>,
    seq: u64,
}

impl DeadLetter {
    /// Files under `dir`, each at most `max_file_bytes` (unless one line is
    /// larger), at most `max_files` of them.
    pub fn new(dir: PathBuf, max_file_bytes: u64, max_files: usize) -> Self {
        let files = Files {
            dir: dir.clone(),
            max_file_bytes,
            max_files: max_files.max(1),
            current: None,
            seq: 0,
        };
        DeadLetter {
            dir,
            files: Arc::new(Mutex::new(files)),
        }
    }

    /// The current file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join(CURRENT)
    }

    /// Writes one line, `{"time_unix_ms", "sink", "reason", "spans",
    /// "request": <OTLP-JSON>}`, and fsyncs it. Returns how many spans were
    /// in files deleted to make room (lost for good).
    pub async fn write(
        &self,
        sink: &str,
        reason: &str,
        req: &ExportTraceServiceRequest,
    ) -> std::io::Result<u64> {
        let line = line(sink, reason, req);
        let files = self.files.clone();
        tokio::task::spawn_blocking(move || {
            files
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .append(line.as_bytes())
        })
        .await
        .map_err(std::io::Error::other)?
    }
}

fn line(sink: &str, reason: &str, req: &ExportTraceServiceRequest) -> String {
    let time = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0);
    let spans: usize = req
        .resource_spans
        .iter()
        .flat_map(|r| &r.scope_spans)
        .map(|s| s.spans.len())
        .sum();
    let request: serde_json::Value = serde_json::to_value(req).unwrap_or(serde_json::Value::Null);
    let mut line = serde_json::json!({
        "time_unix_ms": time,
        "sink": sink,
        "reason": reason,
        "spans": spans,
        "request": request,
    })
    .to_string();
    line.push('\n');
    line
}

impl Files {
    fn append(&mut self, line: &[u8]) -> std::io::Result<u64> {
        let mut deleted = 0;
        let size = self.open()?.1;
        if size > 0 && size.saturating_add(line.len() as u64) > self.max_file_bytes {
            deleted = self.rotate()?;
        }
        let (file, size) = self.open()?;
        let written = file.write_all(line).and_then(|_| file.sync_data());
        match written {
            Ok(()) => *size += line.len() as u64,
            // A partial line may be there: a fresh look at the size next time.
            Err(_) => self.current = None,
        }
        written.map(|()| deleted)
    }

    /// The current file, opened (and created) if needed, and its size.
    fn open(&mut self) -> std::io::Result<&mut (File, u64)> {
        if self.current.is_none() {
            private::create_dir(&self.dir)?;
            let f = private::open_append(&self.dir.join(CURRENT))?;
            let size = f.metadata()?.len();
            self.current = Some((f, size));
        }
        Ok(self.current.as_mut().expect("opened above"))
    }

    /// Renames the current file aside, then deletes the oldest past the cap.
    fn rotate(&mut self) -> std::io::Result<u64> {
        self.current = None;
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        self.seq += 1;
        let name = format!(
            "{ROTATED_PREFIX}{millis:015}-{:04}.jsonl",
            self.seq % 10_000
        );
        fs::rename(self.dir.join(CURRENT), self.dir.join(name))?;
        let mut deleted = 0;
        let rotated = rotated_files(&self.dir)?;
        let excess = rotated.len().saturating_sub(self.max_files - 1);
        for old in rotated.into_iter().take(excess) {
            let spans = count_spans(&old);
            fs::remove_file(&old)?;
            tracing::warn!(file = %old.display(), spans, "dead-letter files at their cap: deleted the oldest");
            deleted += spans;
        }
        Ok(deleted)
    }
}

/// The rotated dead-letter files in `dir`, oldest first.
pub fn rotated_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with(ROTATED_PREFIX) && name.ends_with(".jsonl") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// The spans a dead-letter file holds: each line's `spans`, or (lines
/// written before that field) the spans in its request. Unreadable: 0.
fn count_spans(path: &Path) -> u64 {
    let Ok(f) = File::open(path) else { return 0 };
    let mut total = 0;
    for line in std::io::BufReader::new(f).lines() {
        let Ok(line) = line else { break };
        let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
            continue;
        };
        total += match v.get("spans").and_then(serde_json::Value::as_u64) {
            Some(n) => n,
            None => spans_in_request(&v["request"]),
        };
    }
    total
}

fn spans_in_request(req: &serde_json::Value) -> u64 {
    items(req, "resourceSpans")
        .iter()
        .flat_map(|r| items(r, "scopeSpans"))
        .map(|s| items(s, "spans").len() as u64)
        .sum()
}

fn items<'a>(v: &'a serde_json::Value, key: &str) -> &'a [serde_json::Value] {
    v.get(key)
        .and_then(serde_json::Value::as_array)
        .map_or(&[], Vec::as_slice)
}

#[cfg(test)]
mod tests;
