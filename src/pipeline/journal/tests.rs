//! The journal: exchanges written, held until durable, read back by parse
//! workers, replayed after a crash until acknowledged.

use super::*;
use crate::route::Api;
use crate::tee::{BodyEnd, Capture};
use bytes::Bytes;
use std::time::{Instant, SystemTime};

fn settings(dir: &std::path::Path, always: bool) -> SpoolSettings {
    SpoolSettings {
        dir: dir.to_path_buf(),
        fsync_interval: (!always).then(|| Duration::from_millis(100)),
        max_bytes: 64 << 20,
        segment_bytes: 1 << 20,
        ready_threshold: 0.8,
        max_hold: Duration::from_secs(2),
    }
}

fn exchange(n: u8) -> Exchange {
    let started = Instant::now();
    Exchange {
        trace_id: [n; 16],
        span_id: [n; 8],
        api: Api::ChatCompletions,
        provider: "openai",
        deployment: None,
        method: "POST".into(),
        path: "/v1/chat/completions".into(),
        started_wall: SystemTime::now(),
        started,
        ended: started + Duration::from_millis(5),
        request: Some(crate::exchange::CapturedBody {
            capture: Capture::whole(&Bytes::from(format!("{{\"n\":{n}}}")), 1024),
            end: BodyEnd::Complete,
            content_type: None,
            content_encoding: None,
        }),
        response_head: None,
        response: None,
        proxy_error: None,
        proxy_status: None,
        usage_hiding_failed: None,
        context: Default::default(),
        privacy: Default::default(),
    }
}

struct Running {
    tx: std::sync::mpsc::SyncSender<Box<Entry>>,
    journal: Shared,
    wake: Arc<Wake>,
    metrics: Arc<Metrics>,
    writer: std::thread::JoinHandle<()>,
}

fn start(dir: &std::path::Path, always: bool) -> Running {
    let s = settings(dir, always);
    let journal = Arc::new(Mutex::new(open(&s).unwrap()));
    let wake = Arc::new(Wake::default());
    let metrics = Arc::new(Metrics::default());
    let (tx, rx) = std::sync::mpsc::sync_channel(64);
    let writer = Writer {
        rx,
        journal: journal.clone(),
        wake: wake.clone(),
        queued_bytes: Arc::new(AtomicUsize::new(0)),
        metrics: metrics.clone(),
        settings: s,
    }
    .spawn()
    .unwrap();
    Running {
        tx,
        journal,
        wake,
        metrics,
        writer,
    }
}

fn entry(n: u8, durable: Option<oneshot::Sender<()>>) -> Box<Entry> {
    Box::new(Entry {
        exchange: exchange(n),
        durable,
        len: 0,
    })
}

/// Reads every record on a worker thread until the writer is done.
async fn read_all(r: &Running) -> Vec<Item> {
    let reader = Reader::new(r.journal.clone(), r.wake.clone(), r.metrics.clone());
    tokio::task::spawn_blocking(move || reader.collect())
        .await
        .unwrap()
}

#[tokio::test]
async fn a_held_call_is_released_only_once_its_exchange_is_on_disk() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), true);
    let (tx, rx) = oneshot::channel();
    r.tx.send(entry(1, Some(tx))).unwrap();
    rx.await.expect("released by a send, not a drop");
    let written = r.journal.lock().unwrap().stats().records_written;
    assert_eq!(written, 1, "the exchange was appended before the release");
    let segments: Vec<_> = std::fs::read_dir(dir.path().join(DIR))
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "spool"))
        .collect();
    let on_disk: u64 = segments.iter().map(|p| p.metadata().unwrap().len()).sum();
    assert!(
        on_disk > 40,
        "the record is in the segment file ({on_disk} bytes)"
    );
}

#[tokio::test]
async fn workers_read_back_what_was_written_and_acks_empty_the_journal() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), false);
    for n in 1..=5 {
        r.tx.send(entry(n, None)).unwrap();
    }
    let r = finished(r).await;
    let items = read_all(&r).await;
    let ids: Vec<u8> = items
        .iter()
        .map(|i| i.exchange.as_ref().unwrap().trace_id[0])
        .collect();
    assert_eq!(ids, vec![1, 2, 3, 4, 5], "every exchange, oldest first");
    let acks: Vec<_> = items.iter().map(|i| i.id).collect();
    ack(&r.journal, &r.metrics, &acks);
    assert_eq!(r.journal.lock().unwrap().stats().records_pending, 0);
    drop(r);
    let reopened = open(&settings(dir.path(), false)).unwrap();
    assert_eq!(reopened.stats().records_pending, 0, "acks persisted");
}

#[tokio::test]
async fn unacknowledged_exchanges_are_read_again_after_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), true);
    for n in 1..=3 {
        let (tx, rx) = oneshot::channel();
        r.tx.send(entry(n, Some(tx))).unwrap();
        rx.await.unwrap();
    }
    // Read one and ack it; "crash" with the others unacked (one in flight).
    let mut reader = Reader::new(r.journal.clone(), r.wake.clone(), r.metrics.clone());
    let (first, second) = tokio::task::spawn_blocking(move || (reader.next(), reader.next()))
        .await
        .unwrap();
    ack(&r.journal, &r.metrics, &[first.unwrap().id]);
    let _in_flight = second.unwrap();
    drop(r.tx);
    r.writer.join().unwrap();
    drop(r.journal);
    let again = start_after(dir.path()).await;
    let items = read_all(&again).await;
    let ids: Vec<u8> = items
        .iter()
        .map(|i| i.exchange.as_ref().unwrap().trace_id[0])
        .collect();
    assert_eq!(
        ids,
        vec![2, 3],
        "the acked one is gone, the rest come back once"
    );
}

