//! The exchange journal: finished exchanges, raw and unparsed, written to
//! disk before anything else happens to them (spool on only).
//!
//! ```text
//! request path --try_send--> [entry queue] --> journal writer (group commit)
//!      ^ with fsync = "always", the response's last bytes wait here     |
//!        until the exchange is on disk (see `Submitter::submit`)        v
//!                                     <spool dir>/exchanges/ (a `Spool`)
//!                                                  | read back
//!                                                  v
//!                     parse workers --span + journal id--> span spool writer
//!                                  (acks the journal record once its span is spooled)
//! ```
//!
//! Why: the span spool sits after parsing, so without the journal a trace
//! exists only in memory between a call's end and its span's append — a
//! `kill -9` in that window loses it, and a parse backlog could only be
//! dropped. With the journal:
//!
//! - **fsync = "always"**: a call's response is not finished (its last bytes
//!   are held) until its exchange is fsynced here, so every call a client saw
//!   complete survives `kill -9` and power loss. The cost is one group-commit
//!   fsync at the end of each response; nothing waits for parsing or export.
//!   The wait is bounded (`spool.max_hold`): a hung disk delays calls by
//!   at most that, never hangs them, and each such release is counted.
//! - **fsync interval**: nothing is held; an exchange is on disk (safe from
//!   `kill -9`) once the writer's group is appended, microseconds to a few
//!   milliseconds after the call ends.
//! - Parse workers read from the journal, so a parse backlog waits on disk
//!   instead of being dropped; memory holds one small batch per worker.
//!
//! A journal record is acknowledged only after its span is in the span spool
//! (or after parsing it failed for good: a panic, an undecodable record), so
//! a crash anywhere re-parses it on the next start. A record parsed twice
//! yields the same trace and span ids, which MLflow upserts into one trace.
//!
//! **No record is parsed a third time after killing the process twice**
//! ([`guard`]). A crash `catch_unwind` cannot see (an OOM kill, a stack
//! overflow, an abort) leaves its record unacked, so without a guard every
//! start would parse it and die again: a crash loop. Each record is marked
//! "being parsed" in `exchanges/parsing.marks` before it is decoded, and
//! freed after. A start that finds a record still marked gives it a strike
//! and parses it again alone (no other parse running, so a second crash
//! blames it and no bystander); at two strikes the record is written to
//! `<spool.dir>/quarantine/` ([`quarantine`]), counted in
//! `llmtap_journal_quarantined_total` and acked, never parsed. One crash
//! (a `kill -9` in a deploy) costs no trace. The marks file is checksummed
//! per slot; damage in it reads as "no mark", never as a crash.

pub mod codec;
mod gate;
pub mod guard;
pub mod marks;
pub mod quarantine;
#[cfg(debug_assertions)]
pub mod test_hooks;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};

use super::spool::group::{append_group, next_group, publish, with_spool, Idle, Lost, Slot};
use super::spool::{RealFs, RecordId, Spool, SpoolError, MAX_PAYLOAD};
pub use super::spooled::ack_journal as ack;
use crate::config::SpoolSettings;
use crate::exchange::Exchange;
use crate::metrics::Metrics;

/// The journal shared by its writer, the parse workers and the span writer.
pub use super::spool::group::Shared;

/// How long a journal group waits for more exchanges after its first, when
/// no call waits for it (`fsync` an interval): at a steady rate, a group per
/// call wakes every stage behind the writer once per call; a millisecond
/// gathers several calls into one group. Nothing on the request path waits.
const LINGER: Duration = Duration::from_millis(1);

/// The journal's directory inside the spool directory.
pub const DIR: &str = "exchanges";

/// Exchanges appended per group commit at most (count and captured bytes).
const GROUP: usize = 256;
const GROUP_BYTES: usize = 32 << 20;

/// Records a parse worker takes per read (count and bytes).
const READ_RECORDS: usize = 8;
pub const READ_BYTES: usize = 16 << 20;

/// Each captured body is cut to this many bytes in a record, so that a
/// record always fits the spool's payload limit (room left for the rest).
const BODY_LIMIT: usize = MAX_PAYLOAD / 2 - (1 << 20);

