//! User feedback metrics ([`crate::feedback`]):
//! `llmtap_feedback_total{sink,outcome}` and `llmtap_feedback_pending{sink}`.
//! Sink names come from the configuration and outcomes from
//! [`Outcome`], so the label set is bounded. A request refused before any
//! sink is involved (a bad body, no sink) has `sink=""`.

use std::fmt::Write;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering::Relaxed};

use dashmap::DashMap;

/// What became of a piece of feedback, for one sink.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Accepted and stored for the sink (answered 202).
    Accepted,
    /// The sink took it.
    Delivered,
    /// Given up on: written to the feedback dead-letter file.
    DeadLettered,
    /// Given up on and not even dead-lettered (that file at its cap).
    Dropped,
    /// The body was refused (400/405/415).
    Invalid,
    /// The sink's kind has no place for feedback.
    Unsupported,
    /// Refused: the sink's pending feedback is at its cap (503).
    OverCapacity,
}

impl Outcome {
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Delivered => "delivered",
            Outcome::DeadLettered => "dead_lettered",
            Outcome::Dropped => "dropped",
            Outcome::Invalid => "invalid",
            Outcome::Unsupported => "unsupported",
            Outcome::OverCapacity => "over_capacity",
        }
    }
}

/// The counters, by sink and outcome, and the pending gauge by sink.
#[derive(Debug, Default)]
pub struct Feedback {
    counts: DashMap<(String, Outcome), AtomicU64>,
    pending: DashMap<String, AtomicI64>,
}

impl Feedback {
    pub fn count(&self, sink: &str, outcome: Outcome) {
        self.counts
            .entry((sink.to_string(), outcome))
            .or_default()
            .fetch_add(1, Relaxed);
    }

    /// Sets the number of items waiting for `sink`.
    pub fn set_pending(&self, sink: &str, n: usize) {
        self.pending
            .entry(sink.to_string())
            .or_default()
            .store(n as i64, Relaxed);
    }

    pub fn get(&self, sink: &str, outcome: Outcome) -> u64 {
        self.counts
            .get(&(sink.to_string(), outcome))
            .map_or(0, |c| c.load(Relaxed))
    }

    pub fn render(&self, out: &mut String) {
        out.push_str("# HELP llmtap_feedback_total User feedback (POST /llmtap/v1/feedback), by sink and outcome.\n# TYPE llmtap_feedback_total counter\n");
        let mut rows: Vec<_> = self
            .counts
            .iter()
            .map(|e| {
                (
                    e.key().0.clone(),
                    e.key().1.label(),
                    e.value().load(Relaxed),
                )
            })
            .collect();
        rows.sort();
        for (sink, outcome, n) in rows {
            let _ = writeln!(
                out,
                "llmtap_feedback_total{{sink=\"{sink}\",outcome=\"{outcome}\"}} {n}"
            );
        }
        out.push_str("# HELP llmtap_feedback_pending Feedback waiting to be delivered, by sink.\n# TYPE llmtap_feedback_pending gauge\n");
        for e in self.pending.iter() {
            let _ = writeln!(
                out,
                "llmtap_feedback_pending{{sink=\"{}\"}} {}",
                e.key(),
                e.value().load(Relaxed)
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_counts_and_pending() {
        let f = Feedback::default();
        f.count("mlflow", Outcome::Accepted);
        f.count("mlflow", Outcome::Accepted);
        f.count("", Outcome::Invalid);
        f.set_pending("mlflow", 3);
        let mut out = String::new();
        f.render(&mut out);
        assert!(out.contains("llmtap_feedback_total{sink=\"mlflow\",outcome=\"accepted\"} 2\n"));
        assert!(out.contains("llmtap_feedback_total{sink=\"\",outcome=\"invalid\"} 1\n"));
        assert!(out.contains("llmtap_feedback_pending{sink=\"mlflow\"} 3\n"));
        assert_eq!(f.get("mlflow", Outcome::Accepted), 2);
    }
}
