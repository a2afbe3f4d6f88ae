//! Group commit, the writer side shared by the exchange journal and the
//! sinks' span spools: a spool opened with the configuration's settings,
//! shared between a writer and a reader; the next group of queued items
//! (the first to arrive, then whatever is already queued); one write per
//! group and write head ([`super::joint`]) and one fsync per group (`fsync = "always"`); what a group lost,
//! counted; and the spool's statistics published to the metrics after every
//! operation, all off the async threads.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;

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
    /// How long a group waits for more items after its first (zero: it
    /// takes only what is queued already).
    linger: Duration,
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
            linger: Duration::ZERO,
        }
    }

    /// Groups wait up to `linger` for more items after their first.
    pub fn lingering(mut self, linger: Duration) -> Self {
        self.linger = linger;
        self
    }

    /// Flushes every spool (the writer does at its end too).
    pub async fn flush(&self) {
        for (spool, slot) in &self.spools {
            with_spool(spool, &self.metrics, slot.clone(), |s| s.flush()).await;
        }
    }
}

/// The next group commit's items: the first to arrive, then whatever
/// arrives within the linger (only what is already queued, without one),
/// up to `max` items and `max_weight` (by `weight`). The spool is flushed
/// on every idle tick. `None` once the queue is closed.
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
    let linger = (!idle.linger.is_zero()).then(|| tokio::time::Instant::now() + idle.linger);
    let mut total = weight(&first);
    let mut group = vec![first];
    while group.len() < max && total < max_weight {
        let item = match (rx.try_recv(), linger) {
            (Ok(item), _) => item,
            (Err(mpsc::error::TryRecvError::Empty), Some(until)) => {
                match tokio::time::timeout_at(until, rx.recv()).await {
                    Ok(Some(item)) => item,
                    _ => break,
                }
            }
            (Err(_), _) => break,
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
    use tokio::time::Instant;

    fn idle(linger: Duration) -> Idle {
        Idle {
            spools: Vec::new(),
            metrics: Arc::new(Metrics::default()),
            tick: Duration::from_secs(3600),
            linger,
        }
    }

    async fn group(rx: &mut mpsc::Receiver<u32>, idle: &Idle, max: usize) -> Vec<u32> {
        next_group(rx, idle, max, usize::MAX, |_| 0).await.unwrap()
    }

    #[tokio::test(start_paused = true)]
    async fn a_lingering_group_takes_what_arrives_within_the_linger() {
        let (tx, mut rx) = mpsc::channel(16);
        tx.send(1).await.unwrap();
        // (tokio's timers tick by the millisecond)
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(1)).await;
            tx.send(2).await.unwrap();
            tokio::time::sleep(Duration::from_millis(4)).await;
            tx.send(3).await.unwrap();
        });
        let idle = idle(Duration::from_millis(3));
        let start = Instant::now();
        assert_eq!(group(&mut rx, &idle, 8).await, vec![1, 2]);
        assert_eq!(
            start.elapsed(),
            Duration::from_millis(3),
            "the linger, no more"
        );
        assert_eq!(
            group(&mut rx, &idle, 8).await,
            vec![3],
            "past it: the next group"
        );
        late.await.unwrap();
        assert!(next_group(&mut rx, &idle, 8, usize::MAX, |_| 0)
            .await
            .is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn without_a_linger_a_group_is_what_is_queued_already() {
        let (tx, mut rx) = mpsc::channel(16);
        tx.send(1).await.unwrap();
        tx.send(2).await.unwrap();
        let late = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_micros(100)).await;
            tx.send(3).await.unwrap();
        });
        let idle = idle(Duration::ZERO);
        let start = Instant::now();
        assert_eq!(group(&mut rx, &idle, 8).await, vec![1, 2]);
        assert_eq!(start.elapsed(), Duration::ZERO);
        late.await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_or_closed_queue_ends_the_linger_at_once() {
        let idle = idle(Duration::from_millis(1));
        let (tx, mut rx) = mpsc::channel(16);
        for n in 1..=3 {
            tx.send(n).await.unwrap();
        }
        let start = Instant::now();
        assert_eq!(group(&mut rx, &idle, 2).await, vec![1, 2], "full");
        drop(tx);
        assert_eq!(group(&mut rx, &idle, 8).await, vec![3], "closed");
        assert_eq!(start.elapsed(), Duration::ZERO);
    }
}
