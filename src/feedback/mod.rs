//! User feedback: `POST /llmtap/v1/feedback` on the proxy port (never
//! forwarded upstream) turns `{"trace_id", "name", "value", "comment",
//! "user"}` into an MLflow assessment on that trace (mlflow-wire.md §7),
//! sent through [`Sink::assess`].
//!
//! ```text
//! handler (parse: body) --accept--> per sink that takes feedback:
//!     store (one fsynced file; spool on) + queue (memory, capped) --> deliver --> Sink::assess
//!                                   `-- refused / unknown trace --> dead-letter file
//! ```
//!
//! - [`body`]: the body, parsed and checked (pure).
//! - [`handler`]: the HTTP side: method, content type, size, answers.
//! - [`queue`]: one sink's pending items and the retry decision (pure).
//! - [`store`]: the items on disk and the dead-letter file (blocking I/O).
//! - [`deliver`]: one delivery task per sink.
//!
//! The request is answered 202 once every sink that takes feedback has it
//! durably (with the spool on). A trace the sink does not know yet (its
//! batch still in the spool, the sink down) is retried for
//! `feedback.max_wait`; then the item goes to the dead-letter file. Delivery
//! is at least once: a crash between the sink's answer and the file's
//! deletion sends it again.

pub mod body;
pub mod deliver;
pub mod handler;
pub mod queue;
pub mod store;

use std::sync::{Arc, Mutex};

use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::metrics::feedback::Outcome;
use crate::metrics::Metrics;
use crate::sinks::Sink;
use body::Record;
use queue::{Item, Queue, Timing};
use store::Store;

/// The feedback endpoint's path.
pub const PATH: &str = "/llmtap/v1/feedback";

/// Whether a path is llmtap's own (answered here, never forwarded).
pub fn is_own_path(path: &str) -> bool {
    path == "/llmtap" || path.starts_with("/llmtap/")
}

/// Whether a sink kind has a place for feedback (the others answer
/// "unsupported" from [`Sink::assess`]).
pub fn takes_feedback(kind: &str) -> bool {
    matches!(kind, "mlflow" | "databricks")
}

pub(crate) fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// One sink's feedback: its store, its queue, the delivery task's wake-up.
pub struct Lane {
    pub sink: Arc<dyn Sink>,
    pub store: Store,
    pub queue: Mutex<Queue>,
    pub notify: Notify,
}

impl Lane {
    fn queue(&self) -> std::sync::MutexGuard<'_, Queue> {
        self.queue.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The running feedback service; cloned into the proxy.
#[derive(Clone)]
pub struct Feedback {
    inner: Arc<Inner>,
}

struct Inner {
    lanes: Vec<Arc<Lane>>,
    /// Sinks whose kind takes no feedback.
    unsupported: Vec<String>,
    metrics: Arc<Metrics>,
    tasks: Mutex<Vec<JoinHandle<()>>>,
}

/// Why feedback was not accepted.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// No configured sink has a place for feedback (these sinks).
    Unsupported(Vec<String>),
    /// This sink's pending feedback is at its cap.
    Full(String),
    /// It could not be stored.
    Io(String),
}

impl Feedback {
    /// One lane per sink that takes feedback, its items read back from the
    /// spool directory, and its delivery task started.
    pub async fn start(cfg: &Config, sinks: &[Arc<dyn Sink>], metrics: Arc<Metrics>) -> Feedback {
        let mut lanes = Vec::new();
        let mut unsupported = Vec::new();
        for sink in sinks {
            if !takes_feedback(sink.kind()) {
                unsupported.push(sink.name().to_string());
                continue;
            }
            let lane = Arc::new(Lane {
                store: store_for(cfg, sink.name()),
                sink: sink.clone(),
                queue: Mutex::new(Queue::new(
                    cfg.feedback.max_pending,
                    cfg.feedback.max_pending_bytes,
                )),
                notify: Notify::new(),
            });
            load(&lane, &metrics).await;
            lanes.push(lane);
        }
        let timing = Timing {
            initial: cfg.export.retry_initial,
            max: cfg.export.retry_max,
            max_wait: cfg.feedback.max_wait,
        };
        let tasks = lanes
            .iter()
            .map(|l| tokio::spawn(deliver::run(l.clone(), timing, metrics.clone())))
            .collect();
        Feedback {
            inner: Arc::new(Inner {
                lanes,
                unsupported,
                metrics,
                tasks: Mutex::new(tasks),
            }),
        }
    }

