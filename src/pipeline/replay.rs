//! `llmtap replay PATH...`: resend traces kept on disk — the embedded
//! default's OTLP-JSON files (one export request per line), a dead-letter
//! file (one `{"reason", "request"}` per line), or a spool directory (its
//! records are acknowledged as they are delivered) — to the configured sink, with
//! the live pipeline's delivery rules. Re-sending is safe: MLflow upserts
//! spans by trace and span id, so a trace delivered twice is still one trace.
//! Files are read line by line; memory stays bounded by one batch.

use std::io::BufRead;
use std::path::Path;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;

use super::{lock, Deliverer};
use crate::config::Config;
use crate::metrics::Metrics;

/// What a replay did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Report {
    pub lines: u64,
    pub bad_lines: u64,
    pub spans: u64,
    pub exported: u64,
    pub dead_lettered: u64,
    pub dropped: u64,
    /// Spans of a spool directory not delivered, left in it for next time.
    pub kept: u64,
}

/// The spans of one line: an export request, or a dead-letter record holding one.
pub fn spans_of_line(line: &str) -> Option<Vec<Span>> {
    let mut v: serde_json::Value = serde_json::from_str(line).ok()?;
    if let Some(req) = v.get_mut("request") {
        v = req.take();
    }
    let req: ExportTraceServiceRequest = serde_json::from_value(v).ok()?;
    Some(
        req.resource_spans
            .into_iter()
            .flat_map(|r| r.scope_spans)
            .flat_map(|s| s.spans)
            .collect(),
    )
}

/// Replays every file in `paths` (a directory means its `*.jsonl` files).
pub async fn replay(cfg: &Config, paths: &[std::path::PathBuf]) -> Result<Report, String> {
    let metrics = Arc::new(Metrics::default());
    let sinks = crate::sinks::registry::build(&cfg.sinks, &cfg.sink_context())?;
    if sinks.is_empty() {
        return Err(
            "tracing is disabled (ENABLE_MLFLOW_TRACING=false): nowhere to replay to".into(),
        );
    }
    let mut deliverer = Targets(
        sinks
            .into_iter()
            .map(|s| Deliverer::new(s, cfg, metrics.clone(), false))
            .collect(),
    );
    let mut report = Report::default();
    let max = cfg.export.batch_max_spans;
    for path in paths.iter().filter(|p| is_spool(p)) {
        replay_spool(cfg, path, &mut deliverer, &mut report).await?;
        for (name, dir) in sink_spools(path) {
            // A sink's own spool goes to that sink (to all when none has its name).
            let mut only = deliverer.only(&name);
            let targets = only.as_mut().unwrap_or(&mut deliverer);
            let replayed = replay_spool(cfg, &dir, targets, &mut report).await;
            if let Some(t) = only {
                deliverer.0.extend(t.0);
            }
            replayed?;
        }
    }
    let files: Vec<_> = paths.iter().filter(|p| !is_spool(p)).cloned().collect();
    for path in expand(&files)? {
        let file = std::fs::File::open(&path).map_err(|e| format!("{}: {e}", path.display()))?;
        // Only what the file holds now: replaying a dead-letter file into a
        // sink that refuses again appends to that same file.
        let len = file.metadata().map_or(0, |m| m.len());
        let mut batch = Vec::new();
        for line in std::io::BufReader::new(std::io::Read::take(file, len)).lines() {
            let line = line.map_err(|e| format!("{}: {e}", path.display()))?;
            if line.trim().is_empty() {
                continue;
            }
            report.lines += 1;
            match spans_of_line(&line) {
                Some(spans) => {
                    report.spans += spans.len() as u64;
                    batch.extend(spans);
                }
                None => {
                    report.bad_lines += 1;
                    tracing::warn!(file = %path.display(), line = report.lines, "not an OTLP-JSON export request; skipped");
                }
            }
            if batch.len() >= max {
                deliverer.deliver(std::mem::take(&mut batch)).await;
            }
        }
        if !batch.is_empty() {
            deliverer.deliver(batch).await;
        }
    }
    report.exported = metrics.traces_exported.load(Relaxed);
    report.dead_lettered = metrics.dead_lettered.load(Relaxed);
    // Spans given up on but still in a spool directory are kept, not lost.
    let given_up = metrics.dropped_count("export_failed") + metrics.dropped_count("rejected");
    report.dropped = given_up.saturating_sub(report.kept);
    Ok(report)
}

/// Every configured sink's deliverer: a span counts as delivered when it
/// went somewhere for good at each of them.
struct Targets(Vec<Deliverer>);

impl Targets {
    async fn deliver(&mut self, spans: Vec<Span>) -> super::deliver::Outcome {
        let n = spans.len();
        let mut outcomes = Vec::with_capacity(self.0.len());
        for d in &mut self.0 {
            outcomes.push(d.deliver(spans.clone()).await);
        }
        super::deliver::Outcome::all_of(&outcomes, n)
    }

