//! Per-sink metrics: each sink's deliveries, retries, refusals and spool,
//! labelled `sink="<name>"`. The unlabelled totals (`llmtap_traces_exported_total`,
//! `llmtap_spool_*`, ...) stay, summed over the sinks.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};

use dashmap::DashMap;

use crate::pipeline::spool::SpoolStats;

/// A labelled series: name, type, help, and how to read it off a sink.
type Series = (
    &'static str,
    &'static str,
    &'static str,
    fn(&SinkCounters) -> f64,
);
/// A spool gauge: name, help, and how to read it off the statistics.
type SpoolSeries = (&'static str, &'static str, fn(&SpoolStats) -> f64);

/// One sink's counters.
#[derive(Debug, Default)]
pub struct SinkCounters {
    /// Spans the sink accepted.
    pub exported: AtomicU64,
    /// Attempts retried after a transient failure.
    pub retries: AtomicU64,
    /// Batches given up on or refused.
    pub failures: AtomicU64,
    /// Spans the sink refused for good, kept in its dead-letter file.
    pub dead_lettered: AtomicU64,
    /// Spans lost for this sink, by reason.
    dropped: DashMap<&'static str, AtomicU64>,
    /// Unix time (seconds) of the last accepted batch; 0 before the first.
    pub last_success: AtomicU64,
    /// This sink's spool: its latest statistics and size cap (spool on).
    pub spool: Mutex<Option<(SpoolStats, u64)>>,
}

impl SinkCounters {
    pub fn dropped(&self, reason: &'static str, n: u64) {
        self.dropped
            .entry(reason)
            .or_default()
            .fetch_add(n, Relaxed);
    }

    /// An accepted batch of `n` spans.
    pub fn exported(&self, n: u64) {
        self.exported.fetch_add(n, Relaxed);
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        self.last_success.store(now, Relaxed);
    }

    fn spool_stats(&self) -> Option<(SpoolStats, u64)> {
        self.spool.lock().ok().and_then(|g| g.clone())
    }
}

/// Every sink's counters, by name.
#[derive(Debug, Default)]
pub struct Sinks(DashMap<String, Arc<SinkCounters>>);

impl Sinks {
    /// The counters of sink `name` (made on first use).
    pub fn get(&self, name: &str) -> Arc<SinkCounters> {
        self.0.entry(name.to_string()).or_default().clone()
    }

    /// Every sink's spool statistics and cap.
    pub fn spools(&self) -> Vec<(SpoolStats, u64)> {
        self.0
            .iter()
            .filter_map(|e| e.value().spool_stats())
            .collect()
    }

    pub fn render(&self, out: &mut String) {
        let mut rows: Vec<_> = self
            .0
            .iter()
            .map(|e| (e.key().clone(), e.value().clone()))
            .collect();
        rows.sort_by(|a, b| a.0.cmp(&b.0));
        let series: [Series; 5] = [
            (
                "llmtap_sink_traces_exported_total",
                "counter",
                "Spans accepted, by sink.",
                |c| c.exported.load(Relaxed) as f64,
            ),
            (
                "llmtap_sink_export_retries_total",
                "counter",
                "Export attempts retried after a transient failure, by sink.",
                |c| c.retries.load(Relaxed) as f64,
            ),
            (
                "llmtap_sink_export_failures_total",
                "counter",
                "Batches given up on or refused, by sink.",
                |c| c.failures.load(Relaxed) as f64,
            ),
            (
                "llmtap_sink_traces_dead_lettered_total",
                "counter",
                "Spans refused for good and kept in the sink's dead-letter file, by sink.",
                |c| c.dead_lettered.load(Relaxed) as f64,
            ),
            (
                "llmtap_sink_last_success_timestamp_seconds",
                "gauge",
                "Unix time of the sink's last accepted batch (0: none yet).",
                |c| c.last_success.load(Relaxed) as f64,
            ),
        ];
        for (name, kind, help, value) in series {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for (sink, c) in &rows {
                let _ = writeln!(out, "{name}{{sink=\"{sink}\"}} {}", value(c));
            }
        }
        out.push_str("# HELP llmtap_sink_traces_dropped_total Spans lost for one sink, by sink and reason.\n# TYPE llmtap_sink_traces_dropped_total counter\n");
        for (sink, c) in &rows {
            for e in c.dropped.iter() {
                let (reason, n) = (e.key(), e.value().load(Relaxed));
                let _ = writeln!(
                    out,
                    "llmtap_sink_traces_dropped_total{{sink=\"{sink}\",reason=\"{reason}\"}} {n}"
                );
            }
        }
        render_spools(out, &rows);
    }
}

fn render_spools(out: &mut String, rows: &[(String, Arc<SinkCounters>)]) {
    let spools: Vec<_> = rows
        .iter()
        .filter_map(|(sink, c)| c.spool_stats().map(|s| (sink, s)))
        .collect();
    if spools.is_empty() {
        return;
    }
    let series: [SpoolSeries; 3] = [
        (
            "llmtap_sink_spool_records",
            "Traces in the sink's spool not yet accepted by it.",
            |s| s.records_pending as f64,
        ),
        (
            "llmtap_sink_spool_bytes",
            "Bytes of the sink's spool files on disk.",
            |s| s.bytes_on_disk as f64,
        ),
        (
            "llmtap_sink_spool_oldest_unsent_seconds",
            "Age of the oldest trace the sink has not accepted yet.",
            |s| s.oldest_unacked_age.map_or(0.0, |a| a.as_secs_f64()),
        ),
    ];
    for (name, help, value) in series {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge");
        for (sink, (s, _)) in &spools {
            let _ = writeln!(out, "{name}{{sink=\"{sink}\"}} {}", value(s));
        }
    }
}
