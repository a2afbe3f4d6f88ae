//! The tee passes frames unchanged and reports its end exactly once.

use super::*;
use http_body_util::{BodyExt, Full, StreamBody};
use std::sync::{Arc, Mutex};

type Seen = Arc<Mutex<Vec<(Vec<u8>, u64, bool, BodyEnd)>>>;

fn observer(seen: &Seen) -> impl FnOnce(Capture, BodyEnd) -> Option<Hold> + Send + Sync + 'static {
    let seen = seen.clone();
    move |cap, end| {
        let total = cap.total_bytes;
        let truncated = cap.truncated();
        seen.lock()
            .unwrap()
            .push((cap.bytes().to_vec(), total, truncated, end));
        None
    }
}

type Release = Arc<Mutex<Option<tokio::sync::oneshot::Sender<()>>>>;

/// An `on_end` that holds the end until the returned sender is used or dropped.
fn holder() -> (
    impl FnOnce(Capture, BodyEnd) -> Option<Hold> + Send + Sync + 'static,
    Release,
) {
    let slot = Arc::new(Mutex::new(None));
    let put = slot.clone();
    let on_end = move |_cap, _end| {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        *put.lock().unwrap() = Some(tx);
        Some(Box::pin(async move {
            let _ = rx.await;
        }) as Hold)
    };
    (on_end, slot)
}

async fn pending<B: Body + Unpin>(body: &mut B) -> bool {
    tokio::time::timeout(std::time::Duration::from_millis(50), body.frame())
        .await
        .is_err()
}

#[tokio::test]
async fn a_held_body_keeps_its_last_known_frame_until_released() {
    let (on_end, release) = holder();
    let mut tee = Tee::new(Full::new(Bytes::from_static(b"{\"ok\":1}")), 64, on_end);
    assert!(pending(&mut tee).await, "the last frame waits for the hold");
    assert!(!tee.is_end_stream(), "the reader must keep polling");
    release.lock().unwrap().take().unwrap().send(()).unwrap();
    let frame = tee.frame().await.unwrap().unwrap();
    assert_eq!(
        frame.into_data().unwrap(),
        Bytes::from_static(b"{\"ok\":1}")
    );
    assert!(tee.is_end_stream());
    assert!(tee.frame().await.is_none());
}

#[tokio::test]
async fn a_held_stream_passes_its_frames_and_holds_only_the_end() {
    let (on_end, release) = holder();
    let mut tee = Tee::new(
        stream(vec![Ok("data: a\n\n"), Ok("data: b\n\n")]),
        64,
        on_end,
    );
    for want in ["data: a\n\n", "data: b\n\n"] {
        let frame = tee.frame().await.unwrap().unwrap();
        assert_eq!(frame.into_data().unwrap(), want);
    }
    assert!(pending(&mut tee).await, "the end of the stream waits");
    release.lock().unwrap().take().unwrap().send(()).unwrap();
    assert!(tee.frame().await.is_none());
}

#[tokio::test]
async fn an_erroring_body_is_not_held() {
    let (on_end, release) = holder();
    let mut tee = Tee::new(stream(vec![Ok("part"), Err("reset")]), 64, on_end);
    assert!(tee.frame().await.unwrap().is_ok());
    assert!(tee.frame().await.unwrap().is_err());
    assert!(release.lock().unwrap().is_some(), "on_end ran");
}

fn stream(
    parts: Vec<Result<&'static str, &'static str>>,
) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, String>> + Unpin> {
    let items: Vec<Result<Frame<Bytes>, String>> = parts
        .into_iter()
        .map(|p| {
            p.map(|s| Frame::data(Bytes::from(s)))
                .map_err(|e| e.to_string())
        })
        .collect();
    StreamBody::new(futures_util::stream::iter(items))
}

#[tokio::test]
async fn passes_frames_and_reports_complete_once() {
    let seen = Seen::default();
    let tee = Tee::new(
        stream(vec![Ok("data: a\n\n"), Ok("data: b\n\n")]),
        1024,
        observer(&seen),
    );
    let out = tee.collect().await.unwrap().to_bytes();
    assert_eq!(&out[..], b"data: a\n\ndata: b\n\n");
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, b"data: a\n\ndata: b\n\n");
    assert_eq!(seen[0].3, BodyEnd::Complete);
    assert!(!seen[0].2);
}

