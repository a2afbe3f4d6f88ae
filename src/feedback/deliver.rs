//! One delivery task per sink that takes feedback: the item due first goes
//! to [`crate::sinks::Sink::assess`]; what that came to ([`decide`]) deletes
//! it, schedules it again, or moves it to the dead-letter file. File I/O
//! runs on the blocking pool.

use std::sync::Arc;
use std::time::Instant;

use super::queue::{decide, Decision, Item, Timing};
use super::Lane;
use crate::metrics::feedback::Outcome;
use crate::metrics::Metrics;

/// Runs until aborted (at shutdown).
pub async fn run(lane: Arc<Lane>, timing: Timing, metrics: Arc<Metrics>) {
    loop {
        let next = lane.queue().take_due(Instant::now());
        match next {
            None => lane.notify.notified().await,
            Some(Err(wait)) => {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = lane.notify.notified() => {}
                }
            }
            Some(Ok(item)) => attempt(&lane, item, timing, &metrics).await,
        }
    }
}

/// Sends one item and acts on the answer.
async fn attempt(lane: &Arc<Lane>, mut item: Item, timing: Timing, metrics: &Metrics) {
    let sink = lane.sink.name();
    let decision = match item.record() {
        Ok(record) => {
            let answer = lane.sink.assess(&record.assessment()).await;
            let d = decide(&mut item, &answer, Instant::now(), timing);
            if matches!(d, Decision::Retry(_)) && item.failures.is_power_of_two() {
                tracing::warn!(sink, trace_id = %item.trace_id, failures = item.failures, reason = %answer.reason, "feedback not delivered yet: retrying");
            }
            d
        }
        Err(reason) => Decision::DeadLetter(reason),
    };
    let outcome = match decision {
        Decision::Retry(at) => {
            item.due = at;
            let mut q = lane.queue();
            q.retry(item);
            metrics.feedback.set_pending(sink, q.len());
            return;
        }
        Decision::Delivered => Outcome::Delivered,
        Decision::Unsupported => Outcome::Unsupported,
        Decision::DeadLetter(reason) => {
            tracing::error!(sink, trace_id = %item.trace_id, reason = %reason, "feedback not delivered: written to the dead-letter file");
            dead_letter(lane, &item, reason).await
        }
    };
    let store = lane.store.clone();
    let file = item.file.clone();
    let removed = tokio::task::spawn_blocking(move || store.remove(&file)).await;
    if let Ok(Err(e)) = removed {
        tracing::warn!(sink, file = %item.file, error = %e, "cannot delete a delivered feedback file: it may be sent again at the next start");
    }
    let mut q = lane.queue();
    q.finish(&item);
    metrics.feedback.set_pending(sink, q.len());
    drop(q);
    metrics.feedback.count(sink, outcome);
}

/// Writes the item to the dead-letter file; `Dropped` when that failed.
async fn dead_letter(lane: &Arc<Lane>, item: &Item, reason: String) -> Outcome {
    let store = lane.store.clone();
    let sink = lane.sink.name().to_string();
    let record = item.record().ok();
    let raw = match record {
        Some(_) => None,
        None => Some(String::from_utf8_lossy(&item.json[..item.json.len().min(1024)]).into_owned()),
    };
    let written = tokio::task::spawn_blocking(move || {
        store.dead_letter(&sink, &reason, record.as_ref(), raw.as_deref())
    })
    .await;
    match written {
        Ok(Ok(true)) => Outcome::DeadLettered,
        Ok(Ok(false)) => {
            tracing::error!(sink = lane.sink.name(), "the feedback dead-letter file is at export.dead_letter_max_file_bytes: the feedback is dropped");
            Outcome::Dropped
        }
        Ok(Err(e)) => {
            tracing::error!(sink = lane.sink.name(), error = %e, "cannot write the feedback dead-letter file: the feedback is dropped");
            Outcome::Dropped
        }
        Err(_) => Outcome::Dropped,
    }
}