/// One exchange on its way to the journal, and who waits for it.
pub struct Entry {
    pub exchange: Exchange,
    /// Told once the exchange is durable (or could not be written).
    pub durable: Option<oneshot::Sender<()>>,
    /// Captured bytes, as counted against the entry queue's byte bound.
    pub len: usize,
}

/// Opens the journal of a spool configuration: `<dir>/exchanges`, the same
/// size cap and segment size as the span spool. Syncing is the writer's job
/// (group commit), as for the span spool.
pub fn open(s: &SpoolSettings) -> Result<Spool<RealFs>, SpoolError> {
    super::spool::group::open_at(s, s.dir.join(DIR))
}

/// Applies each exchange's privacy plan ([`super::privacy`]) before it is
/// written, on a blocking thread (regexes over whole bodies).
async fn apply_privacy(mut group: Vec<Entry>, metrics: &Arc<Metrics>) -> Vec<Entry> {
    if !super::privacy::any_to_do(group.iter().map(|e| &e.exchange)) {
        return group;
    }
    let metrics = metrics.clone();
    tokio::task::spawn_blocking(move || {
        for e in &mut group {
            super::privacy::apply(&mut e.exchange, &metrics);
        }
        group
    })
    .await
    .unwrap_or_default()
}

/// Wakes parse workers when the writer appended, and tells them when it is
/// done for good.
#[derive(Default)]
pub struct Wake {
    generation: Mutex<u64>,
    cv: Condvar,
    done: AtomicBool,
}

impl Wake {
    fn bump(&self) {
        if let Ok(mut g) = self.generation.lock() {
            *g += 1;
        }
        self.cv.notify_all();
    }

    fn finish(&self) {
        self.done.store(true, Ordering::SeqCst);
        self.bump();
    }

    fn generation(&self) -> u64 {
        self.generation.lock().map_or(0, |g| *g)
    }

    /// Waits until the generation moves past `seen` (or a while passes).
    fn wait_past(&self, seen: u64) {
        if let Ok(g) = self.generation.lock() {
            let _ = self
                .cv
                .wait_timeout_while(g, Duration::from_millis(250), |g| *g == seen);
        }
    }
}

/// Tells the parse workers the writer is gone however it ends: a runtime
/// shutting down cancels it mid-loop, and a worker waiting for it (or a
/// shutdown joining the workers on a blocking thread, which the runtime's
/// drop waits for) would wait forever.
struct FinishOnDrop(Arc<Wake>);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// Appends exchanges as they come, one group commit at a time (fsynced per
/// group with `fsync = "always"`, else on the interval), then releases the
/// responses waiting for them and wakes the parse workers.
pub async fn writer(
    mut rx: mpsc::Receiver<Entry>,
    journal: Shared,
    wake: Arc<Wake>,
    queued_bytes: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    settings: SpoolSettings,
) {
    let _finish = FinishOnDrop(wake.clone());
    let always = settings.fsync_interval.is_none();
    let idle = Idle::new(vec![(journal.clone(), Slot::Journal)], &metrics, &settings);
    // A held call waits for its group: no linger with `fsync = "always"`.
    let idle = idle.lingering(match always {
        true => Duration::ZERO,
        false => LINGER,
    });
    while let Some(group) = next_group(&mut rx, &idle, GROUP, GROUP_BYTES, |e| e.len).await {
        let bytes: usize = group.iter().map(|e| e.len).sum();
        queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
        metrics
            .queue_depth
            .fetch_sub(group.len() as i64, Ordering::Relaxed);
        let group = apply_privacy(group, &metrics).await;
        let count = group.len() as u64;
        let (lost, group) = with_spool(&journal, &metrics, Slot::Journal, move |j| {
            let payloads = group.iter().map(|e| codec::encode(&e.exchange, BODY_LIMIT));
            (append_group(j, payloads, always), group)
        })
        .await
        .unwrap_or_else(|| {
            let error = Some("the exchange journal is unavailable".into());
            (Lost { count, error }, Vec::new())
        });
        for entry in group {
            if let Some(tx) = entry.durable {
                let _ = tx.send(());
            }
        }
        lost.report_total(&metrics, "exchange journal");
        wake.bump();
    }
    with_spool(&journal, &metrics, Slot::Journal, |j| j.flush()).await;
}

