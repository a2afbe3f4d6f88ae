//! The dead-letter file: batches a sink refused for good (4xx other than
//! 408/429/413), with the reason, as JSON lines — never retried forever,
//! never silently dropped. `llmtap replay` (a later piece) can resend them.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::PathBuf;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;

/// Appends refused batches to `<dir>/dead-letter.jsonl`.
pub struct DeadLetter {
    dir: PathBuf,
}

impl DeadLetter {
    pub fn new(dir: PathBuf) -> Self {
        DeadLetter { dir }
    }

    /// The file's path.
    pub fn path(&self) -> PathBuf {
        self.dir.join("dead-letter.jsonl")
    }

    /// Writes one line: `{"time_unix_ms", "sink", "reason", "request": <OTLP-JSON>}`.
    pub fn write(
        &self,
        sink: &str,
        reason: &str,
        req: &ExportTraceServiceRequest,
    ) -> std::io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let time = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0);
        let request: serde_json::Value =
            serde_json::to_value(req).unwrap_or(serde_json::Value::Null);
        let mut line = serde_json::json!({
            "time_unix_ms": time,
            "sink": sink,
            "reason": reason,
            "request": request,
        })
        .to_string();
        line.push('\n');
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.path())?;
        f.write_all(line.as_bytes())?;
        f.sync_data()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn writes_reason_and_request() {
        let dir = tempfile::tempdir().unwrap();
        let dl = DeadLetter::new(dir.path().join("dl"));
        let req = crate::otlp::request("svc", vec![]);
        dl.write("mlflow", "HTTP 400: bad", &req).unwrap();
        dl.write("mlflow", "HTTP 404: no experiment", &req).unwrap();
        let text = fs::read_to_string(dl.path()).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["reason"], "HTTP 400: bad");
        assert_eq!(lines[1]["sink"], "mlflow");
        assert!(lines[0]["request"]["resourceSpans"].is_array());
    }
}
