//! The parse worker contains a panic to its one exchange.

use super::*;
use crate::route::Api;
use std::time::{Instant, SystemTime};

fn exchange(path: &str) -> Exchange {
    Exchange {
        trace_id: [1; 16],
        span_id: [2; 8],
        api: Api::ChatCompletions,
        provider: "openai",
        deployment: None,
        method: "POST".into(),
        path: path.into(),
        started_wall: SystemTime::now(),
        started: Instant::now(),
        ended: Instant::now(),
        request: None,
        response_head: None,
        response: None,
        proxy_error: None,
        proxy_status: None,
        usage_hiding_failed: None,
        context: Default::default(),
        privacy: Default::default(),
    }
}

fn test_config() -> Config {
    crate::config::resolve(
        &crate::config::Flags::default(),
        &crate::config::Env::new(),
        None,
    )
    .expect("defaults")
}

fn panics_on_boom(ex: &Exchange, cap: usize) -> (crate::record::SpanRecord, crate::trace::Built) {
    assert!(ex.path != "/boom", "a parser bug");
    crate::trace::build(ex, cap)
}

#[test]
fn a_panicking_parse_loses_only_its_own_trace() {
    let (tx, rx) = sync_channel(8);
    let (span_tx, mut span_rx) = mpsc::channel(8);
    let metrics = Arc::new(Metrics::default());
    let worker = Worker {
        source: Source::Memory(Arc::new(Mutex::new(rx))),
        span_tx,
        span_gate: span_gate::SpanGate::new(1 << 20),
        queued_bytes: Arc::new(AtomicUsize::new(0)),
        metrics: metrics.clone(),
        cap: 1024,
        chunk_events: true,
        build: panics_on_boom,
        enrich: Arc::new(enrich::Enricher::new(&test_config(), metrics.clone())),
    };
    for path in ["/v1/chat/completions", "/boom", "/v1/chat/completions"] {
        tx.send(exchange(path)).unwrap();
    }
    drop(tx);
    // The panic message below in the test output is expected.
    let joined = std::thread::spawn(move || worker.run()).join();
    assert!(joined.is_ok(), "the worker survived");
    let mut spans = 0;
    while let Ok(parsed) = span_rx.try_recv() {
        spans += usize::from(parsed.span.is_some());
    }
    assert_eq!(spans, 2, "the other exchanges were traced");
    assert_eq!(metrics.parse_panics.load(Relaxed), 1);
}

/// With `fsync = "always"` a call waits for its exchange's fsync, but a hung
/// disk (a journal writer that never answers) holds it at most `max_hold`.
const MAX_HOLD: Duration = Duration::from_millis(1500);

#[tokio::test(start_paused = true)]
async fn a_hung_journal_holds_a_response_at_most_max_hold() {
    let (tx, mut rx) = mpsc::channel(8);
    let metrics = Arc::new(Metrics::default());
    let submitter = Submitter {
        intake: Intake::Journal {
            tx,
            hold: Some(MAX_HOLD),
        },
        queued_bytes: Arc::new(AtomicUsize::new(0)),
        max_bytes: 1 << 20,
        metrics: metrics.clone(),
    };
    let hold = submitter
        .submit(exchange("/v1/chat/completions"))
        .expect("always mode holds");
    let entry = rx
        .recv()
        .await
        .expect("the exchange reached the journal queue");
    let started = tokio::time::Instant::now();
    hold.await;
    assert_eq!(
        started.elapsed(),
        MAX_HOLD,
        "released by the bound, not before"
    );
    assert_eq!(metrics.hold_timeouts.load(Relaxed), 1);
    drop(entry);

    // Told in time: released at once, nothing counted.
    let hold = submitter.submit(exchange("/v1/chat/completions")).unwrap();
    let entry = rx.recv().await.unwrap();
    entry.durable.unwrap().send(()).unwrap();
    let started = tokio::time::Instant::now();
    hold.await;
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(metrics.hold_timeouts.load(Relaxed), 1);
}

#[test]
fn without_hold_nothing_waits() {
    let (tx, _rx) = mpsc::channel(8);
    let submitter = Submitter {
        intake: Intake::Journal { tx, hold: None },
        queued_bytes: Arc::new(AtomicUsize::new(0)),
        max_bytes: 1 << 20,
        metrics: Arc::new(Metrics::default()),
    };
    assert!(submitter.submit(exchange("/v1/chat/completions")).is_none());
}
