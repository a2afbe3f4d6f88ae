//! Process metrics, rendered as Prometheus text on the admin listener.
//!
//! A handful of counters and histograms on atomics: cheap enough for the
//! request path (one relaxed add per event) and no registry crate needed.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};
use std::time::Duration;

use dashmap::DashMap;

mod connections;
mod cost;
pub mod feedback;
mod sinks;
pub use connections::{Connections, Listener, Timeout};
pub use cost::CostMetrics;
pub use sinks::{SinkCounters, Sinks};

/// Latency histogram bucket bounds, in seconds.
const BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// A cumulative latency histogram.
#[derive(Debug, Default)]
pub struct Histogram {
    counts: [AtomicU64; BUCKETS.len()],
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn observe(&self, d: Duration) {
        let secs = d.as_secs_f64();
        if let Some(i) = BUCKETS.iter().position(|b| secs <= *b) {
            self.counts[i].fetch_add(1, Relaxed);
        }
        self.count.fetch_add(1, Relaxed);
        let micros = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        self.sum_micros.fetch_add(micros, Relaxed);
    }

    fn render(&self, out: &mut String, name: &str, labels: &str) {
        let mut cumulative = 0;
        for (i, bound) in BUCKETS.iter().enumerate() {
            cumulative += self.counts[i].load(Relaxed);
            let _ = writeln!(out, "{name}_bucket{{{labels}le=\"{bound}\"}} {cumulative}");
        }
        let count = self.count.load(Relaxed);
        let _ = writeln!(out, "{name}_bucket{{{labels}le=\"+Inf\"}} {count}");
        let sum = self.sum_micros.load(Relaxed) as f64 / 1e6;
        let trimmed = labels.trim_end_matches(',');
        let _ = writeln!(out, "{name}_sum{{{trimmed}}} {sum}");
        let _ = writeln!(out, "{name}_count{{{trimmed}}} {count}");
    }
}

/// All of llmtap's metrics.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: DashMap<(&'static str, u16), AtomicU64>,
    upstream_latency: DashMap<&'static str, Histogram>,
    ttft: DashMap<&'static str, Histogram>,
    pub traces_exported: AtomicU64,
    pub export_retries: AtomicU64,
    retries_by_reason: DashMap<&'static str, AtomicU64>,
    pub export_failures: AtomicU64,
    /// Spans written to the dead-letter file.
    pub dead_lettered: AtomicU64,
    dropped: DashMap<&'static str, AtomicU64>,
    pub parse_panics: AtomicU64,
    /// Exchanges and spans waiting in the export queues.
    pub queue_depth: AtomicI64,
    /// Each sink's counters and spool statistics.
    pub sinks: Sinks,
    /// The exchange journal's latest statistics and its size cap.
    pub journal: std::sync::Mutex<Option<(crate::pipeline::spool::SpoolStats, u64)>>,
    /// Journal records that could not be decoded back into an exchange.
    pub journal_undecodable: AtomicU64,
    /// Journal records quarantined after killing the process twice.
    pub journal_quarantined: AtomicU64,
    /// Responses that stopped waiting for their exchange's fsync.
    pub hold_timeouts: AtomicU64,
    /// Streams where the usage injection added could not be hidden.
    pub usage_hiding_failures: AtomicU64,
    /// Calls proxied without a body capture: the in-flight capture budget was spent.
    pub captures_skipped_budget: AtomicU64,
    /// Calls not traced: sampled out and neither failed nor broken.
    pub traces_unsampled: AtomicU64,
    /// Calls not traced: their capture mode was `none`.
    pub traces_not_captured: AtomicU64,
    /// Matches the redaction rules replaced.
    pub redactions: AtomicU64,
    /// The in-flight capture budget, for its gauge (set at start).
    pub capture_budget: std::sync::OnceLock<std::sync::Arc<crate::capture_budget::CaptureBudget>>,
    /// Client connections of the proxy and admin listeners.
    pub connections: Connections,
    /// Calls by what llmtap's upstream credential did: `added`, `agent`
    /// (the agent's own kept), `replaced`, `error` (none could be had: 502),
    /// `rejected` (the upstream answered 401 to llmtap's key).
    credentials: DashMap<&'static str, AtomicU64>,
    /// Tokens and cost by model, unpriced calls, session entries.
    pub cost: CostMetrics,
    /// User feedback by sink and outcome ([`crate::feedback`]).
    pub feedback: feedback::Feedback,
}

