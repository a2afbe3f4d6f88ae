//! The durable export path (spool on):
//!
//! ```text
//! parse worker (a thread): a group of journal records -> spans
//!     --> every sink's spool (one append each) --> acks the group in the journal
//!                                                  | notify
//!                                                  v
//!                          delivery task: next_batch (the spans themselves
//!                          from the handoff while it keeps up) -> Deliverer (retries
//!                          without limit) -> ack (the segment files go once
//!                          every record in them is acked)
//! ```
//!
//! A trace counts as written once its group is appended (and fsynced, with
//! `fsync = "always"`); from then on it survives a tracking-server outage, a
//! restart or `kill -9`: the spool is replayed on the next start. Before
//! that, its exchange is in the journal, so a crash re-parses it. The
//! request path is untouched by any of this. Memory stays bounded: a worker
//! holds one group of spans ([`super::worker`]) and each delivery task one
//! batch. The group-commit helpers this shares with the exchange journal
//! are the spool's ([`super::spool::group`]).

use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::Arc;
use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;
use tokio::sync::Notify;

use super::batch::Limits;
use super::handoff::SharedHandoff;
use super::spool::group::{append_group_ids, on_spool, publish, with_spool, Idle, Lost, Slot};
pub use super::spool::group::{open, open_at, Shared};
use super::spool::{RealFs, RecordId, Spool};
use super::Deliverer;
use crate::config::SpoolSettings;
use crate::metrics::{Metrics, SinkCounters};

/// One sink's share of the spool: its own spool (directory), the wake-up
/// its delivery task waits on, and its counters. A dead sink's lane fills
/// while the others flow.
#[derive(Clone)]
pub struct Lane {
    pub spool: Shared,
    /// The spans of its latest records, for delivery without decoding.
    pub handoff: SharedHandoff,
    pub notify: Arc<Notify>,
    pub counters: Arc<SinkCounters>,
}

impl Lane {
    /// A lane for one sink's spool, with an empty handoff.
    pub fn new(spool: Spool<RealFs>, counters: Arc<SinkCounters>) -> Self {
        Lane {
            spool: Arc::new(std::sync::Mutex::new(spool)),
            handoff: super::handoff::Handoff::shared(),
            notify: Arc::new(Notify::new()),
            counters,
        }
    }

    fn slot(&self) -> Slot {
        Slot::Sink(self.counters.clone())
    }

    /// Keeps the spans whose records were stored (`ids[i]` is span `i`'s)
    /// for the delivery task ([`super::handoff`]).
    fn hand_off(&self, ids: Vec<Option<RecordId>>, spans: Vec<Span>) {
        let Ok(mut h) = self.handoff.lock() else {
            return;
        };
        for (id, span) in ids.into_iter().zip(spans) {
            if let Some(id) = id {
                h.push(id, span);
            }
        }
    }
}

/// Where the parse workers put their spans (spool on): every sink's spool,
/// one group commit per worker group, then the journal acks of the group's
/// exchanges, all on the worker's own thread (no queue, no hop to another
/// thread per group). Clones share one state; once the last clone is gone
/// (every worker has stopped), the delivery tasks and [`flusher`] are told
/// that no more spans will come.
#[derive(Clone)]
pub struct Store(Arc<StoreState>);

struct StoreState {
    lanes: Vec<Lane>,
    journal: Shared,
    metrics: Arc<Metrics>,
    /// `fsync = "always"`: each group is synced before its journal acks.
    always: bool,
    done: Arc<AtomicBool>,
    /// Wakes [`flusher`] for its last flush.
    finished: Arc<Notify>,
}

impl Store {
    pub fn new(
        lanes: Vec<Lane>,
        journal: Shared,
        done: Arc<AtomicBool>,
        finished: Arc<Notify>,
        metrics: Arc<Metrics>,
        settings: &SpoolSettings,
    ) -> Self {
        Store(Arc::new(StoreState {
            lanes,
            journal,
            metrics,
            always: settings.fsync_interval.is_none(),
            done,
            finished,
        }))
    }

