//! The body tee: frames pass through unchanged while a capped copy is kept,
//! and the end of the body is reported exactly once — completed, errored, or
//! cancelled (dropped before its end, i.e. the peer hung up).
//!
//! The copy is made of bytes llmtap owns: each kept frame is copied into
//! chunks of at most [`CHUNK`] bytes, allocated at their exact size and
//! reserved first against the global [`CaptureBudget`] when there is one.
//! Keeping clones of the frames themselves would cost no copying, but a
//! small clone pins the whole allocation it was cut from (hyper's read
//! buffer, possibly holding other streams' data), so what a capture really
//! holds would be unbounded by what it kept. Copying at most the capture cap
//! per body is a memcpy of the bytes kept, once; flattening happens later,
//! off the request path.
//!
//! [`CaptureBudget`]: crate::capture_budget::CaptureBudget

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use crate::capture_budget::{Reservation, Shortfall};

/// How many frame arrival times are kept: enough to find the first token of a
/// stream, bounded so a body of millions of tiny frames costs no memory.
const MAX_FRAME_TIMES: usize = 4096;

/// Frame times are stored (and reserved) this many at a time.
const FRAME_TIMES_STEP: usize = 256;

/// The largest chunk of a capture's copy.
pub const CHUNK: usize = 64 << 10;

/// The smallest: chunks grow from this, doubling with what was kept, so a
/// small body (or a stream open for minutes with little in it yet) holds
/// and reserves a few KiB, not [`CHUNK`].
pub const FIRST_CHUNK: usize = 4 << 10;

/// The captured copy of one body.
#[derive(Debug)]
pub struct Capture {
    cap: usize,
    kept: usize,
    /// Filled chunks, then `open`, the one being filled.
    chunks: Vec<Bytes>,
    open: BytesMut,
    /// What this capture holds against the global budget (none: unbudgeted).
    reservation: Option<Reservation>,
    /// Why keeping stopped before the cap, mid-body.
    cut: Option<Shortfall>,
    /// Why nothing was kept at all.
    skipped: Option<Shortfall>,
    /// Every byte the body carried, captured or not.
    pub total_bytes: u64,
    /// Byte offset where each frame ended, and when it arrived.
    pub frame_times: Vec<(u64, Instant)>,
    /// The size of the first chunk: [`FIRST_CHUNK`], or less for a body
    /// announced (or read) smaller ([`Capture::expecting`]).
    first: usize,
}

impl Capture {
    /// A capture of at most `cap` bytes, outside any budget.
    pub fn new(cap: usize) -> Self {
        Capture {
            cap,
            kept: 0,
            chunks: Vec::new(),
            open: BytesMut::new(),
            reservation: None,
            cut: None,
            skipped: None,
            total_bytes: 0,
            frame_times: Vec::new(),
            first: FIRST_CHUNK,
        }
    }

    /// This capture, for a body announced as `len` bytes long
    /// (Content-Length): its first chunk is no larger than that, so a small
    /// body holds its own size, not [`FIRST_CHUNK`]. The hint only ever
    /// shrinks the first chunk — it is the sender's claim — and a longer
    /// body grows the copy as usual.
    pub fn expecting(mut self, len: Option<usize>) -> Self {
        if let Some(len) = len {
            self.first = len.clamp(1, FIRST_CHUNK);
        }
        self
    }

    /// A capture of at most `cap` bytes that reserves what it keeps in `r`.
    pub fn budgeted(cap: usize, r: Reservation) -> Self {
        Capture {
            reservation: Some(r),
            ..Capture::new(cap)
        }
    }

    /// A capture that keeps nothing, for `why`; it still counts the bytes.
    pub fn skip(why: Shortfall) -> Self {
        Capture {
            skipped: Some(why),
            ..Capture::new(0)
        }
    }

    /// A capture of a body already read whole.
    pub fn whole(body: &Bytes, cap: usize) -> Self {
        Capture::new(cap).with_body(body)
    }

