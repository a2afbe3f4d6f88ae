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
