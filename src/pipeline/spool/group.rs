//! Group commit, the writer side shared by the exchange journal and the
//! sinks' span spools: a spool opened with the configuration's settings,
//! shared between a writer and a reader; the next group of queued items
//! (the first to arrive, then whatever is already queued); one write per
//! group and write head ([`super::joint`]) and one fsync per group (`fsync = "always"`); what a group lost,
//! counted; and the spool's statistics published to the metrics after every
//! operation, all off the async threads.

use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::{Fsync, RealFs, RecordId, Spool, SpoolConfig, SpoolError};
use crate::config::SpoolSettings;
use crate::metrics::{Metrics, SinkCounters};

/// The spool shared by the writer and the delivery task.
pub type Shared = Arc<Mutex<Spool<RealFs>>>;

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
            tail_bytes: super::TAIL_BYTES,
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

/// Runs `f` on a spool on the calling thread (it blocks: a writer or worker
/// thread), then publishes its statistics; `None` if the lock is poisoned.
pub fn on_spool<T>(
    spool: &Shared,
    metrics: &Metrics,
    slot: &Slot,
    f: impl FnOnce(&mut Spool<RealFs>) -> T,
) -> Option<T> {
    let mut guard = spool.lock().ok()?;
    let out = f(&mut guard);
    publish(&guard, metrics, slot);
    Some(out)
}

/// [`on_spool`] from an async task: on a blocking thread.
pub async fn with_spool<T: Send + 'static>(
    spool: &Shared,
    metrics: &Arc<Metrics>,
    slot: Slot,
    f: impl FnOnce(&mut Spool<RealFs>) -> T + Send + 'static,
) -> Option<T> {
    let (spool, metrics) = (spool.clone(), metrics.clone());
    tokio::task::spawn_blocking(move || on_spool(&spool, &metrics, &slot, f))
        .await
        .ok()
        .flatten()
}

/// Flushes spools on a tick, from an async task ([`super::super::spooled::flusher`]).
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
            tick: tick(settings),
        }
    }

    /// How often the spools are flushed.
    pub fn tick(&self) -> Duration {
        self.tick
    }

    /// Flushes every spool.
    pub async fn flush(&self) {
        for (spool, slot) in &self.spools {
            with_spool(spool, &self.metrics, slot.clone(), |s| s.flush()).await;
        }
    }
}

/// How often an idle spool is flushed: the fsync interval (every second
/// with `fsync = "always"`, where each group is synced anyway).
pub fn tick(settings: &SpoolSettings) -> Duration {
    settings.fsync_interval.unwrap_or(Duration::from_secs(1))
}

/// How a writer thread gathers a group commit.
#[derive(Debug, Clone, Copy)]
pub struct Gather {
    /// Items per group at most, and their weight.
    pub max: usize,
    pub max_weight: usize,
    /// How long a group waits for more items after its first (zero: it
    /// takes only what is queued already).
    pub linger: Duration,
    /// How long the queue may stay idle before `on_idle` runs (and again).
    pub tick: Duration,
}

/// The next group commit's items, on a writer thread: the first to arrive,
/// then whatever is queued once the linger has passed (whatever is queued
/// already, without one), up to `g.max` items and `g.max_weight` (by
/// `weight`). The thread sleeps through the linger instead of waiting on
/// the queue, so the senders meanwhile wake nothing. `on_idle` runs on every
/// idle tick. `None` once the queue is closed and empty.
pub fn next_group<T>(
    rx: &Receiver<T>,
    g: Gather,
    weight: impl Fn(&T) -> usize,
    mut on_idle: impl FnMut(),
) -> Option<Vec<T>> {
    let first = loop {
        match rx.recv_timeout(g.tick) {
            Ok(item) => break item,
            Err(RecvTimeoutError::Timeout) => on_idle(),
            Err(RecvTimeoutError::Disconnected) => return None,
        }
    };
    let mut total = weight(&first);
    let mut group = vec![first];
    let mut lingered = g.linger.is_zero();
    while group.len() < g.max && total < g.max_weight {
        let item = match rx.try_recv() {
            Ok(item) => item,
            Err(TryRecvError::Empty) if !lingered => {
                lingered = true;
                std::thread::sleep(g.linger);
                continue;
            }
            Err(_) => break,
        };
        total += weight(&item);
        group.push(item);
    }
    Some(group)
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
    append_group_ids(s, payloads, always).0
}