    /// Appends a group's spans to every sink's spool (blocking), hands them
    /// to the delivery tasks, then acks the group's journal records: their
    /// spans are spooled (or their loss counted; a `None` span failed to
    /// parse for good), so they need not be parsed again.
    pub fn put(&self, group: Vec<(Option<Span>, RecordId)>) {
        let s = &self.0;
        let journaled: Vec<RecordId> = group.iter().map(|(_, id)| *id).collect();
        let spans: Vec<Span> = group.into_iter().filter_map(|(span, _)| span).collect();
        if !spans.is_empty() {
            let payloads = spans.iter().map(Message::encode_to_vec).collect();
            let lost = append_to_lanes(&s.lanes, payloads, spans, s.always, &s.metrics);
            for (lane, lost) in s.lanes.iter().zip(lost) {
                lost.report(&s.metrics, &lane.counters, "spool");
                lane.notify.notify_one();
            }
        }
        ack_journal(&s.journal, &s.metrics, &journaled);
    }
}

impl Drop for StoreState {
    fn drop(&mut self) {
        self.done.store(true, Relaxed);
        self.finished.notify_one();
        for lane in &self.lanes {
            lane.notify.notify_one();
        }
    }
}

/// Flushes every sink's spool on the fsync interval while the parse workers
/// store spans (a spool synced only when appended to would leave its last
/// records unsynced through a quiet spell), and once more when they are done.
pub async fn flusher(
    lanes: Vec<Lane>,
    metrics: Arc<Metrics>,
    settings: SpoolSettings,
    done: Arc<AtomicBool>,
    finished: Arc<Notify>,
) {
    let spools = lanes.iter().map(|l| (l.spool.clone(), l.slot())).collect();
    let idle = Idle::new(spools, &metrics, &settings);
    loop {
        // Read `done` before flushing: a flush that starts after the workers
        // are done covers their last appends.
        let last = done.load(Relaxed);
        idle.flush().await;
        if last {
            return;
        }
        tokio::select! {
            _ = tokio::time::sleep(idle.tick()) => {}
            _ = finished.notified() => {}
        }
    }
}

/// Appends one group to every lane's spool (blocking), and hands the spans
/// of the records stored to each lane's delivery task; what each lost.
fn append_to_lanes(
    lanes: &[Lane],
    mut payloads: Vec<Vec<u8>>,
    spans: Vec<Span>,
    always: bool,
    metrics: &Metrics,
) -> Vec<Lost> {
    let n = lanes.len();
    let mut out = Vec::with_capacity(n);
    let mut spans = Some(spans);
    for (i, lane) in lanes.iter().enumerate() {
        let last = i + 1 == n;
        let these = match last {
            true => std::mem::take(&mut payloads),
            false => payloads.clone(),
        };
        let count = these.len() as u64;
        let (lost, ids) = match lane.spool.lock() {
            Ok(mut s) => {
                let stored = append_group_ids(&mut s, these, always);
                publish(&s, metrics, &lane.slot());
                stored
            }
            Err(_) => {
                let error = Some("the spool is unavailable".into());
                (Lost { count, error }, Vec::new())
            }
        };
        let these = match last {
            true => spans.take().unwrap_or_default(),
            false => spans.clone().unwrap_or_default(),
        };
        lane.hand_off(ids, these);
        out.push(lost);
    }
    out
}

