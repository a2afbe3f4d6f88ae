//! The export pipeline, entirely off the request path. With the spool on
//! (the default):
//!
//! ```text
//! request path --try_send--> [entry queue] --> journal writer (thread) --> exchange journal (disk)
//!     parse workers (threads) <-- read back, a group at a time --'
//!         --> every sink's spool (disk), then acks the group in the journal
//!                 --> one delivery task per sink --> sink (retry, rate limit)
//! ```
//!
//! Between the request path and a sink's delivery task a trace crosses two
//! threads, each woken once per group, not per call: the journal writer
//! gathers a few milliseconds of calls per append, and a parse worker
//! stores the spans of what it read in one append per spool.
//!
//! With it off, exchanges go from an in-memory queue straight to the parse
//! workers and spans to the batcher (memory only).
//!
//! Every queue is bounded: the span queue (spool off) by count and by bytes
//! ([`span_gate`]); a parse worker's group by `export.batch_max_bytes`; the
//! captured bodies an exchange carries are also held
//! against the global in-flight budget ([`crate::capture_budget`]) until
//! the journal writer (or a parse worker) drops them. The request path
//! never waits for parsing or export: the entry queue is full (by count or captured bytes) only when the
//! disk cannot keep up, and then the trace is dropped and counted. The one
//! thing a call can wait for is its own exchange's fsync, and only with
//! `fsync = "always"` ([`journal`]). A batch refused for good goes to the
//! dead-letter file; one too large (413) is split in halves.

pub mod batch;
pub mod dead_letter;
pub mod deliver;
pub mod enrich;
mod export_runtime;
pub mod handoff;
pub mod journal;
pub mod lock;
pub mod privacy;
pub mod rate;
pub mod replay;
pub mod retry;
pub mod span_gate;
pub mod spool;
pub mod spooled;
mod stores;
mod worker;

use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, SyncSender};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::sync::mpsc;

use crate::config::Config;
use crate::exchange::Exchange;
use crate::metrics::Metrics;
use crate::sinks::Sink;
use batch::{next_batch, Limits};
pub use deliver::Deliverer;
pub use stores::StartError;
use stores::{open_stores, Stores};

pub mod migrate;

/// The request path's handle: hands finished exchanges to the pipeline.
#[derive(Clone)]
pub struct Submitter {
    intake: Intake,
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    metrics: Arc<Metrics>,
}

/// Where submitted exchanges go.
#[derive(Clone)]
enum Intake {
    /// Straight to the parse workers (spool off).
    Memory(SyncSender<Box<Exchange>>),
    /// To the exchange journal's writer; `hold`: the caller waits (at most
    /// this long) for the exchange to be durable (`fsync = "always"`).
    Journal {
        tx: SyncSender<Box<journal::Entry>>,
        hold: Option<Duration>,
    },
}

/// Resolves once a submitted exchange is durable, could not be written, or
/// `spool.max_hold` has passed; the response's last bytes wait for it (see
/// [`crate::tee::Tee`]). A healthy disk takes milliseconds; a hung one must
/// not hang the agent's calls, so past `max_hold` the call completes anyway
/// (its trace is still written when the disk recovers, just without the
/// crash guarantee) and the wait is counted in
/// `llmtap_journal_hold_timeouts_total`.
pub type Durable = crate::tee::Hold;

fn captured_len(ex: &Exchange) -> usize {
    let req = ex.request.as_ref().map_or(0, |b| b.capture.kept());
    let resp = ex.response.as_ref().map_or(0, |b| b.capture.kept());
    req + resp
}

