//! The durable export path (spool on):
//!
//! ```text
//! parse workers --span queue--> spool writer --group commit--> disk spool
//!                                   | then acks the spans' exchanges in the journal
//!                                                  | notify
//!                                                  v
//!                          delivery task: next_batch -> Deliverer (retries
//!                          without limit) -> ack (the segment files go once
//!                          every record in them is acked)
//! ```
//!
//! A trace counts as written once its group is appended (and fsynced, with
//! `fsync = "always"`); from then on it survives a tracking-server outage, a
//! restart or `kill -9`: the spool is replayed on the next start. The
//! request path is untouched by any of this. Memory stays bounded: the span
//! queue is bounded and the delivery task holds one batch.

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::sync::{mpsc, Notify};

use super::batch::Limits;
use super::spool::{Fsync, RealFs, RecordId, Spool, SpoolConfig, SpoolError};
use super::{Deliverer, Parsed};
use crate::config::SpoolSettings;
use crate::metrics::{Metrics, SinkCounters};

/// The spool shared by the writer and the delivery task.
pub type Shared = Arc<Mutex<Spool<RealFs>>>;

/// Spans written per group commit at most.
const GROUP: usize = 512;

/// Opens the spool a configuration names. With `fsync = "always"` the spool
/// itself syncs lazily and the writer flushes once per group (group commit).
pub fn open(s: &SpoolSettings) -> Result<Spool<RealFs>, SpoolError> {
    open_at(s, s.dir.clone())
}

/// Opens a spool in `dir` with the settings' cap, segment size and sync
/// policy (the writer's group commit syncs with `fsync = "always"`; the
/// spool itself only on the interval, or hourly as a backstop).
pub fn open_at(s: &SpoolSettings, dir: std::path::PathBuf) -> Result<Spool<RealFs>, SpoolError> {
    Spool::open(
        SpoolConfig {
            dir,
            fsync: Fsync::Interval(s.fsync_interval.unwrap_or(Duration::from_secs(3600))),
            max_bytes: s.max_bytes,
            segment_bytes: s.segment_bytes,
        },
        RealFs::new(),
    )
}

/// Which statistics a spool's figures are published as.
#[derive(Debug, Clone)]
pub enum Slot {
    /// A sink's span spool (`llmtap_sink_spool_*{sink}`, and summed in
    /// `llmtap_spool_*`).
    Sink(Arc<SinkCounters>),
    /// The exchange journal (`llmtap_journal_*`).
    Journal,
}

/// Publishes a spool's statistics to its metrics slot.
pub fn publish(spool: &Spool<RealFs>, metrics: &Metrics, slot: &Slot) {
    let slot = match slot {
        Slot::Sink(c) => &c.spool,
        Slot::Journal => &metrics.journal,
    };
    if let Ok(mut slot) = slot.lock() {
        *slot = Some((spool.stats(), spool.config().max_bytes));
    }
}

/// Runs `f` on a spool off the async threads, then publishes its statistics.
pub async fn with_spool<T: Send + 'static>(
    spool: &Shared,
    metrics: &Arc<Metrics>,
    slot: Slot,
    f: impl FnOnce(&mut Spool<RealFs>) -> T + Send + 'static,
) -> Option<T> {
    let (spool, metrics) = (spool.clone(), metrics.clone());
    tokio::task::spawn_blocking(move || {
        let mut guard = spool.lock().ok()?;
        let out = f(&mut guard);
        publish(&guard, &metrics, &slot);
        Some(out)
    })
    .await
    .ok()
    .flatten()
}

/// What a writer does while its queue is idle: flush its spools every `tick`.
pub struct Idle {
    spools: Vec<(Shared, Slot)>,
    metrics: Arc<Metrics>,
    tick: Duration,
}

impl Idle {
    /// Flushes on the fsync interval (every second with `fsync = "always"`,
    /// where each group is synced anyway).
    pub fn new(
        spools: Vec<(Shared, Slot)>,
        metrics: &Arc<Metrics>,
        settings: &SpoolSettings,
    ) -> Self {
        Idle {
            spools,
            metrics: metrics.clone(),
            tick: settings.fsync_interval.unwrap_or(Duration::from_secs(1)),
        }
    }

    async fn flush(&self) {
        for (spool, slot) in &self.spools {
            with_spool(spool, &self.metrics, slot.clone(), |s| s.flush()).await;
        }
    }
}