impl Metrics {
    /// A request answered with `status` (the upstream's, or llmtap's own).
    pub fn request(&self, api: &'static str, status: u16) {
        self.requests
            .entry((api, status))
            .or_default()
            .fetch_add(1, Relaxed);
    }

    /// Time from the request's arrival to the upstream's response head.
    pub fn upstream_latency(&self, api: &'static str, d: Duration) {
        self.upstream_latency.entry(api).or_default().observe(d);
    }

    /// Time to the first token of a stream.
    pub fn time_to_first_token(&self, api: &'static str, d: Duration) {
        self.ttft.entry(api).or_default().observe(d);
    }

    /// An export attempt to be retried, and why it failed.
    pub fn retry(&self, class: &'static str) {
        self.export_retries.fetch_add(1, Relaxed);
        self.retries_by_reason
            .entry(class)
            .or_default()
            .fetch_add(1, Relaxed);
    }

    /// What llmtap's upstream credential did for a call (see the field).
    pub fn credential(&self, outcome: &'static str) {
        self.credentials
            .entry(outcome)
            .or_default()
            .fetch_add(1, Relaxed);
    }

    /// A trace dropped, with why (`queue_full`, `export_failed`, ...).
    pub fn dropped(&self, reason: &'static str, n: u64) {
        self.dropped
            .entry(reason)
            .or_default()
            .fetch_add(n, Relaxed);
    }

    /// Count of traces dropped for `reason`.
    pub fn dropped_count(&self, reason: &'static str) -> u64 {
        self.dropped
            .get(reason)
            .map(|c| c.load(Relaxed))
            .unwrap_or(0)
    }

    /// The Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::with_capacity(4096);
        out.push_str("# HELP llmtap_requests_total Requests proxied, by API and HTTP status.\n");
        out.push_str("# TYPE llmtap_requests_total counter\n");
        for e in self.requests.iter() {
            let ((api, status), n) = (e.key(), e.value().load(Relaxed));
            let _ = writeln!(
                out,
                "llmtap_requests_total{{api=\"{api}\",status=\"{status}\"}} {n}"
            );
        }
        for (name, help, map) in [
            (
                "llmtap_upstream_latency_seconds",
                "Time from request arrival to the upstream's response head.",
                &self.upstream_latency,
            ),
            (
                "llmtap_time_to_first_token_seconds",
                "Time from request arrival to the first streamed token.",
                &self.ttft,
            ),
        ] {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
            for e in map.iter() {
                e.value()
                    .render(&mut out, name, &format!("api=\"{}\",", e.key()));
            }
        }
        let counters = [
            (
                "llmtap_traces_exported_total",
                "Spans accepted by the trace sink.",
                &self.traces_exported,
            ),
            (
                "llmtap_trace_export_retries_total",
                "Export attempts retried after a transient failure.",
                &self.export_retries,
            ),
            (
                "llmtap_trace_export_failures_total",
                "Batches given up on after their last attempt.",
                &self.export_failures,
            ),
            (
                "llmtap_parse_panics_total",
                "Exchanges whose parsing panicked (contained).",
                &self.parse_panics,
            ),
            (
                "llmtap_traces_dead_lettered_total",
                "Spans the sink refused for good, kept in the dead-letter file.",
                &self.dead_lettered,
            ),
            (
                "llmtap_usage_hiding_failures_total",
                "Streams whose injected usage may have reached the client (an event over the filter's bound).",
                &self.usage_hiding_failures,
            ),
            (
                "llmtap_traces_unsampled_total",
                "Calls not traced because sampling left them out (errors are always traced).",
                &self.traces_unsampled,
            ),
            (
                "llmtap_traces_not_captured_total",
                "Calls not traced because their capture mode was none.",
                &self.traces_not_captured,
            ),
            (
                "llmtap_redactions_total",
                "Matches the redaction rules replaced before anything was written.",
                &self.redactions,
            ),
        ];
        for (name, help, c) in counters {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} counter\n{name} {}",
                c.load(Relaxed)
            );
        }
        out.push_str("# HELP llmtap_trace_export_retries_by_reason_total Export attempts retried, by failure.\n");
        out.push_str("# TYPE llmtap_trace_export_retries_by_reason_total counter\n");
        for e in self.retries_by_reason.iter() {
            let _ = writeln!(
                out,
                "llmtap_trace_export_retries_by_reason_total{{reason=\"{}\"}} {}",
                e.key(),
                e.value().load(Relaxed)
            );
        }
        out.push_str("# HELP llmtap_traces_dropped_total Traces lost, by reason.\n");
        out.push_str("# TYPE llmtap_traces_dropped_total counter\n");
        for reason in [
            "queue_full",
            "export_failed",
            "rejected",
            "spool_full",
            "dead_letter_rotated",
            "shutdown",
        ] {
            let n = self.dropped_count(reason);
            let _ = writeln!(
                out,
                "llmtap_traces_dropped_total{{reason=\"{reason}\"}} {n}"
            );
        }
        out.push_str("# HELP llmtap_upstream_credential_total Calls by what llmtap's upstream credential did (added, agent, replaced, error, rejected).\n# TYPE llmtap_upstream_credential_total counter\n");
        for e in self.credentials.iter() {
            let (outcome, n) = (e.key(), e.value().load(Relaxed));
            let _ = writeln!(
                out,
                "llmtap_upstream_credential_total{{outcome=\"{outcome}\"}} {n}"
            );
        }
        self.render_spool(&mut out);
        self.sinks.render(&mut out);
        self.render_journal(&mut out);
        self.render_capture(&mut out);
        self.connections.render(&mut out);
        self.cost.render(&mut out);
        self.feedback.render(&mut out);
        crate::context::traceparent::render_metrics(&mut out);
        let depth = self.queue_depth.load(Relaxed).max(0);
        let _ = writeln!(
            out,
            "# HELP llmtap_export_queue_depth Traces waiting to be parsed or exported.\n# TYPE llmtap_export_queue_depth gauge\nllmtap_export_queue_depth {depth}"
        );
        out
    }
}