impl Submitter {
    /// Queues an exchange for tracing without ever blocking. With the journal
    /// in `fsync = "always"` mode, returns what to wait on before the call
    /// counts as finished.
    pub fn submit(&self, ex: Exchange) -> Option<Durable> {
        let len = captured_len(&ex);
        if self.queued_bytes.load(Relaxed) + len > self.max_bytes {
            self.drop_one("export queue over its byte bound");
            return None;
        }
        self.queued_bytes.fetch_add(len, Relaxed);
        let (sent, durable) = match &self.intake {
            Intake::Memory(tx) => (tx.try_send(Box::new(ex)).is_ok(), None),
            Intake::Journal { tx, hold } => {
                let (durable_tx, durable) = match hold {
                    Some(max) => {
                        let (t, r) = tokio::sync::oneshot::channel();
                        (Some(t), Some(self.wait_durable(r, *max)))
                    }
                    None => (None, None),
                };
                let entry = Box::new(journal::Entry {
                    exchange: ex,
                    durable: durable_tx,
                    len,
                });
                (tx.try_send(entry).is_ok(), durable)
            }
        };
        if !sent {
            self.queued_bytes.fetch_sub(len, Relaxed);
            self.drop_one("export queue full");
            return None;
        }
        self.metrics.queue_depth.fetch_add(1, Relaxed);
        durable
    }

    /// Waits for the journal writer's word, at most `max`.
    fn wait_durable(&self, told: tokio::sync::oneshot::Receiver<()>, max: Duration) -> Durable {
        let metrics = self.metrics.clone();
        Box::pin(async move {
            if tokio::time::timeout(max, told).await.is_err() {
                let n = metrics.hold_timeouts.fetch_add(1, Relaxed) + 1;
                if n.is_power_of_two() {
                    tracing::warn!(
                        timeouts_total = n,
                        "the exchange journal did not fsync within {max:?}: a response completed without waiting for its trace to be durable (is the spool's disk hung?)"
                    );
                }
            }
        })
    }

    fn drop_one(&self, why: &str) {
        self.metrics.dropped("queue_full", 1);
        let n = self.metrics.dropped_count("queue_full");
        if n == 1 || n.is_power_of_two() {
            tracing::warn!(
                dropped_total = n,
                "{why}: trace dropped (the call itself was proxied)"
            );
        }
    }
}

/// A span on its way from a parse worker to the fan-out (spool off).
pub struct Parsed {
    pub span: Span,
    /// The span's bytes against the span queue's bound, given back on drop.
    pub held: Option<span_gate::Held>,
}

impl batch::Weight for Parsed {
    fn weight(&self) -> usize {
        batch::Weight::weight(&self.span)
    }
}

/// Parsed spans waiting for the fan-out (spool off) are bounded to this
/// many `export.batch_max_bytes` ([`span_gate`]); spool on, a parse
/// worker's group is one `batch_max_bytes` of spans plus their encoding.
pub const SPAN_QUEUE_BATCHES: usize = 2;

/// The running pipeline; [`Pipeline::shutdown`] flushes it.
pub struct Pipeline {
    submitter: Submitter,
    /// The journal writer (spool on), then the parse workers: joined in
    /// this order at shutdown.
    threads: Vec<std::thread::JoinHandle<()>>,
    batcher: tokio::task::JoinHandle<()>,
    /// Where the batcher runs; stopped once the pipeline is shut down.
    export: export_runtime::ExportRuntime,
    /// Turns true at shutdown, once every queued trace is spooled.
    closing: tokio::sync::watch::Sender<bool>,
    /// The spool directory's lock (spool on), released once shut down.
    lock: Option<lock::DirLock>,
    /// Spans the in-memory batcher holds (spool off), counted as dropped
    /// if the grace period runs out with them unsent.
    in_hand: Option<Arc<AtomicUsize>>,
}

/// What [`Pipeline::start`] builds before its parse workers: where each
/// reads exchanges from and puts spans, how the request path hands
/// exchanges in, and the tasks downstream of the workers.
struct Downstream {
    intake: Intake,
    ios: Vec<worker::Io>,
    /// The journal writer's thread (spool on).
    journal_writer: Option<std::thread::JoinHandle<()>>,
    batcher: tokio::task::JoinHandle<()>,
    lock: Option<lock::DirLock>,
    in_hand: Option<Arc<AtomicUsize>>,
}

/// The settings and handles both kinds of downstream need.
struct Common<'a> {
    cfg: &'a Config,
    sinks: &'a [Arc<dyn Sink>],
    metrics: &'a Arc<Metrics>,
    closing: &'a tokio::sync::watch::Receiver<bool>,
    export: &'a export_runtime::ExportRuntime,
    queued_bytes: &'a Arc<AtomicUsize>,
    limits: Limits,
}

