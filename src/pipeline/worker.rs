//! Parse workers, one thread each: exchange in, span out. A panic while
//! parsing is contained to its one exchange.
//!
//! - Spool on, a worker takes what the exchange journal holds, a group at
//!   a time (the first record waited for, then whatever is there already),
//!   parses it and stores the spans itself ([`spooled::Store`]: every sink's
//!   spool, then the journal acks), so a call's trace crosses no other
//!   thread between the journal and its sink's delivery task.
//! - Spool off, it takes exchanges from the in-memory queue and sends each
//!   span to the fan-out, bounded by count and bytes ([`span_gate`]).

use std::panic::AssertUnwindSafe;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};

use opentelemetry_proto::tonic::trace::v1::Span;
use tokio::sync::mpsc;

use super::{batch, captured_len, enrich, journal, privacy, span_gate, spooled, Parsed};
use crate::exchange::Exchange;
use crate::metrics::Metrics;

/// Spans a worker stores per group at most: one spool append and one
/// journal ack per group (its bytes are bounded by `export.batch_max_bytes`).
const GROUP: usize = 256;

/// Where a worker takes exchanges from and puts spans.
pub(super) enum Io {
    /// Spool off: the in-memory queue in, the fan-out's queue out.
    Memory {
        rx: Arc<Mutex<Receiver<Box<Exchange>>>>,
        queued_bytes: Arc<AtomicUsize>,
        spans: mpsc::Sender<Parsed>,
        gate: Arc<span_gate::SpanGate>,
    },
    /// Spool on: the exchange journal in, every sink's spool out; a group
    /// ends once its spans reach `group_bytes` (encoded).
    Journal {
        reader: journal::Reader,
        store: spooled::Store,
        group_bytes: usize,
    },
}

/// A parse worker: its input and output, and how it parses.
pub(super) struct Worker {
    pub io: Io,
    pub parser: Parser,
}

/// Exchange to span, with sessions, cost and chunk events.
pub(super) struct Parser {
    pub metrics: Arc<Metrics>,
    pub cap: usize,
    /// `[trace] chunk_events`: add [`crate::trace::chunks::attach`]'s events.
    pub chunk_events: bool,
    /// [`crate::trace::build`]; a seam for the panic-containment test.
    pub build: BuildFn,
    /// Sessions and cost, after the build.
    pub enrich: Arc<enrich::Enricher>,
}

pub(super) type BuildFn = fn(&Exchange, usize) -> (crate::record::SpanRecord, crate::trace::Built);

impl Worker {
    pub fn run(self) {
        let Worker { io, parser } = self;
        match io {
            Io::Memory {
                rx,
                queued_bytes,
                spans,
                gate,
            } => parser.run_memory(&rx, &queued_bytes, &spans, &gate),
            Io::Journal {
                reader,
                store,
                group_bytes,
            } => parser.run_journal(reader, &store, group_bytes),
        }
    }
}

impl Parser {
    /// Spool on: a group of journal records at a time, stored together.
    fn run_journal(&self, mut reader: journal::Reader, store: &spooled::Store, max_bytes: usize) {
        while let Some(first) = reader.next() {
            let mut group = Vec::new();
            let mut bytes = 0;
            let mut next = Some(first);
            while let Some(item) = next {
                let span = item.exchange.and_then(|ex| self.trace(ex));
                // The parse is over (the process survived it): the mark may go.
                drop(item.parsing);
                bytes += span.as_ref().map_or(0, batch::Weight::weight);
                group.push((span, item.id));
                next = match group.len() < GROUP && bytes < max_bytes {
                    true => reader.ready(),
                    false => None,
                };
            }
            store.put(group);
        }
    }

    /// Spool off: one exchange at a time from memory, each span queued.
    fn run_memory(
        &self,
        rx: &Mutex<Receiver<Box<Exchange>>>,
        queued_bytes: &AtomicUsize,
        spans: &mpsc::Sender<Parsed>,
        gate: &Arc<span_gate::SpanGate>,
    ) {
        loop {
            let Some(ex) = rx.lock().ok().and_then(|rx| rx.recv().ok()) else {
                return;
            };
            queued_bytes.fetch_sub(captured_len(&ex), Relaxed);
            self.metrics.queue_depth.fetch_sub(1, Relaxed);
            let Some(span) = self.trace(*ex) else {
                continue;
            };
            self.metrics.queue_depth.fetch_add(1, Relaxed);
            let held = Some(gate.hold(batch::Weight::weight(&span)));
            let parsed = Parsed { span, held };
            if spans.blocking_send(parsed).is_err() {
                return;
            }
        }
    }

    /// Privacy (spool off: applied here; spool on: before the journal, so a
    /// no-op), then the parse.
    fn trace(&self, mut ex: Exchange) -> Option<Span> {
        privacy::apply(&mut ex, &self.metrics);
        self.parse(&ex)
    }

    fn parse(&self, ex: &Exchange) -> Option<Span> {
        #[cfg(debug_assertions)]
        journal::test_hooks::on_parse(ex);
        let built = std::panic::catch_unwind(AssertUnwindSafe(|| {
            let (mut record, mut facts) = (self.build)(ex, self.cap);
            self.enrich.apply(ex, &mut record, &facts.call);
            if self.chunk_events {
                crate::trace::chunks::attach(&mut record, ex, self.cap);
            }
            // The request's JSON is not held while the span is encoded.
            facts.call.request = None;
            (record, facts)
        }));
        let (record, facts) = match built {
            Ok(b) => b,
            Err(_) => {
                self.metrics.parse_panics.fetch_add(1, Relaxed);
                tracing::error!(trace_id = %crate::exchange::mlflow_trace_id(&ex.trace_id), "parsing an exchange panicked; its trace is lost");
                return None;
            }
        };
        if let Some(ttft) = facts.time_to_first_token {
            self.metrics.time_to_first_token(ex.api.label(), ttft);
        }
        Some(crate::otlp::to_span(&record))
    }
}

#[cfg(test)]
mod tests;
