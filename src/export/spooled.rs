//! The durable export path (spool on):
//!
//! ```text
//! parse workers --span queue--> spool writer --group commit--> disk spool
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
use super::spool::{Fsync, RealFs, Spool, SpoolConfig, SpoolError};
use super::Deliverer;
use crate::config::SpoolSettings;
use crate::metrics::Metrics;

/// The spool shared by the writer and the delivery task.
pub type Shared = Arc<Mutex<Spool<RealFs>>>;

/// Spans written per group commit at most.
const GROUP: usize = 512;

/// Opens the spool a configuration names. With `fsync = "always"` the spool
/// itself syncs lazily and the writer flushes once per group (group commit).
pub fn open(s: &SpoolSettings) -> Result<Spool<RealFs>, SpoolError> {
    let fsync = match s.fsync_interval {
        Some(d) => Fsync::Interval(d),
        None => Fsync::Interval(Duration::from_secs(3600)),
    };
    Spool::open(
        SpoolConfig {
            dir: s.dir.clone(),
            fsync,
            max_bytes: s.max_bytes,
            segment_bytes: s.segment_bytes,
        },
        RealFs::new(),
    )
}

fn publish(spool: &Spool<RealFs>, metrics: &Metrics) {
    if let Ok(mut slot) = metrics.spool.lock() {
        *slot = Some((spool.stats(), spool.config().max_bytes));
    }
}

/// Runs `f` on the spool off the async threads.
async fn with_spool<T: Send + 'static>(
    spool: &Shared,
    metrics: &Arc<Metrics>,
    f: impl FnOnce(&mut Spool<RealFs>) -> T + Send + 'static,
) -> Option<T> {
    let (spool, metrics) = (spool.clone(), metrics.clone());
    tokio::task::spawn_blocking(move || {
        let mut guard = spool.lock().ok()?;
        let out = f(&mut guard);
        publish(&guard, &metrics);
        Some(out)
    })
    .await
    .ok()
    .flatten()
}

/// Appends spans as they come, one group commit at a time; flushes on the
/// interval and at the end.
pub async fn writer(
    mut rx: mpsc::Receiver<Span>,
    spool: Shared,
    notify: Arc<Notify>,
    done: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    settings: SpoolSettings,
) {
    let always = settings.fsync_interval.is_none();
    let tick = settings.fsync_interval.unwrap_or(Duration::from_secs(1));
    loop {
        let first = tokio::select! {
            s = rx.recv() => s,
            _ = tokio::time::sleep(tick) => {
                with_spool(&spool, &metrics, |s| s.flush()).await;
                continue;
            }
        };
        let Some(first) = first else { break };
        let mut group = vec![first];
        while group.len() < GROUP {
            match rx.try_recv() {
                Ok(s) => group.push(s),
                Err(_) => break,
            }
        }
        metrics.queue_depth.fetch_sub(group.len() as i64, Relaxed);
        let payloads: Vec<Vec<u8>> = group.iter().map(Message::encode_to_vec).collect();
        let lost = with_spool(&spool, &metrics, move |s| {
            let mut lost = 0u64;
            for p in &payloads {
                match s.append(p) {
                    Ok(_) => {}
                    Err(SpoolError::Full { .. }) => lost += 1,
                    Err(e) => {
                        lost += 1;
                        tracing::error!(error = %e, "spool: a trace could not be written; it is lost");
                    }
                }
            }
            if always {
                if let Err(e) = s.flush() {
                    tracing::error!(error = %e, "spool: fsync failed; the last traces may not survive a power loss");
                }
            }
            lost
        })
        .await
        .unwrap_or(group.len() as u64);
        if lost > 0 {
            metrics.dropped("spool_full", lost);
            let n = metrics.dropped_count("spool_full");
            if n == lost || n.is_power_of_two() {
                tracing::warn!(
                    dropped_total = n,
                    "spool full or failing: traces dropped (the calls themselves were proxied)"
                );
            }
        }
        notify.notify_one();
    }
    with_spool(&spool, &metrics, |s| s.flush()).await;
    done.store(true, Relaxed);
    notify.notify_one();
}

/// Sends what the spool holds, batch by batch, acking what the sink took.
/// Ends once the writer is done and the spool has nothing left to hand out.
pub async fn deliver(
    spool: Shared,
    notify: Arc<Notify>,
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
    loop {
        let batch = with_spool(&spool, &metrics, move |s| {
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
                with_spool(&spool, &metrics, move |s| s.nack(&ids)).await;
                tokio::select! {
                    _ = notify.notified() => {}
                    _ = tokio::time::sleep_until(since + interval) => {}
                }
                continue;
            }
        }
        partial_since = None;
        let mut ids = Vec::with_capacity(batch.len());
        let mut spans = Vec::with_capacity(batch.len());
        for (id, payload) in batch {
            ids.push(id);
            match Span::decode(payload.as_slice()) {
                Ok(s) => spans.push(s),
                Err(e) => tracing::error!(error = %e, "spool: a record is not a span; skipped"),
            }
        }
        if !spans.is_empty() && !deliverer.deliver(spans).await {
            // Shutting down with the sink failing: the batch stays spooled.
            with_spool(&spool, &metrics, move |s| s.nack(&ids)).await;
            return;
        }
        with_spool(&spool, &metrics, move |s| {
            if let Err(e) = s.ack(&ids) {
                tracing::warn!(error = %e, "spool: acks not persisted; those traces will be sent again after a restart");
            }
        })
        .await;
    }
}