/// A journal reopened on `dir` whose writer has already finished.
async fn start_after(dir: &std::path::Path) -> Running {
    finished(start(dir, true)).await
}

/// The same journal once its writer has finished (its queue closed).
async fn finished(r: Running) -> Running {
    let Running {
        tx,
        journal,
        wake,
        metrics,
        writer,
    } = r;
    drop(tx);
    writer.join().unwrap();
    Running {
        tx: std::sync::mpsc::sync_channel(1).0,
        journal,
        wake,
        metrics,
        writer: std::thread::spawn(|| {}),
    }
}

#[tokio::test]
async fn an_unreadable_record_is_counted_and_handed_out_for_acking() {
    let dir = tempfile::tempdir().unwrap();
    {
        let mut j = open(&settings(dir.path(), true)).unwrap();
        j.append(b"not an exchange").unwrap();
        j.append(&codec::encode(&exchange(9), BODY_LIMIT)).unwrap();
        j.flush().unwrap();
    }
    let r = start_after(dir.path()).await;
    let items = read_all(&r).await;
    assert_eq!(items.len(), 2);
    assert!(items[0].exchange.is_none());
    assert_eq!(items[1].exchange.as_ref().unwrap().trace_id, [9; 16]);
    assert_eq!(r.metrics.journal_undecodable.load(Ordering::Relaxed), 1);
    ack(&r.journal, &r.metrics, &[items[0].id, items[1].id]);
    assert_eq!(r.journal.lock().unwrap().stats().records_pending, 0);
}

#[tokio::test]
async fn a_reader_waits_for_the_writer_and_ends_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), false);
    let reader = Reader::new(r.journal.clone(), r.wake.clone(), r.metrics.clone());
    let got = tokio::task::spawn_blocking(move || reader.count());
    tokio::time::sleep(Duration::from_millis(100)).await;
    r.tx.send(entry(4, None)).unwrap();
    drop(r.tx);
    r.writer.join().unwrap();
    assert_eq!(got.await.unwrap(), 1, "one record, then the end");
}

/// A writer that dies (a panic on its thread) still tells the readers it
/// is gone: they hand out what is on disk and stop, instead of waiting for
/// it forever (which would hang a shutdown joining them).
#[tokio::test]
async fn readers_stop_when_the_writer_dies() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), true);
    let (tx, rx) = oneshot::channel();
    r.tx.send(entry(1, Some(tx))).unwrap();
    rx.await.unwrap();
    // What `Writer::run` holds from its first line, on a thread that panics
    // (the panic message in the test output is expected).
    let finish = FinishOnDrop(r.wake.clone());
    let died = std::thread::spawn(move || {
        let _finish = finish;
        panic!("the journal writer dies");
    });
    assert!(died.join().is_err());
    let mut reader = Reader::new(r.journal.clone(), r.wake.clone(), r.metrics.clone());
    // A plain thread: if it waited forever, the test fails instead of
    // hanging the runtime's drop.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = tx.send((reader.next(), reader.next()));
    });
    let (first, second) = rx
        .recv_timeout(Duration::from_secs(10))
        .expect("the readers waited for a writer that is gone");
    assert_eq!(first.unwrap().exchange.unwrap().trace_id[0], 1);
    assert!(second.is_none(), "nothing more, and no wait");
}

/// With the poison-pill guard: a worker's mark stays through its records
/// (each replaces the last) and is freed once it has none in hand — when it
/// waits for the writer, and when it ends — so an idle llmtap that dies
/// strikes nothing.
#[tokio::test]
async fn a_guarded_reader_frees_its_mark_when_it_waits_and_when_it_ends() {
    let dir = tempfile::tempdir().unwrap();
    let r = start(dir.path(), true);
    for n in 1..=2 {
        let (tx, rx) = oneshot::channel();
        r.tx.send(entry(n, Some(tx))).unwrap();
        rx.await.unwrap();
    }
    let g = guard::Guard::open(dir.path(), dir.path().join("q"), r.metrics.clone());
    let mut reader = Reader::new(r.journal.clone(), r.wake.clone(), r.metrics.clone())
        .guarded(Arc::new(g.unwrap()), 0);
    let file = dir.path().join(guard::FILE);
    let marked = move || -> Vec<(u64, u32)> {
        let bytes = std::fs::read(&file).unwrap();
        marks::parse(&bytes)
            .marks
            .iter()
            .map(|m| m.record)
            .collect()
    };
    let (parsed_tx, parsed_rx) = std::sync::mpsc::channel();
    let (go_tx, go_rx) = std::sync::mpsc::channel::<()>();
    let worker = std::thread::spawn(move || {
        for _ in 0..2 {
            let item = reader.next().unwrap();
            drop(item.parsing);
            parsed_tx.send(item.id).unwrap();
        }
        go_rx.recv().unwrap();
        reader.next().is_none()
    });
    let wait = Duration::from_secs(10);
    let _first = parsed_rx.recv_timeout(wait).unwrap();
    let second = parsed_rx.recv_timeout(wait).unwrap();
    assert_eq!(
        marked(),
        vec![(second.segment(), second.offset())],
        "the last record's mark, left for the next record to replace"
    );
    go_tx.send(()).unwrap();
    let deadline = std::time::Instant::now() + wait;
    while !marked().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "a waiting worker kept its mark"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    drop(r.tx);
    r.writer.join().unwrap();
    assert!(worker.join().unwrap(), "the reader ends with the writer");
    assert!(marked().is_empty());
}
