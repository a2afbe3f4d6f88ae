//! Delivery of one batch to the sink: rate limit, attempts with jittered
//! backoff, 413 splits, dead-lettering of refusals — the retry policy of
//! [`super::retry`] applied. Shared by the live pipeline and `llmtap replay`.

use std::ops::Range;
use std::sync::atomic::Ordering::Relaxed;
use std::sync::Arc;

use tokio::sync::watch;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::trace::v1::Span;

use super::dead_letter::DeadLetter;
use super::rate::RateLimit;
use super::retry::backoff;
use crate::config::{Config, ExportConfig};
use crate::metrics::{Metrics, SinkCounters};
use crate::sinks::{Sink, Verdict};

/// What became of a batch handed to [`Deliverer::deliver`].
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Outcome {
    /// Index ranges, in the batch as given, of the spans that went somewhere
    /// for good (exported or dead-lettered).
    delivered: Vec<Range<usize>>,
    /// False when a persistent deliverer stopped retrying because shutdown
    /// began; the spans not delivered are the caller's to keep.
    pub finished: bool,
}

impl Outcome {
    /// Whether span `i` of the batch went somewhere for good.
    pub fn is_delivered(&self, i: usize) -> bool {
        self.delivered.iter().any(|r| r.contains(&i))
    }

    /// What several deliverers made of the same batch of `n` spans: a span
    /// went somewhere for good only if it did for every one of them.
    pub fn all_of(outcomes: &[Outcome], n: usize) -> Outcome {
        let mut delivered: Vec<Range<usize>> = Vec::new();
        for i in (0..n).filter(|i| outcomes.iter().all(|o| o.is_delivered(*i))) {
            match delivered.last_mut() {
                Some(r) if r.end == i => r.end = i + 1,
                _ => delivered.push(i..i + 1),
            }
        }
        Outcome {
            delivered,
            finished: outcomes.iter().all(|o| o.finished),
        }
    }

    /// Splits what stands for the batch's spans, one item per span in order
    /// (e.g. their spool record ids), into (delivered, not delivered).
    pub fn partition<T>(&self, items: Vec<T>) -> (Vec<T>, Vec<T>) {
        let (sent, kept): (Vec<_>, Vec<_>) = items
            .into_iter()
            .enumerate()
            .partition(|(i, _)| self.is_delivered(*i));
        let strip = |v: Vec<(usize, T)>| v.into_iter().map(|(_, t)| t).collect();
        (strip(sent), strip(kept))
    }
}

/// What became of one chunk of a batch.
enum Sent {
    /// Exported or dead-lettered: these spans of the batch.
    Delivered(Range<usize>),
    /// Given up on (out of attempts, or the dead-letter file failed); counted.
    Dropped,
    /// Too large: send these two halves (first index, spans) instead.
    Halves((usize, Vec<Span>), (usize, Vec<Span>)),
    /// Shutdown began while retrying (persistent mode).
    Stopped,
}

/// Sends batches to one sink; see the module docs.
pub struct Deliverer {
    sink: Arc<dyn Sink>,
    /// This sink's own counters (the unlabelled totals are in `metrics`).
    counters: Arc<SinkCounters>,
    cfg: ExportConfig,
    /// The resource of every export to this sink ([`crate::environment::resource`]).
    resource: Vec<(String, crate::record::AttrValue)>,
    metrics: Arc<Metrics>,
    dead_letter: DeadLetter,
    rate: Option<RateLimit>,
    /// Retry transient failures without limit (the spool holds the batch).
    persistent: bool,
    /// When it turns true (shutdown), a persistent deliverer stops retrying:
    /// the batch stays in the spool for the next start.
    closing: Option<watch::Receiver<bool>>,
}

impl Deliverer {
    /// The deliverer for one sink, with the configuration's export settings.
    /// `persistent`: retry transient failures without limit (the batch is
    /// safe in the spool meanwhile) instead of giving up after
    /// `export.max_attempts`.
    /// Its rate limit is the sink's own (`[[sinks]] max_traces_per_second`),
    /// else `export.max_traces_per_second`, else the kind's default; with
    /// several sinks each has its own dead-letter directory,
    /// `<export.dead_letter_dir>/<name>`.
    pub fn new(
        sink: Arc<dyn Sink>,
        cfg: &Config,
        metrics: Arc<Metrics>,
        persistent: bool,
    ) -> Deliverer {
        let e = &cfg.export;
        let entry = cfg.sinks.iter().find(|s| s.name == sink.name());
        let rate = entry
            .and_then(|s| s.max_traces_per_second)
            .or(e.max_traces_per_second)
            .or(sink.default_rate());
        let dead_letter_dir = match cfg.sinks.len() {
            0 | 1 => e.dead_letter_dir.clone(),
            _ => e.dead_letter_dir.join(sink.name()),
        };
        let resource = crate::environment::resource(&cfg.service_name, &cfg.context, sink.kind());
        Deliverer {
            counters: metrics.sinks.get(sink.name()),
            sink,
            cfg: e.clone(),
            resource,
            metrics,
            dead_letter: DeadLetter::new(
                dead_letter_dir,
                e.dead_letter_max_file_bytes,
                e.dead_letter_max_files,
            ),
            rate: rate.map(RateLimit::new),
            persistent,
            closing: None,
        }
    }

    /// The name of the sink this deliverer sends to.
    pub fn sink_name(&self) -> &str {
        self.sink.name()
    }

    /// Stop retrying once `closing` turns true (persistent mode only).
    pub fn stop_retrying_on(&mut self, closing: watch::Receiver<bool>) {
        self.closing = Some(closing);
    }

    fn is_closing(&self) -> bool {
        self.persistent && self.closing.as_ref().is_some_and(|c| *c.borrow())
    }

