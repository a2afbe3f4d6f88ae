//! A response body that removes what llmtap's `include_usage` injection added
//! to a stream (see [`crate::inject::UsageFilter`]), in two halves around the
//! response [`Tee`](crate::tee::Tee):
//!
//! ```text
//! provider -> Deadline -> Scan -> Tee -> Reveal -> client
//! ```
//!
//! [`Scan`] runs the filter on each frame as it comes from the provider and
//! passes the frame on unchanged, so the tee captures (and the trace shows)
//! the provider's bytes. [`Reveal`] sends the client the filtered bytes of
//! each frame the tee lets through; an empty result is not sent as a frame.
//! Because the filter has seen a frame before the tee does, whether hiding
//! failed ([`Hiding::failure`]) is known when the tee reports the end.

use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::{Bytes, BytesMut};
use http_body::{Body, Frame, SizeHint};

use crate::inject::UsageFilter;

/// The filter and its output not yet sent, shared by the two halves (both
/// are polled by the same task: the lock is never contended).
#[derive(Default)]
struct Shared {
    filter: UsageFilter,
    out: BytesMut,
    finished: bool,
}

impl Shared {
    fn finish(&mut self) {
        if !std::mem::replace(&mut self.finished, true) {
            let rest = self.filter.finish();
            self.out.extend_from_slice(&rest);
        }
    }
}

/// Whether a response of a request whose usage was injected is filtered:
/// only a successful (2xx), uncompressed `text/event-stream`. Anything else
/// (an error in JSON, a provider that answered a stream request with one
/// JSON reply, a compressed stream) passes untouched.
pub fn applies(status: u16, content_type: Option<&str>, content_encoding: Option<&str>) -> bool {
    let essence = content_type
        .and_then(|c| c.split(';').next())
        .map(str::trim);
    (200..300).contains(&status)
        && essence.is_some_and(|e| e.eq_ignore_ascii_case("text/event-stream"))
        && content_encoding
            .is_none_or(|e| e.trim().is_empty() || e.trim().eq_ignore_ascii_case("identity"))
}

/// A handle on one response's filter: the outer half, and what it did.
#[derive(Clone)]
pub struct Hiding(Arc<Mutex<Shared>>);

/// Starts hiding usage on `inner`: returns the inner half (wrap it in the
/// tee) and the handle that builds the outer half.
pub fn hide_usage<B>(inner: B) -> (Scan<B>, Hiding) {
    let shared = Arc::new(Mutex::new(Shared::default()));
    let scan = Scan {
        inner,
        shared: shared.clone(),
    };
    (scan, Hiding(shared))
}

fn lock(shared: &Mutex<Shared>) -> MutexGuard<'_, Shared> {
    shared.lock().unwrap_or_else(|e| e.into_inner())
}

impl Hiding {
    /// Why what injection added may have reached the client, if it may have.
    pub fn failure(&self) -> Option<String> {
        lock(&self.0).filter.failure()
    }

    /// The outer half, around the tee that wraps this handle's [`Scan`].
    pub fn reveal<T>(self, inner: T) -> Reveal<T> {
        Reveal {
            inner,
            shared: self.0,
            trailers: None,
            ended: false,
        }
    }
}

/// The inner half: filters each frame, passes it on unchanged.
pub struct Scan<B> {
    inner: B,
    shared: Arc<Mutex<Shared>>,
}

impl<B> Body for Scan<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                let mut shared = lock(&this.shared);
                match frame.data_ref() {
                    Some(data) => {
                        let out = shared.filter.push(data);
                        shared.out.extend_from_slice(&out);
                        // The tee may report the end on this frame.
                        if this.inner.is_end_stream() {
                            shared.finish();
                        }
                    }
                    // Trailers end the data: what is held goes before them.
                    None => shared.finish(),
                }
            }
            Poll::Ready(None) => lock(&this.shared).finish(),
            _ => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The outer half: sends the filtered bytes in place of each frame.
pub struct Reveal<T> {
    inner: T,
    shared: Arc<Mutex<Shared>>,
    /// Trailers waiting for the filtered bytes that go before them.
    trailers: Option<Frame<Bytes>>,
    ended: bool,
}

impl<T> Reveal<T> {
    fn take_out(&self) -> Bytes {
        lock(&self.shared).out.split().freeze()
    }
}

impl<T> Body for Reveal<T>
where
    T: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = T::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, T::Error>>> {
        let this = self.get_mut();
        if let Some(trailers) = this.trailers.take() {
            return Poll::Ready(Some(Ok(trailers)));
        }
        loop {
            if this.ended {
                return Poll::Ready(None);
            }
            let frame = match std::task::ready!(Pin::new(&mut this.inner).poll_frame(cx)) {
                Some(Ok(frame)) => frame,
                Some(Err(e)) => return Poll::Ready(Some(Err(e))),
                None => {
                    this.ended = true;
                    let rest = this.take_out();
                    if rest.is_empty() {
                        return Poll::Ready(None);
                    }
                    return Poll::Ready(Some(Ok(Frame::data(rest))));
                }
            };
            let out = this.take_out();
            if !frame.is_data() {
                if out.is_empty() {
                    return Poll::Ready(Some(Ok(frame)));
                }
                this.trailers = Some(frame);
            } else if out.is_empty() {
                continue;
            }
            return Poll::Ready(Some(Ok(Frame::data(out))));
        }
    }

    fn is_end_stream(&self) -> bool {
        self.ended && self.trailers.is_none()
    }

    // The filtered body has another length: the default hint (unknown).
}

#[cfg(test)]
mod tests;