impl Common<'_> {
    /// One deliverer per sink; `persistent` with the spool.
    fn deliverers(&self, persistent: bool) -> Vec<Deliverer> {
        self.sinks
            .iter()
            .map(|s| {
                let mut d = Deliverer::new(s.clone(), self.cfg, self.metrics.clone(), persistent);
                d.stop_retrying_on(self.closing.clone());
                d
            })
            .collect()
    }
}

impl Pipeline {
    /// Starts parse workers and one delivery lane per sink; `None` when
    /// tracing is off (no sink). With the spool on, its directory is locked
    /// and opened first (off the async threads); another process using it is
    /// an error.
    pub async fn start(
        cfg: &Config,
        sinks: &[Arc<dyn Sink>],
        metrics: Arc<Metrics>,
    ) -> Result<Option<Pipeline>, StartError> {
        if sinks.is_empty() {
            return Ok(None);
        }
        let names: Vec<String> = sinks.iter().map(|s| s.name().to_string()).collect();
        let stores = match &cfg.spool {
            Some(settings) => open_stores(settings, &names, &metrics)
                .await?
                .map(|s| (settings, s)),
            None => None,
        };
        let (closing, closing_rx) = tokio::sync::watch::channel(false);
        let export = export_runtime::ExportRuntime::start().map_err(StartError::ExportRuntime)?;
        let e = cfg.export.clone();
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let common = Common {
            cfg,
            sinks,
            metrics: &metrics,
            closing: &closing_rx,
            export: &export,
            queued_bytes: &queued_bytes,
            limits: Limits {
                max_spans: e.batch_max_spans,
                max_bytes: e.batch_max_bytes,
                interval: e.batch_interval,
            },
        };
        // With the spool, a failing batch waits there; without it (off, or
        // it failed to open), memory is all there is: retries are limited.
        let down = match stores {
            Some((settings, stores)) => spooled_downstream(&common, settings, stores),
            None => memory_downstream(&common),
        };
        let enrich = Arc::new(enrich::Enricher::new(cfg, metrics.clone()));
        let mut threads: Vec<_> = down.journal_writer.into_iter().collect();
        let workers = down.ios.into_iter().enumerate().map(|(i, io)| {
            let parser = worker::Parser {
                metrics: metrics.clone(),
                cap: cfg.max_capture_bytes,
                chunk_events: cfg.chunk_events,
                build: crate::trace::build,
                enrich: enrich.clone(),
            };
            let w = worker::Worker { io, parser };
            std::thread::Builder::new()
                .name(format!("llmtap-parse-{i}"))
                .spawn(move || w.run())
                .expect("spawning a parse worker")
        });
        threads.extend(workers);
        Ok(Some(Pipeline {
            submitter: Submitter {
                intake: down.intake,
                queued_bytes,
                max_bytes: e.queue_max_bytes,
                metrics,
            },
            threads,
            batcher: down.batcher,
            export,
            closing,
            lock: down.lock,
            in_hand: down.in_hand,
        }))
    }

    pub fn submitter(&self) -> Submitter {
        self.submitter.clone()
    }

    /// Closes the queues and waits, at most `grace`, for everything queued to
    /// be sent. Callers must drop their [`Submitter`] clones first. With the
    /// spool, what is not sent stays there; without it, it is lost, counted
    /// in `llmtap_traces_dropped_total{reason="shutdown"}`.
    pub async fn shutdown(self, grace: Duration) {
        let Pipeline {
            submitter,
            threads,
            batcher,
            export,
            closing,
            lock,
            in_hand,
        } = self;
        let metrics = submitter.metrics.clone();
        drop(submitter);
        let batcher_abort = batcher.abort_handle();
        let flush = async move {
            let _ = tokio::task::spawn_blocking(move || {
                for t in threads {
                    let _ = t.join();
                }
            })
            .await;
            // Every trace is parsed; with the spool on, the rest is on disk
            // (or will be within the writer's last group): stop retrying a
            // failing sink instead of spending the grace period on it.
            let _ = closing.send(true);
            let _ = batcher.await;
        };
        let abort = batcher_abort;
        if tokio::time::timeout(grace, flush).await.is_err() {
            abort.abort();
            match in_hand {
                Some(held) => count_lost_at_shutdown(&metrics, &held, grace),
                None => tracing::warn!(
                    ?grace,
                    "export did not finish within the grace period; unsent traces stay in the spool for the next start"
                ),
            }
        }
        drop(export);
        drop(lock);
    }
}

