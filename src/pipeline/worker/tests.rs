//! Parse workers: a panic costs only its own exchange's trace; spool on, a
//! worker stores its group in every sink's spool and acks it in the journal
//! itself, and the delivery tasks hear once every worker has stopped.

use super::*;
use crate::config::SpoolSettings;
use crate::pipeline::spool::group::Shared;
use crate::pipeline::spooled::{tests::lane, Lane, Store};
use crate::pipeline::tests::{exchange, test_config};
use std::sync::atomic::AtomicBool;
use std::time::Duration;
use tokio::sync::Notify;

fn panics_on_boom(ex: &Exchange, cap: usize) -> (crate::record::SpanRecord, crate::trace::Built) {
    assert!(ex.path != "/boom", "a parser bug");
    crate::trace::build(ex, cap)
}

fn parser(metrics: &Arc<Metrics>) -> Parser {
    Parser {
        metrics: metrics.clone(),
        cap: 1024,
        chunk_events: true,
        build: panics_on_boom,
        enrich: Arc::new(enrich::Enricher::new(&test_config(), metrics.clone())),
    }
}

const PATHS: [&str; 3] = ["/v1/chat/completions", "/boom", "/v1/chat/completions"];

#[test]
fn a_panicking_parse_loses_only_its_own_trace() {
    let (tx, rx) = std::sync::mpsc::sync_channel(8);
    let (span_tx, mut span_rx) = mpsc::channel(8);
    let metrics = Arc::new(Metrics::default());
    let worker = Worker {
        io: Io::Memory {
            rx: Arc::new(Mutex::new(rx)),
            queued_bytes: Arc::new(AtomicUsize::new(0)),
            spans: span_tx,
            gate: span_gate::SpanGate::new(1 << 20),
        },
        parser: parser(&metrics),
    };
    for path in PATHS {
        tx.send(Box::new(exchange(path))).unwrap();
    }
    drop(tx);
    // The panic message below in the test output is expected.
    let joined = std::thread::spawn(move || worker.run()).join();
    assert!(joined.is_ok(), "the worker survived");
    let mut spans = 0;
    while span_rx.try_recv().is_ok() {
        spans += 1;
    }
    assert_eq!(spans, 2, "the other exchanges were traced");
    assert_eq!(metrics.parse_panics.load(Relaxed), 1);
}

fn settings(dir: &std::path::Path) -> SpoolSettings {
    SpoolSettings {
        dir: dir.to_path_buf(),
        fsync_interval: Some(Duration::from_millis(100)),
        max_bytes: 64 << 20,
        segment_bytes: 1 << 20,
        ready_threshold: 0.8,
        max_hold: Duration::from_secs(2),
    }
}

/// A journal holding one exchange per path, its writer already done.
fn journal_of(dir: &std::path::Path, paths: &[&str]) -> (Shared, Arc<journal::Wake>) {
    let journal = journal::open(&settings(dir)).unwrap();
    let journal = Arc::new(Mutex::new(journal));
    for path in paths {
        let record = journal::codec::encode(&exchange(path), 1 << 20);
        journal.lock().unwrap().append(&record).unwrap();
    }
    let wake = Arc::new(journal::Wake::default());
    wake.finish();
    (journal, wake)
}

struct Stored {
    lanes: Vec<Lane>,
    done: Arc<AtomicBool>,
    finished: Arc<Notify>,
}

fn store(dir: &std::path::Path, journal: &Shared, metrics: &Arc<Metrics>) -> (Store, Stored) {
    let lanes = vec![lane(dir, metrics, "a"), lane(dir, metrics, "b")];
    let done = Arc::new(AtomicBool::new(false));
    let finished = Arc::new(Notify::new());
    let store = Store::new(
        lanes.clone(),
        journal.clone(),
        done.clone(),
        finished.clone(),
        metrics.clone(),
        &settings(dir),
    );
    let stored = Stored {
        lanes,
        done,
        finished,
    };
    (store, stored)
}

fn journal_worker(
    journal: &Shared,
    wake: &Arc<journal::Wake>,
    store: Store,
    m: &Arc<Metrics>,
) -> Worker {
    let reader = journal::Reader::new(journal.clone(), wake.clone(), m.clone());
    Worker {
        io: Io::Journal {
            reader,
            store,
            group_bytes: 4 << 20,
        },
        parser: parser(m),
    }
}

#[test]
fn spool_on_a_worker_stores_its_spans_in_every_spool_then_acks_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let paths = ["/v1/chat/completions"; 5];
    let (journal, wake) = journal_of(&dir.path().join("journal"), &paths);
    let (store, stored) = store(dir.path(), &journal, &metrics);
    journal_worker(&journal, &wake, store, &metrics).run();
    for lane in &stored.lanes {
        let mut spool = lane.spool.lock().unwrap();
        let batch = spool.next_batch(100, 64 << 20).unwrap();
        assert_eq!(batch.len(), 5, "every span in every sink's spool");
        assert_eq!(lane.handoff.lock().unwrap().kept(), 5, "and handed off");
    }
    let j = journal.lock().unwrap().stats();
    assert_eq!(
        (j.records_pending, j.records_in_flight),
        (0, 0),
        "every exchange acked once its span was stored"
    );
    assert!(stored.done.load(Relaxed), "the last worker out says so");
}

#[test]
fn spool_on_a_panicking_record_costs_its_trace_only_and_is_acked_with_its_group() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let (journal, wake) = journal_of(&dir.path().join("journal"), &PATHS);
    let (store, stored) = store(dir.path(), &journal, &metrics);
    // The panic message below in the test output is expected.
    let worker = journal_worker(&journal, &wake, store, &metrics);
    assert!(std::thread::spawn(move || worker.run()).join().is_ok());
    assert_eq!(metrics.parse_panics.load(Relaxed), 1);
    for lane in &stored.lanes {
        let batch = lane
            .spool
            .lock()
            .unwrap()
            .next_batch(100, 64 << 20)
            .unwrap();
        assert_eq!(batch.len(), 2, "the other two traces are stored");
    }
    let j = journal.lock().unwrap().stats();
    assert_eq!(
        (j.records_pending, j.records_in_flight),
        (0, 0),
        "not parsed again"
    );
}

#[tokio::test]
async fn the_delivery_tasks_hear_once_every_worker_has_stopped() {
    let dir = tempfile::tempdir().unwrap();
    let metrics = Arc::new(Metrics::default());
    let (journal, _wake) = journal_of(&dir.path().join("journal"), &[]);
    let (store, stored) = store(dir.path(), &journal, &metrics);
    let second = store.clone();
    drop(store);
    assert!(!stored.done.load(Relaxed), "one worker still runs");
    drop(second);
    assert!(stored.done.load(Relaxed));
    let told = tokio::time::timeout(Duration::from_secs(5), stored.finished.notified());
    assert!(
        told.await.is_ok(),
        "the flusher is woken for its last flush"
    );
    for lane in &stored.lanes {
        let notified = tokio::time::timeout(Duration::from_secs(5), lane.notify.notified());
        assert!(notified.await.is_ok(), "each delivery task is woken");
    }
}