    /// Stores `record` for every sink that takes feedback and wakes their
    /// delivery; the names of those sinks.
    pub async fn accept(&self, record: Record) -> Result<Vec<String>, Refusal> {
        let m = &self.inner.metrics.feedback;
        let lanes = &self.inner.lanes;
        if lanes.is_empty() {
            for s in &self.inner.unsupported {
                m.count(s, Outcome::Unsupported);
            }
            return Err(Refusal::Unsupported(self.inner.unsupported.clone()));
        }
        let bytes = serde_json::to_vec(&record).map_err(|e| Refusal::Io(e.to_string()))?;
        if let Some(full) = lanes.iter().find(|l| !l.queue().has_room(bytes.len())) {
            let name = full.sink.name().to_string();
            m.count(&name, Outcome::OverCapacity);
            return Err(Refusal::Full(name));
        }
        let file = store::new_name(record.accepted_unix_ms);
        let json: Arc<[u8]> = bytes.into();
        save_all(lanes, &file, json.clone()).await?;
        for lane in lanes {
            let mut q = lane.queue();
            q.push(Item::new(
                file.clone(),
                record.trace_id.clone(),
                json.clone(),
            ));
            m.set_pending(lane.sink.name(), q.len());
            drop(q);
            m.count(lane.sink.name(), Outcome::Accepted);
            lane.notify.notify_one();
        }
        for s in &self.inner.unsupported {
            m.count(s, Outcome::Unsupported);
        }
        Ok(lanes.iter().map(|l| l.sink.name().to_string()).collect())
    }

    /// Stops the delivery tasks (what is pending stays on disk for the next
    /// start; with the spool off it is lost, logged).
    pub fn stop(&self) {
        let tasks =
            std::mem::take(&mut *self.inner.tasks.lock().unwrap_or_else(|e| e.into_inner()));
        for t in tasks {
            t.abort();
        }
        for lane in &self.inner.lanes {
            let n = lane.queue().len();
            if n > 0 && lane.store.dir.is_none() {
                tracing::warn!(
                    sink = lane.sink.name(),
                    pending = n,
                    "feedback not yet delivered is lost at shutdown (the spool is off)"
                );
            }
        }
    }
}

/// Where a sink's feedback is kept (see [`store`]).
fn store_for(cfg: &Config, sink: &str) -> Store {
    Store {
        dir: cfg
            .spool
            .as_ref()
            .map(|s| s.dir.join("feedback").join(sink)),
        dead_letter: cfg
            .export
            .dead_letter_dir
            .join("feedback")
            .join(format!("{sink}.jsonl")),
        dead_letter_max_bytes: cfg.export.dead_letter_max_file_bytes,
    }
}

/// Reads a lane's items back from disk (on the blocking pool).
async fn load(lane: &Arc<Lane>, metrics: &Metrics) {
    let store = lane.store.clone();
    let name = lane.sink.name().to_string();
    let found = tokio::task::spawn_blocking(move || store.load(&name))
        .await
        .unwrap_or_default();
    for _ in 0..found.bad {
        metrics
            .feedback
            .count(lane.sink.name(), Outcome::DeadLettered);
    }
    let mut q = lane.queue();
    let n = found.items.len();
    for (file, trace_id, json) in found.items {
        q.push(Item::new(file, trace_id, json.into()));
    }
    metrics.feedback.set_pending(lane.sink.name(), q.len());
    if n > 0 {
        tracing::info!(
            sink = lane.sink.name(),
            pending = n,
            "feedback found in the spool: delivering it"
        );
    }
}

/// Saves the item for every lane, all or none.
async fn save_all(lanes: &[Arc<Lane>], file: &str, bytes: Arc<[u8]>) -> Result<(), Refusal> {
    let stores: Vec<Store> = lanes.iter().map(|l| l.store.clone()).collect();
    let file = file.to_string();
    tokio::task::spawn_blocking(move || {
        for (i, s) in stores.iter().enumerate() {
            if let Err(e) = s.save(&file, &bytes) {
                for done in &stores[..i] {
                    let _ = done.remove(&file);
                }
                let _ = s.remove(&file);
                return Err(Refusal::Io(format!("storing feedback: {e}")));
            }
        }
        Ok(())
    })
    .await
    .map_err(|e| Refusal::Io(e.to_string()))?
}