/// The next group commit's items: the first to arrive, then whatever is
/// already queued, up to `max` items and `max_weight` (by `weight`). The
/// spool is flushed on every idle tick. `None` once the queue is closed.
pub async fn next_group<T>(
    rx: &mut mpsc::Receiver<T>,
    idle: &Idle,
    max: usize,
    max_weight: usize,
    weight: impl Fn(&T) -> usize,
) -> Option<Vec<T>> {
    let first = loop {
        tokio::select! {
            item = rx.recv() => break item?,
            _ = tokio::time::sleep(idle.tick) => idle.flush().await,
        }
    };
    let mut total = weight(&first);
    let mut group = vec![first];
    while group.len() < max && total < max_weight {
        match rx.try_recv() {
            Ok(item) => {
                total += weight(&item);
                group.push(item);
            }
            Err(_) => break,
        }
    }
    Some(group)
}

/// One sink's share of the spool: its own spool (directory), the wake-up
/// its delivery task waits on, and its counters. A dead sink's lane fills
/// while the others flow.
#[derive(Clone)]
pub struct Lane {
    pub spool: Shared,
    pub notify: Arc<Notify>,
    pub counters: Arc<SinkCounters>,
}

impl Lane {
    fn slot(&self) -> Slot {
        Slot::Sink(self.counters.clone())
    }
}

/// Appends spans as they come, one group commit at a time, to every sink's
/// spool; once a group is in all of them, acks its exchanges in the journal.
/// Flushes on the interval and at the end.
pub async fn writer(
    mut rx: mpsc::Receiver<Parsed>,
    lanes: Vec<Lane>,
    journal: Option<Shared>,
    done: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    settings: SpoolSettings,
) {
    let always = settings.fsync_interval.is_none();
    let spools = lanes.iter().map(|l| (l.spool.clone(), l.slot())).collect();
    let idle = Idle::new(spools, &metrics, &settings);
    while let Some(group) = next_group(&mut rx, &idle, GROUP, usize::MAX, |_| 0).await {
        let journaled: Vec<_> = group.iter().filter_map(|p| p.journal).collect();
        let payloads: Vec<Vec<u8>> = group
            .iter()
            .filter_map(|p| p.span.as_ref())
            .map(Message::encode_to_vec)
            .collect();
        metrics
            .queue_depth
            .fetch_sub(payloads.len() as i64, Relaxed);
        let count = payloads.len() as u64;
        let (journal, m, these) = (journal.clone(), metrics.clone(), lanes.clone());
        let lost = tokio::task::spawn_blocking(move || {
            let lost = append_to_lanes(&these, payloads, always, &m);
            // The spans are spooled (or their loss counted): their exchanges
            // need not be parsed again.
            if let Some(j) = &journal {
                ack_journal(j, &m, &journaled);
            }
            lost
        })
        .await
        .unwrap_or_else(|_| {
            let error = Some("the spool is unavailable".to_string());
            vec![Lost { count, error }; lanes.len()]
        });
        for (lane, lost) in lanes.iter().zip(lost) {
            lost.report(&metrics, &lane.counters, "spool");
            lane.notify.notify_one();
        }
    }
    idle.flush().await;
    done.store(true, Relaxed);
    for lane in &lanes {
        lane.notify.notify_one();
    }
}

/// Appends one group to every lane's spool (blocking); what each lost.
fn append_to_lanes(
    lanes: &[Lane],
    mut payloads: Vec<Vec<u8>>,
    always: bool,
    metrics: &Metrics,
) -> Vec<Lost> {
    let n = lanes.len();
    let mut out = Vec::with_capacity(n);
    for (i, lane) in lanes.iter().enumerate() {
        let these = match i + 1 == n {
            true => std::mem::take(&mut payloads),
            false => payloads.clone(),
        };
        let count = these.len() as u64;
        let lost = match lane.spool.lock() {
            Ok(mut s) => {
                let lost = append_group(&mut s, these, always);
                publish(&s, metrics, &lane.slot());
                lost
            }
            Err(_) => Lost {
                count,
                error: Some("the spool is unavailable".into()),
            },
        };
        out.push(lost);
    }
    out
}

/// What appending a group lost: how many records, and the first error.
#[derive(Clone)]
pub struct Lost {
    pub count: u64,
    pub error: Option<String>,
}

impl Lost {
    /// Counts the loss (`llmtap_traces_dropped_total{reason="spool_full"}`,
    /// the cap or the disk) and logs it when the total passes a power of
    /// two, so a full disk at high traffic does not flood the log.
    pub fn report(&self, metrics: &Metrics, sink: &SinkCounters, what: &str) {
        if self.count == 0 {
            return;
        }
        sink.dropped("spool_full", self.count);
        self.report_total(metrics, what);
    }

    /// Counts and logs the loss in the totals only (the journal's).
    pub fn report_total(&self, metrics: &Metrics, what: &str) {
        if self.count == 0 {
            return;
        }
        metrics.dropped("spool_full", self.count);
        let total = metrics.dropped_count("spool_full");
        let before = total - self.count;
        if before == 0 || before.ilog2() != total.ilog2() {
            tracing::warn!(
                dropped_total = total,
                error = self.error.as_deref().unwrap_or("full"),
                "{what} full or failing: traces dropped (the calls themselves were proxied)"
            );
        }
    }
}

