//! The body tee: frames pass through unchanged while a capped copy is kept,
//! and the end of the body is reported exactly once — completed, errored, or
//! cancelled (dropped before its end, i.e. the peer hung up).
//!
//! Keeping the copy costs no byte copying on the hot path: a [`Bytes`] frame is
//! reference-counted, so the copy is a list of cheap clones (the frame that
//! crosses the cap is sliced). Flattening happens later, off the request path.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

/// How many frame arrival times are kept: enough to find the first token of a
/// stream, bounded so a body of millions of tiny frames costs no memory.
const MAX_FRAME_TIMES: usize = 4096;

/// The captured copy of one body.
#[derive(Debug)]
pub struct Capture {
    cap: usize,
    kept: usize,
    chunks: Vec<Bytes>,
    /// Every byte the body carried, captured or not.
    pub total_bytes: u64,
    /// Byte offset where each frame ended, and when it arrived.
    pub frame_times: Vec<(u64, Instant)>,
}

impl Capture {
    pub fn new(cap: usize) -> Self {
        Capture {
            cap,
            kept: 0,
            chunks: Vec::new(),
            total_bytes: 0,
            frame_times: Vec::new(),
        }
    }

    /// A capture of a body already read whole.
    pub fn whole(body: &Bytes, cap: usize) -> Self {
        let mut c = Capture::new(cap);
        c.record(body);
        c
    }

    /// A capture rebuilt from its parts (read back from the journal): `data`
    /// is what was kept of a body `total_bytes` long.
    pub fn restored(data: Bytes, total_bytes: u64, frame_times: Vec<(u64, Instant)>) -> Self {
        let kept = data.len();
        Capture {
            cap: kept,
            kept,
            chunks: if data.is_empty() {
                Vec::new()
            } else {
                vec![data]
            },
            total_bytes: total_bytes.max(kept as u64),
            frame_times,
        }
    }

    fn record(&mut self, data: &Bytes) {
        self.total_bytes += data.len() as u64;
        if self.frame_times.len() < MAX_FRAME_TIMES {
            self.frame_times.push((self.total_bytes, Instant::now()));
        }
        let room = self.cap - self.kept;
        if room == 0 || data.is_empty() {
            return;
        }
        let piece = if data.len() <= room {
            data.clone()
        } else {
            data.slice(..room)
        };
        self.kept += piece.len();
        self.chunks.push(piece);
    }

    /// Bytes held in the copy.
    pub fn kept(&self) -> usize {
        self.kept
    }

    /// True when the body was longer than the cap.
    pub fn truncated(&self) -> bool {
        self.total_bytes > self.kept as u64
    }

    /// The captured bytes as one buffer.
    pub fn bytes(&self) -> Bytes {
        match self.chunks.len() {
            0 => Bytes::new(),
            1 => self.chunks[0].clone(),
            _ => {
                let mut out = BytesMut::with_capacity(self.kept);
                for c in &self.chunks {
                    out.extend_from_slice(c);
                }
                out.freeze()
            }
        }
    }

    /// When the frame holding byte `offset` arrived.
    pub fn arrival_of(&self, offset: u64) -> Option<Instant> {
        self.frame_times
            .iter()
            .find(|(end, _)| *end > offset)
            .map(|(_, t)| *t)
    }
}

/// What ended a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum BodyEnd {
    /// The last frame was delivered.
    Complete,
    /// The body failed (connection reset, idle timeout, ...).
    Error(String),
    /// The body was dropped before its end: the reader went away.
    Cancelled,
}

/// What a completed body waits for before its end reaches the reader: the
/// trace of the call being durable (journal with `fsync = "always"`).
pub type Hold = Pin<Box<dyn Future<Output = ()> + Send>>;

type OnEnd = Box<dyn FnOnce(Capture, BodyEnd) -> Option<Hold> + Send + Sync>;

/// The end of a body, held back until a [`Hold`] resolves.
struct Held {
    until: Hold,
    /// The last data frame, or `None` for the end of the stream itself.
    frame: Option<Frame<Bytes>>,
}

/// A body wrapper that copies and reports; see the module docs.
///
/// When `on_end` returns a [`Hold`] for a completed body, the body's end is
/// held until it resolves: the last data frame
/// when the inner body knows it is the last (Content-Length, HTTP/2
/// end-of-stream), else the end of the stream (the chunked terminator). The
/// reader thus sees the call complete only once its trace is safe.
pub struct Tee<B> {
    inner: B,
    state: Option<(Capture, OnEnd)>,
    held: Option<Held>,
}

impl<B: Body<Data = Bytes>> Tee<B> {
    /// Wraps `inner`, keeping at most `cap` bytes; `on_end` runs exactly once.
    pub fn new(
        inner: B,
        cap: usize,
        on_end: impl FnOnce(Capture, BodyEnd) -> Option<Hold> + Send + Sync + 'static,
    ) -> Self {
        let mut tee = Tee {
            inner,
            state: Some((Capture::new(cap), Box::new(on_end))),
            held: None,
        };
        // An empty body may never be polled at all: it is complete already.
        if tee.inner.is_end_stream() {
            tee.complete(None);
        }
        tee
    }

    fn fire(&mut self, end: BodyEnd) -> Option<Hold> {
        let (capture, on_end) = self.state.take()?;
        on_end(capture, end)
    }

    /// Reports completion. Returns `last` when it may go out now; holds it
    /// (or the end of the stream, for `None`) when `on_end` asked to.
    fn complete(&mut self, last: Option<Frame<Bytes>>) -> Option<Frame<Bytes>> {
        match self.fire(BodyEnd::Complete) {
            Some(until) => {
                self.held = Some(Held { until, frame: last });
                None
            }
            None => last,
        }
    }
}

impl<B> Body for Tee<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: std::fmt::Display,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        if let Some(held) = this.held.as_mut() {
            std::task::ready!(held.until.as_mut().poll(cx));
            let frame = this.held.take().and_then(|h| h.frame);
            return Poll::Ready(frame.map(Ok));
        }
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(data), Some((capture, _))) = (frame.data_ref(), this.state.as_mut()) {
                    capture.record(data);
                }
                if this.state.is_some() && this.inner.is_end_stream() {
                    return match this.complete(Some(frame)) {
                        Some(frame) => Poll::Ready(Some(Ok(frame))),
                        None => Pin::new(this).poll_frame(cx),
                    };
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.fire(BodyEnd::Error(e.to_string()));
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                if this.state.is_some() {
                    this.complete(None);
                    if this.held.is_some() {
                        return Pin::new(this).poll_frame(cx);
                    }
                }
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.held.is_none() && self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

impl<B> Drop for Tee<B> {
    fn drop(&mut self) {
        // Completion is reported as soon as the last frame passes (even when
        // the reader stops at `is_end_stream` and never polls the end), so a
        // body dropped with its report still pending was abandoned mid-way.
        if let Some((capture, on_end)) = self.state.take() {
            on_end(capture, BodyEnd::Cancelled);
        }
    }
}

#[cfg(test)]
mod tests;