/// [`append_group`], with each record's id (`None`: not stored), in order.
pub fn append_group_ids(
    s: &mut Spool<RealFs>,
    payloads: impl IntoIterator<Item = Vec<u8>>,
    always: bool,
) -> (Lost, Vec<Option<RecordId>>) {
    let mut lost = Lost {
        count: 0,
        error: None,
    };
    let mut ids = Vec::new();
    for r in s.append_all(payloads.into_iter().collect()) {
        match r {
            Ok(id) => ids.push(Some(id)),
            Err(e) => {
                ids.push(None);
                lost.count += 1;
                if lost.error.is_none() && !matches!(e, SpoolError::Full { .. }) {
                    lost.error = Some(e.to_string());
                }
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
    (lost, ids)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc::sync_channel;
    use std::time::Instant;

    fn gather(max: usize, linger: Duration) -> Gather {
        Gather {
            max,
            max_weight: usize::MAX,
            linger,
            tick: Duration::from_secs(3600),
        }
    }

    fn group(rx: &Receiver<u32>, g: Gather) -> Option<Vec<u32>> {
        next_group(rx, g, |_| 0, || {})
    }

    #[test]
    fn a_lingering_group_takes_what_arrives_within_the_linger() {
        let (tx, rx) = sync_channel(16);
        tx.send(1).unwrap();
        let late = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            tx.send(2).unwrap();
            tx
        });
        let started = Instant::now();
        let g = gather(8, Duration::from_millis(300));
        assert_eq!(group(&rx, g), Some(vec![1, 2]), "the late one joined");
        assert!(
            started.elapsed() >= Duration::from_millis(300),
            "it lingered"
        );
        let tx = late.join().unwrap();
        tx.send(3).unwrap();
        tx.send(4).unwrap();
        let started = Instant::now();
        let full = gather(2, Duration::from_secs(60));
        assert_eq!(group(&rx, full), Some(vec![3, 4]), "full at once");
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "no linger when full"
        );
    }

    #[test]
    fn without_a_linger_a_group_is_what_is_queued_already() {
        let (tx, rx) = sync_channel(16);
        tx.send(1).unwrap();
        tx.send(2).unwrap();
        let started = Instant::now();
        assert_eq!(group(&rx, gather(8, Duration::ZERO)), Some(vec![1, 2]));
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "it did not wait for a third"
        );
    }

    #[test]
    fn a_full_or_closed_queue_ends_the_linger_at_once() {
        let (tx, rx) = sync_channel(16);
        for n in 1..=3 {
            tx.send(n).unwrap();
        }
        let g = gather(2, Duration::from_secs(60));
        assert_eq!(group(&rx, g), Some(vec![1, 2]), "full");
        drop(tx);
        assert_eq!(
            group(&rx, gather(8, Duration::from_secs(60))),
            Some(vec![3]),
            "closed"
        );
        assert_eq!(group(&rx, g), None, "closed and empty");
    }

    #[test]
    fn an_idle_queue_runs_its_idle_work_every_tick() {
        let (tx, rx) = sync_channel(16);
        let g = Gather {
            tick: Duration::from_millis(5),
            ..gather(8, Duration::ZERO)
        };
        let mut ticks = 0;
        let sender = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(100));
            tx.send(7).unwrap();
        });
        assert_eq!(next_group(&rx, g, |_| 0, || ticks += 1), Some(vec![7]));
        sender.join().unwrap();
        assert!(ticks >= 2, "flushed while idle ({ticks} ticks)");
    }
}