/// Sends what the spool holds, batch by batch, acking what the sink took.
/// Ends once the parse workers are done ([`Store`]) and the spool has
/// nothing left to hand out.
pub async fn deliver(
    lane: Lane,
    writers_done: Arc<AtomicBool>,
    mut deliverer: Deliverer,
    metrics: Arc<Metrics>,
    limits: Limits,
) {
    let Limits {
        max_spans,
        max_bytes,
        interval,
    } = limits;
    // When the first record of a not-yet-full batch was taken: a batch goes
    // out when full, or `interval` after that, like the in-memory batcher.
    // The records taken so far stay in hand (in flight in the spool, so a
    // crash resends them), and each wake-up only tops the batch up.
    let mut partial_since: Option<tokio::time::Instant> = None;
    let mut batch = Held::default();
    let Lane { spool, notify, .. } = lane.clone();
    let slot = || lane.slot();
    loop {
        // Read `done` first: if the workers finished before this read, the
        // read sees all they wrote.
        let done = writers_done.load(Relaxed);
        let full = batch
            .fill(&spool, &metrics, slot(), max_spans, max_bytes)
            .await;
        if batch.records.is_empty() {
            if done {
                return;
            }
            tokio::select! {
                _ = notify.notified() => {}
                _ = tokio::time::sleep(Duration::from_secs(1)) => {}
            }
            continue;
        }
        if !full && !done {
            let since = *partial_since.get_or_insert_with(tokio::time::Instant::now);
            if since.elapsed() < interval {
                top_up_pause(&notify, since + interval, interval / TOP_UPS).await;
                continue;
            }
        }
        partial_since = None;
        // Records that are not spans are acked with the batch: they never will be.
        let (mut ids, span_ids, spans) = decode(std::mem::take(&mut batch).records, &lane.handoff);
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

/// A partial batch is topped up at most this many times per batch interval
/// (each top-up is a read of the spool on a blocking thread).
const TOP_UPS: u32 = 20;

/// Waits for new records (then a little longer, so that a busy writer's
/// groups are read together) or for the batch's deadline.
async fn top_up_pause(notify: &Notify, deadline: tokio::time::Instant, settle: Duration) {
    tokio::select! {
        _ = notify.notified() => {
            let at = (tokio::time::Instant::now() + settle).min(deadline);
            tokio::time::sleep_until(at).await;
        }
        _ = tokio::time::sleep_until(deadline) => {}
    }
}

/// The records a delivery task holds for its next batch.
#[derive(Default)]
struct Held {
    records: Vec<(RecordId, Vec<u8>)>,
    bytes: usize,
}

impl Held {
    /// What the next read may add: records, bytes, and whether it is the
    /// batch's first read (which takes one record whatever its size);
    /// `None` when the batch is full.
    fn room(&self, max_spans: usize, max_bytes: usize) -> Option<(usize, usize, bool)> {
        let n = max_spans.saturating_sub(self.records.len());
        let bytes = max_bytes.saturating_sub(self.bytes);
        match self.records.is_empty() {
            true => Some((max_spans, max_bytes, true)),
            false if n == 0 || bytes == 0 => None,
            false => Some((n, bytes, false)),
        }
    }

    fn add(&mut self, records: Vec<(RecordId, Vec<u8>)>) {
        self.bytes += records.iter().map(|(_, p)| p.len()).sum::<usize>();
        self.records.extend(records);
    }

    /// Tops the batch up from the spool (a read on a blocking thread);
    /// whether it is now full.
    async fn fill(
        &mut self,
        spool: &Shared,
        metrics: &Arc<Metrics>,
        slot: Slot,
        max_spans: usize,
        max_bytes: usize,
    ) -> bool {
        let Some((n, bytes, first)) = self.room(max_spans, max_bytes) else {
            return true;
        };
        let read = with_spool(spool, metrics, slot, move |s| match first {
            true => s.next_batch_and_full(n, bytes),
            false => s.next_batch_within(n, bytes),
        });
        let (records, full) = read
            .await
            .and_then(|r| {
                r.map_err(|e| tracing::error!(error = %e, "spool: read failed"))
                    .ok()
            })
            .unwrap_or_default();
        self.add(records);
        full || self.records.len() >= max_spans
    }
}

/// A spool batch as spans and their record ids, and the ids of records that
/// are not spans (logged; acked with the batch, they never will be spans).
/// Spans still in the handoff are taken from it, the rest decoded.
fn decode(
    batch: Vec<(RecordId, Vec<u8>)>,
    handoff: &SharedHandoff,
) -> (Vec<RecordId>, Vec<RecordId>, Vec<Span>) {
    let kept: Vec<Option<Span>> = match handoff.lock() {
        Ok(mut h) => batch.iter().map(|(id, _)| h.take(*id)).collect(),
        Err(_) => Vec::new(),
    };
    let mut kept = kept.into_iter();
    let mut bad = Vec::new();
    let mut span_ids = Vec::with_capacity(batch.len());
    let mut spans = Vec::with_capacity(batch.len());
    for (id, payload) in batch {
        if let Some(span) = kept.next().flatten() {
            spans.push(span);
            span_ids.push(id);
            continue;
        }
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
    on_spool(journal, metrics, &Slot::Journal, |j| {
        if let Err(e) = j.ack(ids) {
            tracing::warn!(error = %e, "exchange journal: acks not persisted; those exchanges will be parsed again after a restart");
        }
    });
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::pipeline::spool::{Fsync, RealFs, Spool, SpoolConfig};

    /// A lane with its own spool in `dir/name`.
    pub(in crate::pipeline) fn lane(dir: &std::path::Path, metrics: &Metrics, name: &str) -> Lane {
        let cfg = SpoolConfig {
            dir: dir.join(name),
            fsync: Fsync::Interval(Duration::from_secs(3600)),
            max_bytes: 64 << 20,
            segment_bytes: 1 << 20,
            tail_bytes: 1 << 20,
        };
        Lane::new(
            Spool::open(cfg, RealFs::new()).unwrap(),
            metrics.sinks.get(name),
        )
    }

    fn span(n: u8) -> Span {
        Span {
            trace_id: vec![n; 16],
            span_id: vec![n; 8],
            name: format!("span {n}"),
            ..Span::default()
        }
    }

    fn read(lane: &Lane) -> Vec<(RecordId, Vec<u8>)> {
        lane.spool.lock().unwrap().next_batch(100, 1 << 20).unwrap()
    }

    #[test]
    fn every_lane_delivers_the_spans_it_stored_whether_handed_off_or_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::default();
        let lanes = vec![
            lane(dir.path(), &metrics, "a"),
            lane(dir.path(), &metrics, "b"),
        ];
        let spans: Vec<Span> = (0..3).map(span).collect();
        let payloads = spans.iter().map(Message::encode_to_vec).collect();
        let lost = append_to_lanes(&lanes, payloads, spans.clone(), false, &metrics);
        assert!(lost.iter().all(|l| l.count == 0));
        for lane in &lanes {
            assert_eq!(lane.handoff.lock().unwrap().kept(), 3);
            let batch = read(lane);
            let (bad, ids, got) = decode(batch.clone(), &lane.handoff);
            assert!(bad.is_empty());
            assert_eq!(ids, batch.iter().map(|r| r.0).collect::<Vec<_>>());
            assert_eq!(got, spans, "handed off: the very spans stored");
            assert_eq!(lane.handoff.lock().unwrap().kept(), 0);
            // Sent again (after a failed send): decoded from the bytes.
            let (_, _, again) = decode(batch, &lane.handoff);
            assert_eq!(again, spans);
        }
    }

    #[test]
    fn a_span_the_handoff_no_longer_has_is_decoded() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Metrics::default();
        let lanes = vec![lane(dir.path(), &metrics, "a")];
        let spans: Vec<Span> = (0..4).map(span).collect();
        let payloads = spans.iter().map(Message::encode_to_vec).collect();
        append_to_lanes(&lanes, payloads, spans.clone(), false, &metrics);
        let batch = read(&lanes[0]);
        // The first two were evicted (or never kept).
        lanes[0].handoff.lock().unwrap().take(batch[1].0);
        let mut garbage = batch.clone();
        garbage[3].1 = b"\xff\xff not a span".to_vec();
        let (bad, ids, got) = decode(garbage, &lanes[0].handoff);
        assert!(bad.is_empty(), "the handed-off span is used, not its bytes");
        assert_eq!(ids.len(), 4);
        assert_eq!(got, spans);
    }
}