    /// The deliverer of the sink named `name` alone, if one is configured.
    fn only(&mut self, name: &str) -> Option<Targets> {
        let i = self.0.iter().position(|d| d.sink_name() == name)?;
        Some(Targets(vec![self.0.remove(i)]))
    }
}

/// The per-sink spools of a spool directory kept by several sinks
/// (`<dir>/sinks/<name>`), by name.
fn sink_spools(dir: &Path) -> Vec<(String, std::path::PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir.join("sinks")) else {
        return vec![];
    };
    let mut out: Vec<_> = entries
        .flatten()
        .filter(|e| e.path().is_dir())
        .map(|e| (e.file_name().to_string_lossy().into_owned(), e.path()))
        .collect();
    out.sort();
    out
}

/// A directory holding spool segment files (its own or its journal's), or
/// a spool's lock file.
fn is_spool(p: &Path) -> bool {
    let has_segments = |p: &Path| {
        std::fs::read_dir(p).is_ok_and(|d| {
            d.filter_map(|e| e.ok()).any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("seg-") && name.ends_with(".spool")
            })
        })
    };
    has_segments(p) || has_segments(&p.join(super::journal::DIR)) || p.join(lock::FILE).is_file()
}

/// Sends and acknowledges everything a spool directory holds: the spans in
/// its spool, then the exchanges in its journal (parsed here, as the live
/// pipeline would have). The directory is locked meanwhile; one a running
/// llmtap holds is refused.
async fn replay_spool(
    cfg: &Config,
    dir: &Path,
    deliverer: &mut Targets,
    report: &mut Report,
) -> Result<(), String> {
    use prost::Message;
    let mut settings = cfg.spool.clone().unwrap_or(crate::config::SpoolSettings {
        dir: dir.to_path_buf(),
        fsync_interval: None,
        max_bytes: u64::MAX / 2,
        segment_bytes: 16 << 20,
        ready_threshold: 1.0,
        max_hold: std::time::Duration::from_secs(2),
    });
    settings.dir = dir.to_path_buf();
    let _lock = lock::acquire(dir).map_err(|e| match e {
        lock::LockError::InUse { .. } => format!(
            "{e}: stop it first (it sends what the spool holds itself), or replay a copy of the directory"
        ),
        other => other.to_string(),
    })?;
    let spool = super::spooled::open(&settings).map_err(|e| format!("{}: {e}", dir.display()))?;
    let span = |payload: &[u8]| Span::decode(payload).ok();
    drain(cfg, spool, &span, deliverer, report)
        .await
        .map_err(|e| format!("{}: {e}", dir.display()))?;
    let journal_dir = dir.join(super::journal::DIR);
    if !journal_dir.is_dir() {
        return Ok(());
    }
    let journal =
        super::journal::open(&settings).map_err(|e| format!("{}: {e}", journal_dir.display()))?;
    let cap = cfg.max_capture_bytes;
    // Sessions start afresh: the live process's memory is gone.
    let enrich = super::enrich::Enricher::new(cfg, Arc::new(Metrics::default()));
    let parsed = |payload: &[u8]| {
        let ex = super::journal::codec::decode(payload).ok()?;
        let (mut record, built) = crate::trace::build(&ex, cap);
        enrich.apply(&ex, &mut record, &built.call);
        Some(crate::otlp::to_span(&record))
    };
    drain(cfg, journal, &parsed, deliverer, report)
        .await
        .map_err(|e| format!("{}: {e}", journal_dir.display()))
}

/// Delivers a spool's records as spans, acknowledging exactly the records
/// whose spans went somewhere (exported or dead-lettered) — a batch split
/// for the sink can be partly delivered — and unreadable ones. Stops at the
/// first batch not wholly delivered; the rest stays in the spool.
async fn drain(
    cfg: &Config,
    mut spool: super::spool::Spool,
    to_span: &dyn Fn(&[u8]) -> Option<Span>,
    deliverer: &mut Targets,
    report: &mut Report,
) -> Result<(), super::spool::SpoolError> {
    loop {
        let batch = spool.next_batch(cfg.export.batch_max_spans, cfg.export.batch_max_bytes)?;
        if batch.is_empty() {
            break;
        }
        // Unreadable records: nothing to send, nothing to keep.
        let mut done = Vec::new();
        let mut span_ids = Vec::new();
        let mut spans = Vec::new();
        for (id, payload) in batch {
            report.lines += 1;
            match to_span(&payload) {
                Some(s) => {
                    spans.push(s);
                    span_ids.push(id);
                }
                None => {
                    report.bad_lines += 1;
                    done.push(id);
                }
            }
        }
        report.spans += spans.len() as u64;
        let kept = match spans.is_empty() {
            true => Vec::new(),
            false => {
                let (sent, kept) = deliverer.deliver(spans).await.partition(span_ids);
                done.extend(sent);
                kept
            }
        };
        spool.ack(&done)?;
        if !kept.is_empty() {
            report.kept += kept.len() as u64;
            spool.nack(&kept);
            break;
        }
    }
    spool.flush()
}

