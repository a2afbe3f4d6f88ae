//! The export pipeline, entirely off the request path:
//!
//! ```text
//! request path --try_send--> [exchange queue] --> parse workers (threads)
//!     --> [span queue] --> batcher --> sink (MLflow OTLP/HTTP, or files)
//!                                        ^ retry with jittered backoff
//! ```
//!
//! Both queues are bounded. The request path never waits: when the exchange
//! queue is full (by count or by captured bytes) the trace is dropped and
//! counted. A batch that keeps failing transiently is dropped and counted
//! after its last attempt; one the sink refuses for good goes to the
//! dead-letter file; one too large (413) is split in halves. Durable spooling (a later issue) slots in between the
//! batcher and the sink: see [`Batcher::deliver`].

pub mod batch;
pub mod dead_letter;
pub mod deliver;
pub mod file;
pub mod mlflow;
pub mod rate;
pub mod replay;
pub mod retry;
pub mod sink;
pub mod spool;
pub mod spooled;

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::sync::mpsc;

use crate::config::{Config, SinkConfig};
use crate::exchange::Exchange;
use crate::metrics::Metrics;
use batch::{next_batch, Limits};
pub use deliver::Deliverer;
use sink::Sink;

/// The request path's handle: hands finished exchanges to the pipeline.
#[derive(Clone)]
pub struct Submitter {
    tx: SyncSender<Exchange>,
    queued_bytes: Arc<AtomicUsize>,
    max_bytes: usize,
    metrics: Arc<Metrics>,
}

fn captured_len(ex: &Exchange) -> usize {
    let req = ex.request.as_ref().map_or(0, |b| b.capture.kept());
    let resp = ex.response.as_ref().map_or(0, |b| b.capture.kept());
    req + resp
}

