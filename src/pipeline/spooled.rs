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
//! queue is bounded and the delivery task holds one batch. The group-commit
//! helpers this shares with the exchange journal are the spool's
//! ([`super::spool::group`]).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::sync::{mpsc, Notify};

use super::batch::Limits;
use super::spool::group::{append_group, next_group, publish, with_spool, Idle, Lost, Slot};
pub use super::spool::group::{open, open_at, Shared};
use super::spool::RecordId;
use super::{Deliverer, Parsed};
use crate::config::SpoolSettings;
use crate::metrics::{Metrics, SinkCounters};

/// Spans written per group commit at most.
const GROUP: usize = 512;

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
        let (mut ids, span_ids, spans) = decode(batch);
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

/// A spool batch as spans and their record ids, and the ids of records that
/// are not spans (logged; acked with the batch, they never will be spans).
fn decode(batch: Vec<(RecordId, Vec<u8>)>) -> (Vec<RecordId>, Vec<RecordId>, Vec<Span>) {
    let mut bad = Vec::new();
    let mut span_ids = Vec::with_capacity(batch.len());
    let mut spans = Vec::with_capacity(batch.len());
    for (id, payload) in batch {
        match Span::decode(payload.as_slice()) {
            Ok(s) => {
                spans.push(s);
                span_ids.push(id);
            }
            Err(e) => {
                bad.push(id);
                tracing::error!(error = %e, "spool: a record is not a span; skipped")
            }
        }
    }
    (bad, span_ids, spans)
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
