//! The exchange journal: finished exchanges, raw and unparsed, written to
//! disk before anything else happens to them (spool on only).
//!
//! ```text
//! request path --try_send--> [entry queue] --> journal writer (a thread; group commit)
//!      ^ with fsync = "always", the response's last bytes wait here     |
//!        until the exchange is on disk (see `Submitter::submit`)        v
//!                                     <spool dir>/exchanges/ (a `Spool`)
//!                                                  | read back
//!                                                  v
//!                     parse workers: spans into every sink's spool, then
//!                                  ack the journal records (`super::spooled::Store`)
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
//!   `kill -9`) once the writer's group is appended, at most [`LINGER`] and
//!   the append's time after the call ends.
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

use std::sync::mpsc::Receiver;

use tokio::sync::oneshot;

use super::spool::group::{self, append_group, next_group, on_spool, Gather, Lost, Slot};
use super::spool::{RealFs, RecordId, Spool, SpoolError, MAX_PAYLOAD};
pub use super::spooled::ack_journal as ack;
use crate::config::SpoolSettings;
use crate::exchange::Exchange;
use crate::metrics::Metrics;

/// The journal shared by its writer and the parse workers (who read and ack).
pub use super::spool::group::Shared;

/// How long a journal group waits for more exchanges after its first, when
/// no call waits for it (`fsync` an interval): at a steady rate, a group per
/// call wakes every stage behind the writer once per call; a few
/// milliseconds gather several calls into one group (the writer sleeps
/// through it, so the calls meanwhile wake nothing). Nothing on the request
/// path waits; the cost is a `kill -9` window of this long after a call.
const LINGER: Duration = Duration::from_millis(5);

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

    pub(in crate::pipeline) fn finish(&self) {
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

/// Tells the parse workers the writer is gone however it ends (a panic
/// included): a worker waiting for it, or a shutdown joining the workers,
/// would otherwise wait forever.
struct FinishOnDrop(Arc<Wake>);

impl Drop for FinishOnDrop {
    fn drop(&mut self) {
        self.0.finish();
    }
}

/// The journal writer's thread: what it reads from and writes to.
pub struct Writer {
    /// Boxed: a bounded std channel allocates all its slots up front.
    pub rx: Receiver<Box<Entry>>,
    pub journal: Shared,
    pub wake: Arc<Wake>,
    pub queued_bytes: Arc<AtomicUsize>,
    pub metrics: Arc<Metrics>,
    pub settings: SpoolSettings,
}

impl Writer {
    /// Starts the writer on a thread of its own ("llmtap-journal").
    pub fn spawn(self) -> std::io::Result<std::thread::JoinHandle<()>> {
        std::thread::Builder::new()
            .name("llmtap-journal".into())
            .spawn(move || self.run())
    }

    /// Appends exchanges as they come, one group commit at a time (fsynced
    /// per group with `fsync = "always"`, else on the interval), then
    /// releases the responses waiting for them and wakes the parse workers.
    /// Ends once every sender is gone and the queue is empty.
    pub fn run(self) {
        let _finish = FinishOnDrop(self.wake.clone());
        let always = self.settings.fsync_interval.is_none();
        let gather = Gather {
            max: GROUP,
            max_weight: GROUP_BYTES,
            // A held call waits for its group: no linger with `fsync = "always"`.
            linger: match always {
                true => Duration::ZERO,
                false => LINGER,
            },
            tick: group::tick(&self.settings),
        };
        let flush = || self.with_journal(|j| j.flush());
        while let Some(group) = next_group(&self.rx, gather, |e| e.len, || drop(flush())) {
            self.write(group, always);
        }
        let _ = flush();
    }

    /// One group commit: privacy applied, appended, the held calls released.
    // The entries stay in the boxes the channel carried them in: unboxing
    // would copy each one into a new Vec for nothing.
    #[allow(clippy::vec_box)]
    fn write(&self, mut group: Vec<Box<Entry>>, always: bool) {
        let bytes: usize = group.iter().map(|e| e.len).sum();
        self.queued_bytes.fetch_sub(bytes, Ordering::Relaxed);
        self.metrics
            .queue_depth
            .fetch_sub(group.len() as i64, Ordering::Relaxed);
        for e in &mut group {
            super::privacy::apply(&mut e.exchange, &self.metrics);
        }
        let count = group.len() as u64;
        let lost = self
            .with_journal(|j| {
                let payloads = group.iter().map(|e| codec::encode(&e.exchange, BODY_LIMIT));
                append_group(j, payloads, always)
            })
            .unwrap_or_else(|| {
                let error = Some("the exchange journal is unavailable".into());
                Lost { count, error }
            });
        for entry in group {
            if let Some(tx) = entry.durable {
                let _ = tx.send(());
            }
        }
        lost.report_total(&self.metrics, "exchange journal");
        self.wake.bump();
    }

    /// Runs `f` on the journal, then publishes its statistics.
    fn with_journal<T>(&self, f: impl FnOnce(&mut Spool<RealFs>) -> T) -> Option<T> {
        on_spool(&self.journal, &self.metrics, &Slot::Journal, f)
    }
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

impl Reader {
    /// The next record if one is at hand (read already, or in the journal
    /// now), without waiting: a worker gathering a group.
    pub fn ready(&mut self) -> Option<Item> {
        self.take(false)
    }

    /// The next record, waiting for one when `wait`; `None` once the writer
    /// is done and the journal has nothing left to hand out (or, without
    /// `wait`, when nothing is there now).
    fn take(&mut self, wait: bool) -> Option<Item> {
        loop {
            if let Some((id, payload)) = self.batch.pop_front() {
                match self.admit(id, &payload) {
                    Some(parsing) => return Some(self.item(id, &payload, parsing)),
                    None => continue,
                }
            }
            // Read `done` (and the generation) before looking: if the writer
            // finished before this read, the read sees all it wrote.
            let done = self.wake.done.load(Ordering::SeqCst);
            let seen = self.wake.generation();
            let read = on_spool(&self.journal, &self.metrics, &Slot::Journal, |j| {
                j.next_batch(READ_RECORDS, READ_BYTES)
            })?;
            let read =
                read.map_err(|e| tracing::error!(error = %e, "exchange journal: read failed"));
            match read {
                Ok(b) if !b.is_empty() => self.batch.extend(b),
                _ if !wait => return None,
                _ if done => {
                    self.free_mark();
                    return None;
                }
                _ => self.wait_past(seen),
            }
        }
    }

    /// Marks a record in progress (with a guard); `None` when the guard
    /// quarantined it instead. `Some(None)`: no guard, no mark.
    fn admit(&mut self, id: RecordId, payload: &[u8]) -> Option<Option<guard::Parsing>> {
        let Some((g, worker)) = &self.guard else {
            return Some(None);
        };
        match g.admit(*worker, id) {
            guard::Admit::Parse(p) => {
                self.marked = true;
                Some(Some(p))
            }
            guard::Admit::Quarantine => {
                g.quarantine(id, payload, &self.journal);
                None
            }
        }
    }

    /// A record decoded (an undecodable one is counted and logged).
    fn item(&self, id: RecordId, payload: &[u8], parsing: Option<guard::Parsing>) -> Item {
        let exchange = match codec::decode(payload) {
            Ok(ex) => Some(ex),
            Err(e) => {
                self.metrics
                    .journal_undecodable
                    .fetch_add(1, Ordering::Relaxed);
                tracing::error!(error = %e, "exchange journal: a record cannot be read back; its trace is lost");
                None
            }
        };
        Item {
            exchange,
            id,
            parsing,
        }
    }
}

impl Iterator for Reader {
    type Item = Item;

    /// The next record, waiting for one; `None` once the writer is done and
    /// the journal has nothing left to hand out.
    fn next(&mut self) -> Option<Item> {
        self.take(true)
    }
}

#[cfg(test)]
mod tests;
