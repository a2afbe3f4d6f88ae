//! The two halves around a real tee: the client gets the filtered bytes, the
//! tee the provider's, and a failure is known by the time the tee reports.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use http::HeaderMap;
use http_body::Frame;
use http_body_util::{BodyExt, Full, StreamBody};

use super::*;
use crate::inject::MAX_HELD_EVENT;
use crate::tee::{BodyEnd, Tee};

type Report = Arc<Mutex<Option<(Bytes, BodyEnd, Option<String>)>>>;

/// Scan -> Tee -> Reveal, as the proxy builds it; the report holds what the
/// tee captured, how it ended and the filter's failure, read when it fired.
fn chain<B>(inner: B) -> (impl Body<Data = Bytes, Error = B::Error>, Report)
where
    B: Body<Data = Bytes> + Unpin + Send + 'static,
    B::Error: std::fmt::Display,
{
    let (scan, hiding) = hide_usage(inner);
    let report: Report = Arc::default();
    let (r, h) = (report.clone(), hiding.clone());
    let tee = Tee::new(scan, 1 << 30, move |capture, end| {
        *r.lock().unwrap() = Some((capture.bytes(), end, h.failure()));
        None
    });
    (hiding.reveal(tee), report)
}

fn frames(
    parts: &[&str],
) -> StreamBody<impl futures_util::Stream<Item = Result<Frame<Bytes>, std::io::Error>> + Unpin> {
    let items: Vec<Result<Frame<Bytes>, std::io::Error>> = parts
        .iter()
        .map(|f| Ok(Frame::data(Bytes::copy_from_slice(f.as_bytes()))))
        .collect();
    StreamBody::new(futures_util::stream::iter(items))
}

#[tokio::test]
async fn filters_across_frames_and_the_tee_keeps_the_providers_bytes() {
    let parts = [
        "data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}],\"usage\":null}\n",
        "\ndata: {\"choices\":[],\"usage\":{\"total_tokens\":3}}\n\n",
        "data: [DONE]\n\n",
    ];
    let (body, report) = chain(frames(&parts));
    let out = body.collect().await.unwrap().to_bytes();
    assert_eq!(
        &out[..],
        b"data: {\"choices\":[{\"delta\":{\"content\":\"a\"}}]}\n\ndata: [DONE]\n\n"
    );
    let (captured, end, failure) = report.lock().unwrap().take().unwrap();
    assert_eq!(captured, parts.concat(), "the trace sees the usage chunk");
    assert_eq!((end, failure), (BodyEnd::Complete, None));
}

#[tokio::test]
async fn an_oversize_last_frame_is_reported_failed_when_the_tee_ends() {
    // A body that knows its end (Content-Length): the tee reports on the
    // last frame, before the outer half has seen it.
    let mut big = b"data: ".to_vec();
    big.resize(MAX_HELD_EVENT + 10, b'x');
    big.extend_from_slice(b",\"usage\":null}\n\n");
    let (body, report) = chain(Full::new(Bytes::from(big.clone())));
    let out = body.collect().await.unwrap().to_bytes();
    assert_eq!(out, big, "passed untouched");
    let (_, end, failure) = report.lock().unwrap().take().unwrap();
    assert_eq!(end, BodyEnd::Complete);
    assert!(failure.unwrap().contains("longer than 1048576 bytes"));
}

#[tokio::test]
async fn held_bytes_go_out_before_the_trailers() {
    let mut trailers = HeaderMap::new();
    trailers.insert("x-done", "1".parse().unwrap());
    let items: Vec<Result<Frame<Bytes>, std::io::Error>> = vec![
        Ok(Frame::data(Bytes::from_static(b"data: {\"choices\":[]}\n"))),
        Ok(Frame::trailers(trailers)),
    ];
    let (body, _) = chain(StreamBody::new(futures_util::stream::iter(items)));
    let got = body.collect().await.unwrap();
    assert_eq!(got.trailers().unwrap()["x-done"], "1");
    assert_eq!(&got.to_bytes()[..], b"data: {\"choices\":[]}\n");
}

#[test]
fn only_successful_uncompressed_event_streams_are_filtered() {
    let sse = Some("text/event-stream; charset=utf-8");
    assert!(applies(200, sse, None));
    assert!(applies(206, Some("Text/Event-Stream"), Some("identity")));
    for (status, ctype, enc) in [
        (400, sse, None),
        (429, sse, None),
        (500, sse, None),
        (301, sse, None),
        (200, Some("application/json"), None),
        (200, Some("text/event-streamer"), None),
        (200, None, None),
        (200, sse, Some("gzip")),
    ] {
        assert!(!applies(status, ctype, enc), "{status} {ctype:?} {enc:?}");
    }
}