/// One unlabelled metric per row: name, type, help, value.
fn write_rows(out: &mut String, rows: &[(&str, &str, &str, f64)]) {
    for (name, kind, help, value) in rows {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
}

impl Metrics {
    fn render_capture(&self, out: &mut String) {
        let skipped = self.captures_skipped_budget.load(Relaxed);
        let _ = writeln!(
            out,
            "# HELP llmtap_captures_skipped_total Calls proxied without a body capture (still traced with their facts), by reason.\n# TYPE llmtap_captures_skipped_total counter\nllmtap_captures_skipped_total{{reason=\"memory_budget\"}} {skipped}"
        );
        if let Some(b) = self.capture_budget.get() {
            write_rows(
                out,
                &[
                    (
                        "llmtap_capture_inflight_bytes",
                        "gauge",
                        "Captured body bytes held in memory now.",
                        b.used() as f64,
                    ),
                    (
                        "llmtap_capture_inflight_max_bytes",
                        "gauge",
                        "capture.max_inflight_bytes.",
                        b.max() as f64,
                    ),
                ],
            );
        }
    }

    /// The spool gauges, summed over the sinks' spools (one sink: its spool).
    fn render_spool(&self, out: &mut String) {
        let Some((s, max)) = sum_spools(self.sinks.spools()) else {
            return;
        };
        let age = s.oldest_unacked_age.map_or(0.0, |a| a.as_secs_f64());
        write_rows(
            out,
            &[
                (
                    "llmtap_spool_bytes",
                    "gauge",
                    "Bytes of spool files on disk.",
                    s.bytes_on_disk as f64,
                ),
                (
                    "llmtap_spool_max_bytes",
                    "gauge",
                    "The spool's size cap.",
                    max as f64,
                ),
                (
                    "llmtap_spool_records",
                    "gauge",
                    "Traces in the spool not yet accepted by the sink.",
                    s.records_pending as f64,
                ),
                (
                    "llmtap_spool_records_written_total",
                    "counter",
                    "Traces written to the spool.",
                    s.records_written as f64,
                ),
                (
                    "llmtap_spool_records_acked_total",
                    "counter",
                    "Spooled traces the sink accepted.",
                    s.records_acked as f64,
                ),
                (
                    "llmtap_spool_records_dropped_total",
                    "counter",
                    "Traces not spooled: the spool was at its cap, or the disk refused the write.",
                    (s.records_dropped_full + s.records_dropped_error) as f64,
                ),
                (
                    "llmtap_spool_corrupt_records_total",
                    "counter",
                    "Damaged spool regions skipped.",
                    s.records_corrupt_skipped as f64,
                ),
                (
                    "llmtap_spool_write_errors_total",
                    "counter",
                    "Spool writes that failed.",
                    s.write_errors as f64,
                ),
                (
                    "llmtap_spool_oldest_unsent_seconds",
                    "gauge",
                    "Age of the oldest trace not yet accepted by the sink.",
                    age,
                ),
            ],
        );
    }

    fn render_journal(&self, out: &mut String) {
        let Some((s, _)) = self.journal.lock().ok().and_then(|g| g.clone()) else {
            return;
        };
        let age = s.oldest_unacked_age.map_or(0.0, |a| a.as_secs_f64());
        write_rows(
            out,
            &[
            (
                "llmtap_journal_bytes",
                "gauge",
                "Bytes of exchange journal files on disk.",
                s.bytes_on_disk as f64,
            ),
            (
                "llmtap_journal_records",
                "gauge",
                "Finished calls in the journal whose traces are not spooled yet.",
                s.records_pending as f64,
            ),
            (
                "llmtap_journal_records_written_total",
                "counter",
                "Finished calls written to the journal.",
                s.records_written as f64,
            ),
            (
                "llmtap_journal_records_dropped_total",
                "counter",
                "Finished calls not journaled: the journal was at its cap, or the disk refused the write.",
                (s.records_dropped_full + s.records_dropped_error) as f64,
            ),
            (
                "llmtap_journal_corrupt_records_total",
                "counter",
                "Damaged journal regions skipped.",
                s.records_corrupt_skipped as f64,
            ),
            (
                "llmtap_journal_undecodable_total",
                "counter",
                "Journal records that could not be read back as a call.",
                self.journal_undecodable.load(Relaxed) as f64,
            ),
            (
                "llmtap_journal_quarantined_total",
                "counter",
                "Journal records quarantined (never parsed again) after llmtap died twice while parsing them.",
                self.journal_quarantined.load(Relaxed) as f64,
            ),
            (
                "llmtap_journal_hold_timeouts_total",
                "counter",
                "Responses that completed without waiting any longer for their call's fsync (fsync = always).",
                self.hold_timeouts.load(Relaxed) as f64,
            ),
            (
                "llmtap_journal_write_errors_total",
                "counter",
                "Journal writes that failed.",
                s.write_errors as f64,
            ),
            (
                "llmtap_journal_oldest_seconds",
                "gauge",
                "Age of the oldest finished call whose trace is not spooled yet.",
                age,
            ),
            ],
        );
    }

    /// The fullest sink spool's fill ratio, if the spool is on.
    pub fn spool_fill(&self) -> Option<f64> {
        self.sinks
            .spools()
            .iter()
            .map(|(s, max)| s.bytes_on_disk as f64 / (*max).max(1) as f64)
            .reduce(f64::max)
    }
}

/// The sinks' spools as one: counts and bytes added, the oldest age the
/// largest. `None` when the spool is off.
fn sum_spools(
    spools: Vec<(crate::pipeline::spool::SpoolStats, u64)>,
) -> Option<(crate::pipeline::spool::SpoolStats, u64)> {
    spools.into_iter().reduce(|(mut a, am), (b, bm)| {
        a.bytes_on_disk += b.bytes_on_disk;
        a.records_pending += b.records_pending;
        a.records_written += b.records_written;
        a.records_acked += b.records_acked;
        a.records_dropped_full += b.records_dropped_full;
        a.records_dropped_error += b.records_dropped_error;
        a.records_corrupt_skipped += b.records_corrupt_skipped;
        a.write_errors += b.write_errors;
        a.oldest_unacked_age = a.oldest_unacked_age.max(b.oldest_unacked_age);
        (a, am + bm)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counters_and_cumulative_histograms() {
        let m = Metrics::default();
        m.request("chat_completions", 200);
        m.request("chat_completions", 200);
        m.request("other", 502);
        m.upstream_latency("chat_completions", Duration::from_millis(3));
        m.upstream_latency("chat_completions", Duration::from_millis(700));
        m.dropped("queue_full", 2);
        let text = m.render();
        assert!(text.contains("llmtap_requests_total{api=\"chat_completions\",status=\"200\"} 2"));
        assert!(text.contains("llmtap_requests_total{api=\"other\",status=\"502\"} 1"));
        assert!(text.contains(
            "llmtap_upstream_latency_seconds_bucket{api=\"chat_completions\",le=\"0.005\"} 1"
        ));
        assert!(text.contains(
            "llmtap_upstream_latency_seconds_bucket{api=\"chat_completions\",le=\"1\"} 2"
        ));
        assert!(text.contains("llmtap_upstream_latency_seconds_count{api=\"chat_completions\"} 2"));
        assert!(text.contains("llmtap_traces_dropped_total{reason=\"queue_full\"} 2"));
        assert!(text.contains("llmtap_export_queue_depth 0"));
    }
}
