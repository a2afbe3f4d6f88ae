//! The submitter: what a call waits for, and what it never does.

use super::*;
use crate::route::Api;
use std::time::{Instant, SystemTime};

pub(super) fn exchange(path: &str) -> Exchange {
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

pub(super) fn test_config() -> Config {
    crate::config::resolve(
        &crate::config::Flags::default(),
        &crate::config::Env::new(),
        None,
    )
    .expect("defaults")
}

/// With `fsync = "always"` a call waits for its exchange's fsync, but a hung
/// disk (a journal writer that never answers) holds it at most `max_hold`.
const MAX_HOLD: Duration = Duration::from_millis(1500);

#[tokio::test(start_paused = true)]
async fn a_hung_journal_holds_a_response_at_most_max_hold() {
    let (tx, rx) = sync_channel(8);
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
        .try_recv()
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
    let entry = rx.try_recv().unwrap();
    entry.durable.unwrap().send(()).unwrap();
    let started = tokio::time::Instant::now();
    hold.await;
    assert_eq!(started.elapsed(), Duration::ZERO);
    assert_eq!(metrics.hold_timeouts.load(Relaxed), 1);
}

#[test]
fn without_hold_nothing_waits() {
    let (tx, _rx) = sync_channel(8);
    let submitter = Submitter {
        intake: Intake::Journal { tx, hold: None },
        queued_bytes: Arc::new(AtomicUsize::new(0)),
        max_bytes: 1 << 20,
        metrics: Arc::new(Metrics::default()),
    };
    assert!(submitter.submit(exchange("/v1/chat/completions")).is_none());
}