/// Spool on: the journal writer, journal-reading parse workers that store
/// their spans in every sink's spool, the spools' flusher and one delivery
/// task per sink.
fn spooled_downstream(
    c: &Common<'_>,
    settings: &crate::config::SpoolSettings,
    stores: Stores,
) -> Downstream {
    let Stores {
        lock,
        spools,
        journal,
        guard,
    } = stores;
    let metrics = c.metrics;
    let journal = Arc::new(Mutex::new(journal));
    let wake = Arc::new(journal::Wake::default());
    // Boxed entries: a bounded std channel allocates every slot up front
    // (unboxed, the default 10,000 slots of exchanges were 9 MB at idle).
    let (tx, rx) = sync_channel(c.cfg.export.queue_capacity.max(1));
    let journal_writer = journal::Writer {
        rx,
        journal: journal.clone(),
        wake: wake.clone(),
        queued_bytes: c.queued_bytes.clone(),
        metrics: metrics.clone(),
        settings: settings.clone(),
    }
    .spawn()
    .expect("spawning the journal writer");
    let lanes: Vec<spooled::Lane> = spools
        .into_iter()
        .zip(c.sinks)
        .map(|(spool, sink)| spooled::Lane::new(spool, metrics.sinks.get(sink.name())))
        .collect();
    let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let finished = Arc::new(tokio::sync::Notify::new());
    let store = spooled::Store::new(
        lanes.clone(),
        journal.clone(),
        done.clone(),
        finished.clone(),
        metrics.clone(),
        settings,
    );
    // The workers hold the only stores: once they stop, `done` is set.
    let ios = journal_ios(c, &journal, &wake, guard, store);
    let flusher = spooled::flusher(
        lanes.clone(),
        metrics.clone(),
        settings.clone(),
        done.clone(),
        finished,
    );
    let deliveries = lanes
        .into_iter()
        .zip(c.deliverers(true))
        .map(|(lane, d)| spooled::deliver(lane, done.clone(), d, metrics.clone(), c.limits));
    let deliveries = futures_util::future::join_all(deliveries);
    let batcher = c.export.spawn(async move {
        tokio::join!(flusher, deliveries);
    });
    let hold = settings
        .fsync_interval
        .is_none()
        .then_some(settings.max_hold);
    Downstream {
        intake: Intake::Journal { tx, hold },
        ios,
        journal_writer: Some(journal_writer),
        batcher,
        lock: Some(lock),
        in_hand: None,
    }
}

/// Each parse worker's journal reader (guarded, when the spool has a
/// guard) and its share of the store.
fn journal_ios(
    c: &Common<'_>,
    journal: &journal::Shared,
    wake: &Arc<journal::Wake>,
    guard: Option<Arc<journal::guard::Guard>>,
    store: spooled::Store,
) -> Vec<worker::Io> {
    (0..c.cfg.export.parse_workers)
        .map(|i| {
            let r = journal::Reader::new(journal.clone(), wake.clone(), c.metrics.clone());
            let reader = match &guard {
                Some(g) => r.guarded(g.clone(), i),
                None => r,
            };
            worker::Io::Journal {
                reader,
                store: store.clone(),
                group_bytes: c.limits.max_bytes,
            }
        })
        .collect()
}