/// Appends one group commit's records (fsyncing once at the end with
/// `always`); what could not be stored is returned, not logged one by one.
pub fn append_group(
    s: &mut Spool<RealFs>,
    payloads: impl IntoIterator<Item = Vec<u8>>,
    always: bool,
) -> Lost {
    let mut lost = Lost {
        count: 0,
        error: None,
    };
    for p in payloads {
        if let Err(e) = s.append(&p) {
            lost.count += 1;
            if lost.error.is_none() && !matches!(e, SpoolError::Full { .. }) {
                lost.error = Some(e.to_string());
            }
        }
    }
    if always {
        if let Err(e) = s.flush() {
            let failures = s.stats().sync_errors;
            if failures.is_power_of_two() {
                tracing::error!(error = %e, failures, "fsync failed; the last records may not survive a power loss");
            }
        }
    }
    lost
}

/// Sends what the spool holds, batch by batch, acking what the sink took.
/// Ends once the writer is done and the spool has nothing left to hand out.
pub async fn deliver(
    lane: Lane,
    writer_done: Arc<AtomicBool>,
    mut deliverer: Deliverer,
    metrics: Arc<Metrics>,
    limits: Limits,
) {
    let Limits {
        max_spans,
        max_bytes,
        interval,
    } = limits;
    // When the first record of a not-yet-full batch was seen: a batch goes
    // out when full, or `interval` after that, like the in-memory batcher.
    let mut partial_since: Option<tokio::time::Instant> = None;
    let Lane { spool, notify, .. } = lane.clone();
    let slot = || lane.slot();
    loop {
        let batch = with_spool(&spool, &metrics, slot(), move |s| {
            s.next_batch(max_spans, max_bytes)
        })
        .await
        .and_then(|r| {
            r.map_err(|e| tracing::error!(error = %e, "spool: read failed"))
                .ok()
        })
        .unwrap_or_default();
        if batch.is_empty() {
            if writer_done.load(Relaxed) {
                return;
            }
            tokio::select! {
                _ = notify.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        let done = writer_done.load(Relaxed);
        if batch.len() < max_spans && !done {
            let since = *partial_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() < interval {
                let ids: Vec<_> = batch.iter().map(|(id, _)| *id).collect();
                with_spool(&spool, &metrics, slot(), move |s| s.nack(&ids)).await;
                tokio::select! {
                    _ = notify.notified() => {}
                    _ = tokio::time::sleep_until(since + interval) => {}
                }
                continue;
            }
        }
        partial_since = None;
        // Records that are not spans are acked with the batch: they never will be.
        let mut ids = Vec::with_capacity(batch.len());
        let mut span_ids = Vec::with_capacity(batch.len());
        let mut spans = Vec::with_capacity(batch.len());
        for (id, payload) in batch {
            match Span::decode(payload.as_slice()) {
                Ok(s) => {
                    spans.push(s);
                    span_ids.push(id);
                }
                Err(e) => {
                    ids.push(id);
                    tracing::error!(error = %e, "spool: a record is not a span; skipped")
                }
            }
        }
        let outcome = match spans.is_empty() {
            true => None,
            false => Some(deliverer.deliver(spans).await),
        };
        if let Some(outcome) = outcome.filter(|o| !o.finished) {
            // Shutting down with the sink failing: what did not go stays spooled.
            let (sent, kept) = outcome.partition(span_ids);
            ids.extend(sent);
            with_spool(&spool, &metrics, slot(), move |s| {
                s.nack(&kept);
                if let Err(e) = s.ack(&ids) {
                    tracing::warn!(error = %e, "spool: acks not persisted; those traces will be sent again after a restart");
                }
            })
            .await;
            return;
        }
        ids.extend(span_ids);
        with_spool(&spool, &metrics, slot(), move |s| {
            if let Err(e) = s.ack(&ids) {
                tracing::warn!(error = %e, "spool: acks not persisted; those traces will be sent again after a restart");
            }
        })
        .await;
    }
}

/// Acknowledges exchange-journal records whose spans are spooled (or lost
/// for good): they need not be parsed again after a restart.
pub fn ack_journal(journal: &Shared, metrics: &Metrics, ids: &[RecordId]) {
    if ids.is_empty() {
        return;
    }
    if let Ok(mut j) = journal.lock() {
        if let Err(e) = j.ack(ids) {
            tracing::warn!(error = %e, "exchange journal: acks not persisted; those exchanges will be parsed again after a restart");
        }
        publish(&j, metrics, &Slot::Journal);
    }
}