/// One record read back: the exchange (None when the record cannot be
/// decoded; it is counted and acknowledged all the same), its id, and (with
/// a [`guard::Guard`]) its parse mark, to drop once the parse is over.
pub struct Item {
    pub exchange: Option<Exchange>,
    pub id: RecordId,
    pub parsing: Option<guard::Parsing>,
}

/// A parse worker's reading end: small batches, oldest first.
pub struct Reader {
    journal: Shared,
    wake: Arc<Wake>,
    metrics: Arc<Metrics>,
    batch: VecDeque<(RecordId, Vec<u8>)>,
    /// The poison-pill guard and this worker's number.
    guard: Option<(Arc<guard::Guard>, usize)>,
    /// This worker's mark slot may hold a finished record (freed when idle).
    marked: bool,
}

impl Reader {
    pub fn new(journal: Shared, wake: Arc<Wake>, metrics: Arc<Metrics>) -> Self {
        Reader {
            journal,
            wake,
            metrics,
            batch: VecDeque::new(),
            guard: None,
            marked: false,
        }
    }

    /// Marks each record in progress (as `worker`) before decoding it, and
    /// quarantines the records the guard says to.
    pub fn guarded(mut self, guard: Arc<guard::Guard>, worker: usize) -> Self {
        self.guard = Some((guard, worker));
        self
    }

    /// Frees this worker's mark slot if a finished parse left it marked:
    /// before waiting for records, and when stopping.
    fn free_mark(&mut self) {
        if let (true, Some((g, worker))) = (self.marked, &self.guard) {
            g.free(*worker);
        }
        self.marked = false;
    }

    /// Waits for the journal to change past `seen`, with no mark held (a
    /// journal that changed already is read again at once, mark kept).
    fn wait_past(&mut self, seen: u64) {
        if self.wake.generation() == seen {
            self.free_mark();
        }
        self.wake.wait_past(seen);
    }
}

impl Drop for Reader {
    fn drop(&mut self) {
        self.free_mark();
    }
}

impl Iterator for Reader {
    type Item = Item;

    /// The next record, waiting for one; `None` once the writer is done and
    /// the journal has nothing left to hand out.
    fn next(&mut self) -> Option<Item> {
        loop {
            if let Some((id, payload)) = self.batch.pop_front() {
                let parsing = match &self.guard {
                    None => None,
                    Some((g, worker)) => match g.admit(*worker, id) {
                        guard::Admit::Parse(p) => {
                            self.marked = true;
                            Some(p)
                        }
                        guard::Admit::Quarantine => {
                            g.quarantine(id, &payload, &self.journal);
                            continue;
                        }
                    },
                };
                let exchange = match codec::decode(&payload) {
                    Ok(ex) => Some(ex),
                    Err(e) => {
                        self.metrics
                            .journal_undecodable
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::error!(error = %e, "exchange journal: a record cannot be read back; its trace is lost");
                        None
                    }
                };
                return Some(Item {
                    exchange,
                    id,
                    parsing,
                });
            }
            // Read `done` (and the generation) before looking: if the writer
            // finished before this read, the read sees all it wrote.
            let done = self.wake.done.load(Ordering::SeqCst);
            let seen = self.wake.generation();
            let read = {
                let mut j = self.journal.lock().ok()?;
                let r = j.next_batch(READ_RECORDS, READ_BYTES);
                publish(&j, &self.metrics, &Slot::Journal);
                r
            };
            match read {
                Ok(b) if !b.is_empty() => self.batch.extend(b),
                Ok(_) if done => {
                    self.free_mark();
                    return None;
                }
                Ok(_) => self.wait_past(seen),
                Err(e) => {
                    tracing::error!(error = %e, "exchange journal: read failed");
                    if done {
                        self.free_mark();
                        return None;
                    }
                    self.wait_past(seen);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests;