#[tokio::test]
async fn caps_the_copy_but_not_the_body() {
    let seen = Seen::default();
    let tee = Tee::new(
        stream(vec![Ok("0123456789"), Ok("abcdef")]),
        12,
        observer(&seen),
    );
    let out = tee.collect().await.unwrap().to_bytes();
    assert_eq!(&out[..], b"0123456789abcdef");
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].0, b"0123456789ab");
    assert_eq!(seen[0].1, 16);
    assert!(seen[0].2, "truncated");
}

#[tokio::test]
async fn reports_errors() {
    let seen = Seen::default();
    let mut tee = Tee::new(stream(vec![Ok("part"), Err("reset")]), 64, observer(&seen));
    assert!(tee.frame().await.unwrap().is_ok());
    assert!(tee.frame().await.unwrap().is_err());
    drop(tee);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1, "fired once, not again on drop");
    assert_eq!(seen[0].0, b"part");
    assert_eq!(seen[0].3, BodyEnd::Error("reset".into()));
}

#[tokio::test]
async fn dropped_mid_way_is_cancelled() {
    let seen = Seen::default();
    let mut tee = Tee::new(stream(vec![Ok("one"), Ok("two")]), 64, observer(&seen));
    tee.frame().await.unwrap().unwrap();
    drop(tee);
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].0, b"one");
    assert_eq!(seen[0].3, BodyEnd::Cancelled);
}

#[tokio::test]
async fn full_body_is_complete_at_its_last_frame() {
    let seen = Seen::default();
    let mut tee = Tee::new(Full::new(Bytes::from_static(b"{}")), 64, observer(&seen));
    tee.frame().await.unwrap().unwrap();
    // The reader stops here because is_end_stream() is true, and drops the body.
    assert!(tee.is_end_stream());
    drop(tee);
    assert_eq!(seen.lock().unwrap()[0].3, BodyEnd::Complete);
}

#[tokio::test]
async fn empty_body_is_complete_without_polling() {
    let seen = Seen::default();
    let tee = Tee::new(http_body_util::Empty::<Bytes>::new(), 64, observer(&seen));
    drop(tee);
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].3, BodyEnd::Complete);
}

#[test]
fn arrival_of_finds_the_frame_holding_an_offset() {
    let mut c = Capture::new(100);
    c.record(&Bytes::from_static(b"aaaa"));
    c.record(&Bytes::from_static(b"bbbb"));
    let (t1, t2) = (c.frame_times[0].1, c.frame_times[1].1);
    assert_eq!(c.arrival_of(0), Some(t1));
    assert_eq!(c.arrival_of(3), Some(t1));
    assert_eq!(c.arrival_of(4), Some(t2));
    assert_eq!(c.arrival_of(8), None);
}

use crate::capture_budget::{CaptureBudget, Shortfall};

#[test]
fn a_capture_copies_what_it_keeps_and_pins_no_frame() {
    let mut c = Capture::new(10);
    let big = Bytes::from(vec![7u8; 1 << 20]);
    c.record(&big);
    assert!(
        big.is_unique(),
        "the capture holds no reference to the frame"
    );
    assert_eq!(&c.bytes()[..], &[7u8; 10][..]);
    assert!(c.truncated());
    assert_eq!(c.total_bytes, 1 << 20);
}

#[test]
fn a_budgeted_capture_reserves_by_the_chunk_and_releases_on_drop() {
    let budget = CaptureBudget::new(1 << 20);
    let mut c = Capture::budgeted(200 << 10, budget.reservation());
    c.record(&Bytes::from_static(b"abc"));
    assert_eq!(
        budget.used(),
        FIRST_CHUNK + 16 * 24,
        "a first small chunk and the first frame times"
    );
    c.record(&Bytes::from(vec![1u8; 150 << 10]));
    c.record(&Bytes::from(vec![2u8; 100 << 10]));
    assert_eq!(c.kept(), 200 << 10, "kept up to the cap");
    let data = c.bytes();
    assert_eq!(&data[..3], b"abc");
    assert_eq!(data.len(), 200 << 10);
    assert!(budget.used() >= 200 << 10 && budget.used() < (200 << 10) + CHUNK);
    assert_eq!(c.cut(), None, "the cap is not a budget cut");
    drop(c);
    assert_eq!(budget.used(), 0);
}