    /// Sleeps `wait`; false if shutdown began meanwhile (persistent mode).
    async fn pause(&mut self, wait: std::time::Duration) -> bool {
        match self.closing.as_mut().filter(|_| self.persistent) {
            Some(closing) => {
                let mut closing = closing.clone();
                tokio::select! {
                    _ = tokio::time::sleep(wait) => true,
                    _ = closing.wait_for(|c| *c) => false,
                }
            }
            None => {
                tokio::time::sleep(wait).await;
                true
            }
        }
    }

    /// Sends one batch until it is accepted, refused for good, or out of
    /// attempts. A batch too large for the sink is sent in halves; one the
    /// sink refuses goes to the dead-letter file. The [`Outcome`] says which
    /// spans went somewhere for good, and whether a persistent deliverer
    /// stopped retrying because shutdown began (the caller keeps the rest).
    pub async fn deliver(&mut self, mut batch: Vec<Span>) -> Outcome {
        // Under a rate limit, send at most a second's worth at a time, so a
        // backlog flows steadily instead of in one late request.
        let mut pending = Vec::new();
        let mut start = 0;
        if let Some(most) = self.rate.as_ref().map(RateLimit::burst) {
            while batch.len() > most {
                let rest = batch.split_off(most);
                let chunk = std::mem::replace(&mut batch, rest);
                let len = chunk.len();
                pending.push((start, chunk));
                start += len;
            }
        }
        pending.push((start, batch));
        pending.reverse();
        let mut outcome = Outcome::default();
        while let Some((start, batch)) = pending.pop() {
            if let Some(rate) = self.rate.as_mut() {
                rate.acquire(batch.len()).await;
            }
            match self.send(start, batch).await {
                Sent::Delivered(range) => outcome.delivered.push(range),
                Sent::Dropped => {}
                Sent::Halves(first, second) => {
                    pending.push(second);
                    pending.push(first);
                }
                Sent::Stopped => return outcome,
            }
        }
        outcome.finished = true;
        outcome
    }

    /// One chunk (spans `start..` of the batch), with its retries.
    async fn send(&mut self, start: usize, batch: Vec<Span>) -> Sent {
        let n = batch.len() as u64;
        let range = start..start + batch.len();
        let req = crate::otlp::request_with(&self.resource, batch);
        let mut attempt = 0;
        loop {
            let result = self.sink.send(&req).await;
            let after = match result.verdict {
                Verdict::Success => {
                    self.metrics.traces_exported.fetch_add(n, Relaxed);
                    self.counters.exported(n);
                    return Sent::Delivered(range);
                }
                Verdict::Split if n > 1 => {
                    let mut spans = req
                        .resource_spans
                        .into_iter()
                        .flat_map(|r| r.scope_spans)
                        .flat_map(|s| s.spans)
                        .collect::<Vec<_>>();
                    let second = spans.split_off(spans.len() / 2);
                    tracing::info!(
                        sink = self.sink.name(),
                        spans = n,
                        "batch too large for the sink; sending it in halves"
                    );
                    let middle = start + spans.len();
                    return Sent::Halves((start, spans), (middle, second));
                }
                Verdict::Split | Verdict::DontRetry => {
                    return match self.dead_letter(&req, n, &result.reason).await {
                        true => Sent::Delivered(range),
                        false => Sent::Dropped,
                    };
                }
                Verdict::Retry { after } => after,
            };
            attempt += 1;
            if !self.persistent && attempt >= self.cfg.max_attempts {
                self.metrics.dropped("export_failed", n);
                self.counters.dropped("export_failed", n);
                self.metrics.export_failures.fetch_add(1, Relaxed);
                self.counters.failures.fetch_add(1, Relaxed);
                tracing::error!(sink = self.sink.name(), spans = n, attempts = attempt, reason = %result.reason, "giving up on a batch; dropped");
                return Sent::Dropped;
            }
            let wait = backoff(
                self.cfg.retry_initial,
                self.cfg.retry_max,
                attempt - 1,
                after,
            );
            if self.is_closing() {
                tracing::info!(sink = self.sink.name(), spans = n, reason = %result.reason, "shutting down: the batch stays in the spool");
                return Sent::Stopped;
            }
            self.metrics.retry(result.class);
            self.counters.retries.fetch_add(1, Relaxed);
            tracing::warn!(sink = self.sink.name(), spans = n, attempt, ?wait, reason = %result.reason, "export failed; retrying");
            if !self.pause(wait).await {
                return Sent::Stopped;
            }
        }
    }

    /// True when the batch was written to the dead-letter file.
    async fn dead_letter(&self, req: &ExportTraceServiceRequest, n: u64, reason: &str) -> bool {
        self.metrics.export_failures.fetch_add(1, Relaxed);
        self.counters.failures.fetch_add(1, Relaxed);
        match self.dead_letter.write(self.sink.name(), reason, req).await {
            Ok(rotated_out) => {
                self.metrics.dead_lettered.fetch_add(n, Relaxed);
                self.counters.dead_lettered.fetch_add(n, Relaxed);
                if rotated_out > 0 {
                    self.metrics.dropped("dead_letter_rotated", rotated_out);
                    self.counters.dropped("dead_letter_rotated", rotated_out);
                }
                tracing::error!(sink = self.sink.name(), spans = n, %reason, file = %self.dead_letter.path().display(), "sink refused a batch; written to the dead-letter file");
                true
            }
            Err(e) => {
                self.metrics.dropped("rejected", n);
                self.counters.dropped("rejected", n);
                tracing::error!(sink = self.sink.name(), spans = n, %reason, error = %e, "sink refused a batch and the dead-letter file could not be written; dropped");
                false
            }
        }
    }
}