fn expand(paths: &[std::path::PathBuf]) -> Result<Vec<std::path::PathBuf>, String> {
    let mut out = Vec::new();
    for p in paths {
        if p.is_dir() {
            let mut files: Vec<_> = std::fs::read_dir(p)
                .map_err(|e| format!("{}: {e}", p.display()))?
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|f| f.extension().is_some_and(|x| x == "jsonl"))
                .collect();
            files.sort();
            out.extend(files);
        } else if Path::new(p).exists() {
            out.push(p.clone());
        } else {
            return Err(format!("{}: no such file or directory", p.display()));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::{SpanRecord, SpanStatus};

    fn line() -> String {
        let r = SpanRecord {
            trace_id: [0xab; 16],
            span_id: [0xcd; 8],
            parent_span_id: None,
            name: "Completions".into(),
            start_unix_nano: 1_764_000_000_000_000_000,
            end_unix_nano: 1_764_000_001_000_000_000,
            status: SpanStatus::Error("HTTP 429: slow".into()),
            attributes: vec![("gen_ai.usage.input_tokens".into(), 9i64.into())],
            events: vec![],
        };
        crate::otlp::to_json_line(&crate::otlp::request("svc", vec![crate::otlp::to_span(&r)]))
    }

    #[test]
    fn file_sink_lines_round_trip() {
        let spans = spans_of_line(&line()).expect("parses");
        assert_eq!(spans.len(), 1);
        assert_eq!(spans[0].trace_id, vec![0xab; 16]);
        assert_eq!(spans[0].span_id, vec![0xcd; 8]);
        assert_eq!(spans[0].start_time_unix_nano, 1_764_000_000_000_000_000);
        assert_eq!(spans[0].status.as_ref().unwrap().code, 2);
        assert_eq!(spans[0].attributes[0].key, "gen_ai.usage.input_tokens");
    }

    #[test]
    fn dead_letter_lines_and_garbage() {
        let dl = format!("{{\"reason\":\"HTTP 400\",\"request\":{}}}", line());
        assert_eq!(spans_of_line(&dl).unwrap().len(), 1);
        assert!(spans_of_line("not json").is_none());
        assert!(spans_of_line("{\"resourceSpans\":7}").is_none());
    }

    #[tokio::test]
    async fn a_spool_dir_with_unparsed_exchanges_is_parsed_sent_and_emptied() {
        use crate::config::{Env, Flags};
        let tmp = tempfile::tempdir().unwrap();
        let spool_dir = tmp.path().join("spool");
        let out = tmp.path().join("out");
        let env: Env = [
            ("LLMTAP_TRACE_DIR", out.to_str().unwrap()),
            ("LLMTAP_SPOOL_DIR", spool_dir.to_str().unwrap()),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let cfg = crate::config::resolve(&Flags::default(), &env, None).unwrap();
        let settings = cfg.spool.clone().expect("spool on");
        // What a killed process leaves: an exchange journaled, never parsed.
        let started = std::time::Instant::now();
        let ex = crate::exchange::Exchange {
            trace_id: [0x5a; 16],
            span_id: [0x5b; 8],
            api: crate::route::Api::ChatCompletions,
            provider: "openai",
            deployment: None,
            method: "POST".into(),
            path: "/v1/chat/completions".into(),
            started_wall: std::time::SystemTime::now(),
            started,
            ended: started,
            request: None,
            response_head: None,
            response: None,
            proxy_error: Some("upstream unreachable".into()),
            proxy_status: Some(502),
            usage_hiding_failed: None,
            context: Default::default(),
            privacy: Default::default(),
        };
        {
            let mut j = crate::pipeline::journal::open(&settings).unwrap();
            j.append(&crate::pipeline::journal::codec::encode(&ex, 1 << 20))
                .unwrap();
            j.append(b"garbage").unwrap();
            j.flush().unwrap();
        }
        assert!(is_spool(&spool_dir), "a journal alone makes a spool dir");
        let report = replay(&cfg, std::slice::from_ref(&spool_dir))
            .await
            .unwrap();
        assert_eq!((report.spans, report.bad_lines), (1, 1), "{report:?}");
        let written: String = std::fs::read_dir(&out)
            .unwrap()
            .map(|e| std::fs::read_to_string(e.unwrap().path()).unwrap())
            .collect();
        let spans = spans_of_line(written.lines().next().unwrap()).unwrap();
        assert_eq!(spans[0].trace_id, vec![0x5a; 16]);
        assert_eq!(
            spans[0].status.as_ref().unwrap().code,
            2,
            "the 502 is an error span"
        );
        let j = crate::pipeline::journal::open(&settings).unwrap();
        assert_eq!(j.stats().records_pending, 0, "acknowledged once sent");
    }
}