#[test]
fn a_body_announced_small_reserves_its_size_and_a_longer_one_still_grows() {
    let budget = CaptureBudget::new(1 << 20);
    let mut c = Capture::budgeted(200 << 10, budget.reservation()).expecting(Some(100));
    c.record(&Bytes::from(vec![1u8; 100]));
    assert_eq!(
        budget.used(),
        100 + 16 * 24,
        "the announced size, not 4 KiB"
    );
    // A sender whose body is longer than it announced: kept all the same.
    c.record(&Bytes::from(vec![2u8; 10_000]));
    assert_eq!(c.kept(), 10_100);
    let data = c.bytes();
    assert_eq!(
        (&data[..100], &data[100..]),
        (&[1u8; 100][..], &[2u8; 10_000][..])
    );
    drop((c, data));
    assert_eq!(budget.used(), 0);

    // An announced length never makes the first chunk larger.
    let mut c = Capture::budgeted(200 << 10, budget.reservation()).expecting(Some(1 << 30));
    c.record(&Bytes::from_static(b"abc"));
    assert_eq!(budget.used(), FIRST_CHUNK + 16 * 24);
    drop(c);

    // A body read whole is copied into a chunk of its own size.
    let body = Bytes::from_static(br#"{"model":"m","stream":true}"#);
    let c = Capture::budgeted(200 << 10, budget.reservation()).with_body(&body);
    assert_eq!(budget.used(), body.len() + 16 * 24);
    assert_eq!(c.bytes(), body);
}

#[test]
fn a_capture_that_meets_the_budget_mid_body_stops_keeping_for_good() {
    let budget = CaptureBudget::new(CHUNK + 256 * 24);
    let mut c = Capture::budgeted(1 << 20, budget.reservation());
    c.record(&Bytes::from(vec![1u8; CHUNK + 10]));
    assert_eq!(c.kept(), CHUNK);
    assert_eq!(c.cut(), Some(Shortfall::MemoryBudget));
    // Room freed later does not resume keeping: the copy stays a prefix.
    let mut other = Capture::budgeted(10, budget.reservation());
    other.record(&Bytes::from_static(b"x"));
    drop(other);
    c.record(&Bytes::from_static(b"more"));
    assert_eq!(c.kept(), CHUNK);
    assert_eq!(c.total_bytes, CHUNK as u64 + 14);
    assert!(c.truncated());
    assert!(budget.used() <= budget.max());
    drop(c);
    assert_eq!(budget.used(), 0);
}

#[test]
fn a_skipped_capture_keeps_nothing_but_counts_the_bytes() {
    let c = Capture::skip(Shortfall::MemoryBudget).with_body(&Bytes::from_static(b"hello"));
    assert_eq!((c.kept(), c.total_bytes), (0, 5));
    assert_eq!(c.skipped(), Some(Shortfall::MemoryBudget));
    assert!(c.truncated());
    assert!(c.bytes().is_empty());
    assert!(c.frame_times.is_empty(), "nothing held for it at all");
}

#[tokio::test]
async fn a_cancelled_tee_releases_its_reservation_once_the_capture_is_dropped() {
    let budget = CaptureBudget::new(1 << 20);
    let frames: Vec<Result<Frame<Bytes>, std::convert::Infallible>> = (0..4)
        .map(|i| Ok(Frame::data(Bytes::from(vec![i as u8; 1000]))))
        .collect();
    use futures_util::StreamExt;
    let inner =
        StreamBody::new(futures_util::stream::iter(frames).chain(futures_util::stream::pending()));
    let seen = Seen::default();
    let capture = Capture::budgeted(1 << 20, budget.reservation());
    let mut tee = Tee::with_capture(inner, capture, {
        let seen = seen.clone();
        let budget = budget.clone();
        move |cap, end| {
            assert!(budget.used() > 0, "held while the capture lives");
            let kept = cap.kept() as u64;
            seen.lock()
                .unwrap()
                .push((Vec::new(), kept, cap.truncated(), end));
            None
        }
    });
    for _ in 0..2 {
        tee.frame().await.unwrap().unwrap();
    }
    assert!(budget.used() >= 2000);
    drop(tee);
    let seen = seen.lock().unwrap();
    assert_eq!(seen[0].1, 2000);
    assert_eq!(seen[0].3, BodyEnd::Cancelled);
    assert_eq!(budget.used(), 0, "released with the capture");
}
