//! The embedded default sink: OTLP-JSON lines (one export request per line,
//! as the OpenTelemetry Collector's file exporter writes them) under a
//! directory, size-rotated, oldest files deleted past a count. Files are
//! created `0600` in a `0700` directory ([`crate::private`]); the writes run
//! on tokio's blocking pool, never on an async worker thread.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

pub mod config;

use super::{Assessment, Attempt, Sink, SinkFuture};
use crate::private;
pub use config::FileSinkConfig;

/// `kind = "file"`.
pub const KIND: &str = "file";

/// The sink a `[[sinks]]` entry or the shortcut describes.
pub fn build(name: &str, cfg: FileSinkConfig, _: &super::Context) -> Result<Arc<dyn Sink>, String> {
    Ok(Arc::new(FileSink::new(cfg).named(name)))
}

/// Writes trace files; see the module docs.
pub struct FileSink {
    name: String,
    dir: PathBuf,
    files: Arc<Mutex<Files>>,
}

/// The blocking side: the current file and the rotation.
struct Files {
    cfg: FileSinkConfig,
    current: Option<(File, u64)>,
    seq: u64,
}

impl FileSink {
    pub fn new(cfg: FileSinkConfig) -> Self {
        FileSink {
            name: "file".into(),
            dir: cfg.dir.clone(),
            files: Arc::new(Mutex::new(Files {
                cfg,
                current: None,
                seq: 0,
            })),
        }
    }

    /// The same sink under another name (several file sinks at once).
    pub fn named(mut self, name: &str) -> Self {
        self.name = name.to_string();
        self
    }

    /// Appends one request as one line, on the blocking pool.
    pub async fn append(&self, req: &ExportTraceServiceRequest) -> Attempt {
        let line = line(req);
        let files = self.files.clone();
        tokio::task::spawn_blocking(move || lock(&files).write(&line))
            .await
            .unwrap_or_else(|e| Attempt::io(format!("writing trace files: {e}")))
    }

    /// Appends one request as one line, on the calling thread (blocking).
    pub fn write(&mut self, req: &ExportTraceServiceRequest) -> Attempt {
        lock(&self.files).write(&line(req))
    }
}

impl Sink for FileSink {
    fn name(&self) -> &str {
        &self.name
    }

    fn kind(&self) -> &'static str {
        "file"
    }

    fn send<'a>(&'a self, batch: &'a ExportTraceServiceRequest) -> SinkFuture<'a, Attempt> {
        Box::pin(self.append(batch))
    }

    fn assess<'a>(&'a self, _: &'a Assessment) -> SinkFuture<'a, Attempt> {
        Box::pin(async { Attempt::unsupported("assessments", "file") })
    }

    fn describe(&self) -> String {
        format!("{}: files under {}", self.name, self.dir.display())
    }

    fn probe(&self) -> SinkFuture<'_, Result<(), String>> {
        let dir = self.dir.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || probe(&dir))
                .await
                .unwrap_or_else(|e| Err(format!("the trace directory probe failed: {e}")))
        })
    }
}

fn line(req: &ExportTraceServiceRequest) -> Vec<u8> {
    let mut line = crate::otlp::to_json_line(req);
    line.push('\n');
    line.into_bytes()
}

fn lock(files: &Mutex<Files>) -> std::sync::MutexGuard<'_, Files> {
    files.lock().unwrap_or_else(|e| e.into_inner())
}

impl Files {
    fn write(&mut self, line: &[u8]) -> Attempt {
        match self.append(line) {
            Ok(()) => Attempt::ok(),
            Err(e) => Attempt::io(format!("writing {}: {e}", self.cfg.dir.display())),
        }
    }

    fn append(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        let full = self
            .current
            .as_ref()
            .is_some_and(|(_, size)| *size >= self.cfg.max_file_bytes);
        if self.current.is_none() || full {
            self.current = None;
            self.current = Some((self.open_next()?, 0));
            self.prune()?;
        }
        let (file, size) = self.current.as_mut().expect("opened above");
        let written = file.write_all(bytes).and_then(|_| file.flush());
        if written.is_err() {
            // Start a fresh file next time rather than append after a partial line.
            self.current = None;
            return written;
        }
        *size += bytes.len() as u64;
        Ok(())
    }

    fn open_next(&mut self) -> std::io::Result<File> {
        private::create_dir(&self.cfg.dir)?;
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis())
            .unwrap_or(0);
        self.seq += 1;
        let name = format!("traces-{millis:015}-{:04}.jsonl", self.seq % 10_000);
        private::open_append(&self.cfg.dir.join(name))
    }

    /// Deletes the oldest trace files beyond `max_files`.
    fn prune(&self) -> std::io::Result<()> {
        let mut files = trace_files(&self.cfg.dir)?;
        files.sort();
        let excess = files.len().saturating_sub(self.cfg.max_files);
        for old in files.into_iter().take(excess) {
            fs::remove_file(old)?;
        }
        Ok(())
    }
}

/// The trace files in `dir`, in name (= creation) order.
pub fn trace_files(dir: &Path) -> std::io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        if name.starts_with("traces-") && name.ends_with(".jsonl") {
            out.push(path);
        }
    }
    out.sort();
    Ok(out)
}

/// Readiness: the directory exists (or can be made) and takes a write.
pub fn probe(dir: &Path) -> Result<(), String> {
    let check = || -> std::io::Result<()> {
        private::create_dir(dir)?;
        let probe = dir.join(".llmtap-ready-probe");
        fs::write(&probe, b"ok")?;
        fs::remove_file(probe)
    };
    check().map_err(|e| format!("trace directory {} is not writable: {e}", dir.display()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp;
    use crate::record::{SpanRecord, SpanStatus};

    fn req() -> ExportTraceServiceRequest {
        let r = SpanRecord {
            trace_id: [7; 16],
            span_id: [1; 8],
            parent_span_id: None,
            name: "Completions".into(),
            start_unix_nano: 1,
            end_unix_nano: 2,
            status: SpanStatus::Ok,
            attributes: vec![("k".into(), "v".repeat(100).into())],
            events: vec![],
        };
        otlp::request("llmtap", vec![otlp::to_span(&r)])
    }

    #[test]
    fn writes_json_lines_and_rotates_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let mut sink = FileSink::new(FileSinkConfig {
            dir: dir.path().join("t"),
            max_file_bytes: 600,
            max_files: 3,
        });
        for _ in 0..10 {
            assert_eq!(sink.write(&req()), Attempt::ok());
        }
        let files = trace_files(&dir.path().join("t")).unwrap();
        assert_eq!(files.len(), 3, "pruned to max_files");
        for f in files {
            let text = fs::read_to_string(f).unwrap();
            for line in text.lines() {
                let v: serde_json::Value = serde_json::from_str(line).unwrap();
                assert!(
                    v["resourceSpans"][0]["scopeSpans"][0]["spans"][0]["traceId"]
                        .as_str()
                        .unwrap()
                        .starts_with("0707")
                );
            }
        }
    }

    #[test]
    fn unwritable_directory_is_a_transient_failure() {
        let dir = tempfile::tempdir().unwrap();
        let blocker = dir.path().join("file");
        fs::write(&blocker, b"x").unwrap();
        let mut sink = FileSink::new(FileSinkConfig {
            dir: blocker.join("sub"),
            max_file_bytes: 1000,
            max_files: 3,
        });
        assert!(matches!(
            sink.write(&req()).verdict,
            crate::sinks::Verdict::Retry { .. }
        ));
        assert!(probe(&blocker.join("sub")).is_err());
        assert!(probe(dir.path()).is_ok());
    }
}