impl Submitter {
    /// Queues an exchange for tracing without ever blocking.
    pub fn submit(&self, ex: Exchange) {
        let len = captured_len(&ex);
        if self.queued_bytes.load(Relaxed) + len > self.max_bytes {
            self.drop_one("export queue over its byte bound");
            return;
        }
        self.queued_bytes.fetch_add(len, Relaxed);
        match self.tx.try_send(ex) {
            Ok(()) => {
                self.metrics.queue_depth.fetch_add(1, Relaxed);
            }
            Err(TrySendError::Full(_)) | Err(TrySendError::Disconnected(_)) => {
                self.queued_bytes.fetch_sub(len, Relaxed);
                self.drop_one("export queue full");
            }
        }
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

/// The running pipeline; [`Pipeline::shutdown`] flushes it.
pub struct Pipeline {
    submitter: Submitter,
    workers: Vec<std::thread::JoinHandle<()>>,
    batcher: tokio::task::JoinHandle<()>,
    /// Turns true at shutdown, once every queued trace is spooled.
    closing: tokio::sync::watch::Sender<bool>,
}

/// Builds the sink a configuration names (`None` when tracing is off).
pub fn make_sink(cfg: &Config) -> Option<Sink> {
    match &cfg.sink {
        SinkConfig::Disabled => None,
        SinkConfig::Mlflow(m) => Some(Sink::Mlflow(Box::new(mlflow::MlflowSink::new(
            m.clone(),
            cfg.connect_timeout,
            cfg.export.timeout,
        )))),
        SinkConfig::File(f) => Some(Sink::File(file::FileSink::new(f.clone()))),
    }
}

impl Pipeline {
    /// Starts parse workers and the batcher; `None` when tracing is off.
    pub fn start(cfg: &Config, metrics: Arc<Metrics>) -> Option<Pipeline> {
        let mut deliverer = Deliverer::new(cfg, metrics.clone(), cfg.spool.is_some())?;
        let (closing, closing_rx) = tokio::sync::watch::channel(false);
        deliverer.stop_retrying_on(closing_rx);
        let e = cfg.export.clone();
        let (tx, rx) = sync_channel::<Exchange>(e.queue_capacity);
        let (span_tx, span_rx) = mpsc::channel::<Span>(e.batch_max_spans.saturating_mul(4));
        let queued_bytes = Arc::new(AtomicUsize::new(0));
        let rx = Arc::new(Mutex::new(rx));
        let workers = (0..e.parse_workers)
            .map(|i| {
                let w = Worker {
                    rx: rx.clone(),
                    span_tx: span_tx.clone(),
                    queued_bytes: queued_bytes.clone(),
                    metrics: metrics.clone(),
                    cap: cfg.max_capture_bytes,
                    build: crate::trace::build,
                };
                std::thread::Builder::new()
                    .name(format!("llmtap-parse-{i}"))
                    .spawn(move || w.run())
                    .expect("spawning a parse worker")
            })
            .collect();
        drop(span_tx);
        let limits = Limits {
            max_spans: e.batch_max_spans,
            max_bytes: e.batch_max_bytes,
            interval: e.batch_interval,
        };
        let batcher = match cfg.spool.as_ref().map(|s| (s, spooled::open(s))) {
            Some((settings, Ok(spool))) => {
                tracing::info!(dir = %settings.dir.display(), pending = spool.stats().records_pending, "spool open; traces it holds will be sent");
                let spool = Arc::new(Mutex::new(spool));
                let notify = Arc::new(tokio::sync::Notify::new());
                let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
                let writer = spooled::writer(
                    span_rx,
                    spool.clone(),
                    notify.clone(),
                    done.clone(),
                    metrics.clone(),
                    settings.clone(),
                );
                let delivery =
                    spooled::deliver(spool, notify, done, deliverer, metrics.clone(), limits);
                tokio::spawn(async move {
                    tokio::join!(writer, delivery);
                })
            }
            other => {
                if let Some((settings, Err(err))) = other {
                    tracing::error!(dir = %settings.dir.display(), error = %err, "spool cannot be opened: traces are kept in memory only");
                }
                let batcher = Batcher {
                    rx: span_rx,
                    limits,
                    deliverer,
                    metrics: metrics.clone(),
                };
                tokio::spawn(batcher.run())
            }
        };
        Some(Pipeline {
            submitter: Submitter {
                tx,
                queued_bytes,
                max_bytes: e.queue_max_bytes,
                metrics,
            },
            workers,
            batcher,
            closing,
        })
    }

    pub fn submitter(&self) -> Submitter {
        self.submitter.clone()
    }

    /// Closes the queues and waits, at most `grace`, for everything queued to
    /// be sent. Callers must drop their [`Submitter`] clones first.
    pub async fn shutdown(self, grace: Duration) {
        let Pipeline {
            submitter,
            workers,
            batcher,
            closing,
        } = self;
        drop(submitter);
        let batcher_abort = batcher.abort_handle();
        let flush = async move {
            let _ = tokio::task::spawn_blocking(move || {
                for w in workers {
                    let _ = w.join();
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
            tracing::warn!(
                ?grace,
                "export did not finish within the grace period; unsent traces stay in the spool (if on) for the next start"
            );
        }
    }
}

/// A parse worker: exchange in, span out. A panic is contained to its exchange.
struct Worker {
    rx: Arc<Mutex<Receiver<Exchange>>>,
    span_tx: mpsc::Sender<Span>,
    queued_bytes: Arc<AtomicUsize>,
    metrics: Arc<Metrics>,
    cap: usize,
    /// [`crate::trace::build`]; a seam for the panic-containment test.
    build: BuildFn,
}

type BuildFn = fn(&Exchange, usize) -> (crate::record::SpanRecord, crate::trace::Built);

impl Worker {
    fn run(self) {
        loop {
            let next = match self.rx.lock() {
                Ok(rx) => rx.recv(),
                Err(_) => return,
            };
            let Ok(ex) = next else { return };
            self.queued_bytes.fetch_sub(captured_len(&ex), Relaxed);
            self.metrics.queue_depth.fetch_sub(1, Relaxed);
            let built = std::panic::catch_unwind(AssertUnwindSafe(|| (self.build)(&ex, self.cap)));
            let (record, facts) = match built {
                Ok(b) => b,
                Err(_) => {
                    self.metrics.parse_panics.fetch_add(1, Relaxed);
                    tracing::error!(trace_id = %crate::exchange::mlflow_trace_id(&ex.trace_id), "parsing an exchange panicked; its trace is lost");
                    continue;
                }
            };
            if let Some(ttft) = facts.time_to_first_token {
                self.metrics.time_to_first_token(ex.api.label(), ttft);
            }
            let span = crate::otlp::to_span(&record);
            self.metrics.queue_depth.fetch_add(1, Relaxed);
            if self.span_tx.blocking_send(span).is_err() {
                return;
            }
        }
    }
}

/// Gathers spans into batches and hands each to the [`Deliverer`].
struct Batcher {
    rx: mpsc::Receiver<Span>,
    limits: Limits,
    deliverer: Deliverer,
    metrics: Arc<Metrics>,
}

impl Batcher {
    async fn run(mut self) {
        while let Some(batch) = next_batch(&mut self.rx, self.limits).await {
            self.metrics
                .queue_depth
                .fetch_sub(batch.len() as i64, Relaxed);
            self.deliverer.deliver(batch).await;
        }
    }
}

#[cfg(test)]
mod tests;