    /// This capture, having recorded `body` as one whole frame.
    pub fn with_body(mut self, body: &Bytes) -> Self {
        self = self.expecting(Some(body.len()));
        self.record(body);
        self.seal();
        self
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
            ..Capture::new(0)
        }
    }

    /// This capture with its shortfalls (read back from the journal).
    pub fn with_shortfalls(mut self, cut: Option<Shortfall>, skipped: Option<Shortfall>) -> Self {
        self.cut = cut;
        self.skipped = skipped;
        self
    }

    pub(crate) fn record(&mut self, data: &Bytes) {
        self.total_bytes += data.len() as u64;
        self.note_frame_time();
        let room = self.cap - self.kept;
        let mut rest = data.get(..data.len().min(room)).unwrap_or_default();
        while !rest.is_empty() {
            if self.open.len() == self.open.capacity() && !self.open_chunk(rest.len()) {
                return;
            }
            let n = rest.len().min(self.open.capacity() - self.open.len());
            let (now, later) = rest.split_at(n);
            self.open.extend_from_slice(now);
            self.kept += n;
            rest = later;
        }
    }

    /// Starts a new chunk for `need` more bytes, reserving it first; false
    /// (and the capture stops keeping, for good) when the budget has no room
    /// for it. A chunk is as large as what was kept so far (at least
    /// [`FIRST_CHUNK`], or the expected size) or as `need`, at most
    /// [`CHUNK`] and the cap.
    fn open_chunk(&mut self, need: usize) -> bool {
        let grown = self.kept.max(self.first).max(need);
        let size = (self.cap - self.kept).min(CHUNK).min(grown);
        if let Some(r) = self.reservation.as_mut() {
            if !r.grow(size) {
                self.cut = Some(Shortfall::MemoryBudget);
                self.cap = self.kept;
                return false;
            }
        }
        self.seal();
        self.open = BytesMut::with_capacity(size);
        true
    }

    /// Moves the chunk being filled to the filled ones (no copy).
    fn seal(&mut self) {
        if !self.open.is_empty() {
            self.chunks.push(self.open.split().freeze());
        }
    }

    fn note_frame_time(&mut self) {
        let times = &mut self.frame_times;
        // A call without a copy has no token to time.
        if times.len() >= MAX_FRAME_TIMES || self.skipped.is_some() {
            return;
        }
        if times.len() == times.capacity() {
            // 16 at first, then doubling up to a step at a time.
            let step = times.capacity().clamp(16, FRAME_TIMES_STEP);
            let bytes = step * std::mem::size_of::<(u64, Instant)>();
            if self.reservation.as_mut().is_some_and(|r| !r.grow(bytes)) {
                return;
            }
            times.reserve_exact(step);
        }
        times.push((self.total_bytes, Instant::now()));
    }

    /// Bytes held in the copy.
    pub fn kept(&self) -> usize {
        self.kept
    }

    /// True when the body was longer than what was kept.
    pub fn truncated(&self) -> bool {
        self.total_bytes > self.kept as u64
    }

    /// Why keeping stopped mid-body before the capture cap, if it did.
    pub fn cut(&self) -> Option<Shortfall> {
        self.cut
    }

    /// Why the body was not captured at all, if it was not.
    pub fn skipped(&self) -> Option<Shortfall> {
        self.skipped
    }

    /// The captured bytes as one buffer.
    pub fn bytes(&self) -> Bytes {
        match (self.chunks.as_slice(), self.open.is_empty()) {
            ([], true) => Bytes::new(),
            ([one], true) => one.clone(),
            ([], false) => Bytes::copy_from_slice(&self.open),
            (chunks, _) => {
                let mut out = BytesMut::with_capacity(self.kept);
                for c in chunks {
                    out.extend_from_slice(c);
                }
                out.extend_from_slice(&self.open);
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
        Tee::with_capture(inner, Capture::new(cap), on_end)
    }

    /// Wraps `inner`, keeping its copy in `capture`; `on_end` runs exactly once.
    pub fn with_capture(
        inner: B,
        capture: Capture,
        on_end: impl FnOnce(Capture, BodyEnd) -> Option<Hold> + Send + Sync + 'static,
    ) -> Self {
        let mut tee = Tee {
            inner,
            state: Some((capture, Box::new(on_end))),
            held: None,
        };
        // An empty body may never be polled at all: it is complete already.
        if tee.inner.is_end_stream() {
            tee.complete(None);
        }
        tee
    }

    fn fire(&mut self, end: BodyEnd) -> Option<Hold> {
        let (mut capture, on_end) = self.state.take()?;
        capture.seal();
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
        if let Some((mut capture, on_end)) = self.state.take() {
            capture.seal();
            on_end(capture, BodyEnd::Cancelled);
        }
    }
}

#[cfg(test)]
mod tests;