/// Spool off: an in-memory queue to the parse workers, then one batcher
/// per sink, fed by a fan-out that never waits for a slow sink (a full
/// sink queue drops that sink's copy, counted).
fn memory_downstream(c: &Common<'_>) -> Downstream {
    let e = &c.cfg.export;
    let (tx, rx) = sync_channel::<Box<Exchange>>(e.queue_capacity);
    let rx = Arc::new(Mutex::new(rx));
    let (span_tx, span_rx) = mpsc::channel::<Parsed>(e.batch_max_spans.saturating_mul(4));
    let gate = span_gate::SpanGate::new(e.batch_max_bytes.saturating_mul(SPAN_QUEUE_BATCHES));
    let ios = (0..e.parse_workers)
        .map(|_| worker::Io::Memory {
            rx: rx.clone(),
            queued_bytes: c.queued_bytes.clone(),
            spans: span_tx.clone(),
            gate: gate.clone(),
        })
        .collect();
    let held = Arc::new(AtomicUsize::new(0));
    let mut lanes = Vec::new();
    let mut batchers = Vec::new();
    for (sink, deliverer) in c.sinks.iter().zip(c.deliverers(false)) {
        let (lane_tx, lane_rx) = mpsc::channel::<Span>(e.batch_max_spans.saturating_mul(4));
        lanes.push((lane_tx, c.metrics.sinks.get(sink.name())));
        let batcher = Batcher {
            rx: lane_rx,
            limits: c.limits,
            deliverer,
            metrics: c.metrics.clone(),
            in_hand: held.clone(),
        };
        batchers.push(batcher.run());
    }
    let fan_out = fan_out(span_rx, lanes, c.metrics.clone());
    let batchers = futures_util::future::join_all(batchers);
    let batcher = c.export.spawn(async move {
        tokio::join!(fan_out, batchers);
    });
    Downstream {
        intake: Intake::Memory(tx),
        ios,
        journal_writer: None,
        batcher,
        lock: None,
        in_hand: Some(held),
    }
}

/// Hands each parsed span to every sink's batcher without waiting: a sink
/// whose queue is full loses its copy (`llmtap_sink_traces_dropped_total
/// {reason="queue_full"}`), the others are not held back.
async fn fan_out(
    mut rx: mpsc::Receiver<Parsed>,
    lanes: Vec<(mpsc::Sender<Span>, Arc<crate::metrics::SinkCounters>)>,
    metrics: Arc<Metrics>,
) {
    while let Some(parsed) = rx.recv().await {
        let span = parsed.span;
        // The span leaves this queue as one copy per sink that took it
        // (the queue depth counts copies waiting for a sink's batcher).
        metrics.queue_depth.fetch_sub(1, Relaxed);
        let last = lanes.len().saturating_sub(1);
        let mut span = Some(span);
        for (i, (tx, counters)) in lanes.iter().enumerate() {
            // The last sink takes the span itself; the others a copy.
            let copy = match i == last {
                true => span.take(),
                false => span.clone(),
            };
            let Some(copy) = copy else { break };
            match tx.try_send(copy) {
                Ok(()) => {
                    metrics.queue_depth.fetch_add(1, Relaxed);
                }
                Err(_) => {
                    counters.dropped("queue_full", 1);
                    metrics.dropped("queue_full", 1);
                }
            }
        }
    }
}

/// Spool off, grace over: the batcher's batch and whatever is still queued
/// (exchanges and spans; the queue depth) are lost. Counted and logged.
fn count_lost_at_shutdown(metrics: &Metrics, in_hand: &AtomicUsize, grace: Duration) {
    let queued = metrics.queue_depth.load(Relaxed).max(0) as u64;
    let lost = in_hand.load(Relaxed) as u64 + queued;
    if lost > 0 {
        metrics.dropped("shutdown", lost);
    }
    tracing::error!(
        dropped = lost,
        ?grace,
        "export did not finish within the grace period; traces held in memory (no spool) are lost"
    );
}

/// Gathers one sink's spans into batches and hands each to its
/// [`Deliverer`] (spool off: memory only, so the deliverer gives up after
/// `export.max_attempts` and counts the drop).
struct Batcher {
    rx: mpsc::Receiver<Span>,
    limits: Limits,
    deliverer: Deliverer,
    metrics: Arc<Metrics>,
    /// Span copies in the batches being delivered, over every sink (see
    /// [`count_lost_at_shutdown`]).
    in_hand: Arc<AtomicUsize>,
}

impl Batcher {
    async fn run(mut self) {
        while let Some(spans) = next_batch(&mut self.rx, self.limits).await {
            let n = spans.len();
            self.metrics.queue_depth.fetch_sub(n as i64, Relaxed);
            self.in_hand.fetch_add(n, Relaxed);
            self.deliverer.deliver(spans).await;
            self.in_hand.fetch_sub(n, Relaxed);
        }
    }
}

#[cfg(test)]
mod tests;
