//! The connection guard: a client connection's socket wrapped so that it
//! times out, whatever the client does or fails to do.
//!
//! Three limits, each enforced where the bytes move:
//!
//! - **header read**: a new connection must deliver a complete request head
//!   within `header_read_timeout` of its accept; on a kept-alive HTTP/1
//!   connection, a request head must complete within `header_read_timeout`
//!   of its first byte.
//! - **keep-alive**: with no request in flight, a connection may stay silent
//!   for `keepalive_timeout` (HTTP/1 between requests; HTTP/2 with no stream
//!   open, whatever PING or SETTINGS frames it sends).
//! - **client write**: a write (or flush) to the client that stays pending
//!   for `client_write_timeout` — a client that stopped reading — fails. On
//!   HTTP/2 a client that stops reading shuts its flow-control window rather
//!   than the socket, so there the limit also applies to a response body
//!   that handed out a frame and was not asked for the next one ([`Tracked`]).
//!
//! A read or write past its limit returns `TimedOut`; hyper then closes the
//! connection and drops what it held, including response bodies, whose
//! [`crate::tee::Tee`] reports the call cancelled.
//!
//! "In flight" is counted by the service: [`Clock::request_started`] when
//! hyper hands over a request head, and the [`InFlight`] token it returns is
//! dropped with the response body ([`Tracked`]).

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::time::{Instant, Sleep};

use crate::metrics::Timeout;

/// The three client timeouts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timeouts {
    pub header_read: Duration,
    pub keepalive: Duration,
    pub client_write: Duration,
}

/// What a connection is doing, as far as its read deadline cares.
#[derive(Debug)]
struct State {
    accepted: Instant,
    in_flight: usize,
    /// When the last request in flight ended; `None` before the first.
    idle_since: Option<Instant>,
    /// First byte read since `idle_since` (HTTP/1: the next request's head).
    first_byte: Option<Instant>,
    h2: bool,
    /// HTTP/2 response bodies that handed out a frame and have not been
    /// asked for the next one since (the client's window is shut), by id.
    stalled: Vec<(u64, Instant)>,
    next_stream: u64,
    /// The read deadline the reader has armed.
    armed: Option<Instant>,
    /// The limit that closed the connection.
    fired: Option<Timeout>,
    /// The task reading the socket, woken when its deadline moves earlier
    /// (the connection went idle, or an HTTP/2 body stalled).
    reader: Option<Waker>,
}

impl State {
    /// A connection accepted at `accepted`: nothing read, nothing in flight.
    fn new(accepted: Instant) -> State {
        State {
            accepted,
            in_flight: 0,
            idle_since: None,
            first_byte: None,
            h2: false,
            stalled: Vec::new(),
            next_stream: 0,
            armed: None,
            fired: None,
            reader: None,
        }
    }
}

impl State {
    /// When reading must have made progress by, and which limit that is:
    /// the earlier of the idle limit (none while a request is in flight) and
    /// the first stalled HTTP/2 body's write limit.
    fn read_deadline(&self, t: &Timeouts) -> Option<(Instant, Timeout)> {
        let stall = self
            .stalled
            .iter()
            .map(|(_, since)| (*since + t.client_write, Timeout::ClientWrite))
            .min_by_key(|(at, _)| *at);
        match (self.idle_deadline(t), stall) {
            (Some(a), Some(b)) => Some(if b.0 < a.0 { b } else { a }),
            (a, b) => a.or(b),
        }
    }

    fn idle_deadline(&self, t: &Timeouts) -> Option<(Instant, Timeout)> {
        if self.in_flight > 0 {
            return None;
        }
        let Some(idle) = self.idle_since else {
            return Some((self.accepted + t.header_read, Timeout::HeaderRead));
        };
        match self.first_byte {
            Some(first) if !self.h2 => Some((first + t.header_read, Timeout::HeaderRead)),
            _ => Some((idle + t.keepalive, Timeout::KeepAlive)),
        }
    }
}

/// A connection's shared state: the socket wrapper, the service and the
/// response bodies each hold one.
#[derive(Debug)]
pub struct Clock(Mutex<State>);

impl Clock {
    pub fn new(accepted: Instant) -> Arc<Clock> {
        Arc::new(Clock(Mutex::new(State::new(accepted))))
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // The state stays consistent whatever panicked while holding it.
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A request head arrived; the connection is busy until the token drops.
    pub fn request_started(self: &Arc<Self>, h2: bool) -> InFlight {
        let mut s = self.state();
        s.in_flight += 1;
        s.first_byte = None;
        s.h2 |= h2;
        InFlight(self.clone())
    }

    fn request_ended(&self) {
        let reader = {
            let mut s = self.state();
            s.in_flight = s.in_flight.saturating_sub(1);
            if s.in_flight > 0 {
                return;
            }
            s.idle_since = Some(Instant::now());
            s.first_byte = None;
            s.reader.take()
        };
        // The reader may be parked with no deadline: let it arm one.
        if let Some(w) = reader {
            w.wake();
        }
    }

    /// An id for an HTTP/2 response body's stall reports.
    pub fn stream_id(&self) -> u64 {
        let mut s = self.state();
        s.next_stream += 1;
        s.next_stream
    }

    /// An HTTP/2 body handed out a frame at `now`: until it is polled again,
    /// the client's window is shut on it. Wakes the reader when that moves
    /// its deadline earlier.
    fn stall(&self, id: u64, now: Instant, t: &Timeouts) {
        let reader = {
            let mut s = self.state();
            s.stalled.push((id, now));
            match s.armed {
                Some(at) if at <= now + t.client_write => None,
                _ => s.reader.take(),
            }
        };
        if let Some(w) = reader {
            w.wake();
        }
    }

    fn unstall(&self, id: u64) {
        let mut s = self.state();
        if let Some(i) = s.stalled.iter().position(|(k, _)| *k == id) {
            s.stalled.swap_remove(i);
        }
    }

    /// The limit that closed the connection, if one did.
    pub fn fired(&self) -> Option<Timeout> {
        self.state().fired
    }

    fn fire(&self, why: Timeout) -> io::Error {
        self.state().fired.get_or_insert(why);
        io::Error::new(
            io::ErrorKind::TimedOut,
            format!("client {} timeout", why.label()),
        )
    }
}

/// A request in flight on its connection; dropping it ends the request.
#[derive(Debug)]
pub struct InFlight(Arc<Clock>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.request_ended();
    }
}

/// A response body that keeps its request in flight until it is dropped.
/// On HTTP/2 it also reports when the client stops taking its frames: hyper
/// asks for the next frame only once the client's flow-control window has
/// room, so a frame handed out and not followed by a poll for
/// `client_write_timeout` is a client that stopped reading.
pub struct Tracked<B> {
    inner: B,
    in_flight: InFlight,
    /// HTTP/2: this body's stall id and the limits.
    stall: Option<(u64, Timeouts)>,
}

impl<B> Tracked<B> {
    pub fn new(inner: B, in_flight: InFlight) -> Self {
        Tracked {
            inner,
            in_flight,
            stall: None,
        }
    }

    /// The same, reporting stalls (HTTP/2).
    pub fn watched(inner: B, in_flight: InFlight, timeouts: Timeouts) -> Self {
        let id = in_flight.0.stream_id();
        Tracked {
            inner,
            in_flight,
            stall: Some((id, timeouts)),
        }
    }
}

impl<B> Drop for Tracked<B> {
    fn drop(&mut self) {
        if let Some((id, _)) = self.stall {
            self.in_flight.0.unstall(id);
        }
    }
}

impl<B: Body<Data = Bytes> + Unpin> Body for Tracked<B> {
    type Data = Bytes;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, B::Error>>> {
        let this = self.get_mut();
        let Some((id, t)) = this.stall else {
            return Pin::new(&mut this.inner).poll_frame(cx);
        };
        let clock = &this.in_flight.0;
        clock.unstall(id);
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(Some(Ok(_))) = &polled {
            if !this.inner.is_end_stream() {
                clock.stall(id, Instant::now(), &t);
            }
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

/// A client socket with the three limits; see the module docs.
pub struct Guarded<T> {
    io: T,
    clock: Arc<Clock>,
    timeouts: Timeouts,
    read_timer: Pin<Box<Sleep>>,
    read_at: Option<Instant>,
    write_timer: Pin<Box<Sleep>>,
    /// Set while a write is pending: when it stops being allowed to.
    write_until: Option<Instant>,
}

impl<T> Guarded<T> {
    pub fn new(io: T, clock: Arc<Clock>, timeouts: Timeouts) -> Self {
        let far = Instant::now() + Duration::from_secs(86_400);
        Guarded {
            io,
            clock,
            timeouts,
            read_timer: Box::pin(tokio::time::sleep_until(far)),
            read_at: None,
            write_timer: Box::pin(tokio::time::sleep_until(far)),
            write_until: None,
        }
    }

    /// The error of an expired connection: once a limit fired, every read
    /// and write fails.
    fn expired(&self) -> Option<io::Error> {
        let why = self.clock.fired()?;
        Some(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("client {} timeout", why.label()),
        ))
    }

    /// A read is pending: arm the read deadline, fail when it passed.
    fn read_pending(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let deadline = {
            let mut s = self.clock.state();
            if !s.reader.as_ref().is_some_and(|w| w.will_wake(cx.waker())) {
                s.reader = Some(cx.waker().clone());
            }
            let deadline = s.read_deadline(&self.timeouts);
            s.armed = deadline.map(|(at, _)| at);
            deadline
        };
        let Some((at, why)) = deadline else {
            return Poll::Pending;
        };
        if self.read_at != Some(at) {
            self.read_timer.as_mut().reset(at);
            self.read_at = Some(at);
        }
        match self.read_timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(self.clock.fire(why))),
            Poll::Pending => Poll::Pending,
        }
    }

    /// After a write, flush or shutdown: progress clears the write deadline,
    /// a pending one arms it (once) and fails when it passed.
    fn wrote<R>(&mut self, cx: &mut Context<'_>, r: Poll<io::Result<R>>) -> Poll<io::Result<R>> {
        if r.is_ready() {
            self.write_until = None;
            return r;
        }
        if self.write_until.is_none() {
            let at = Instant::now() + self.timeouts.client_write;
            self.write_timer.as_mut().reset(at);
            self.write_until = Some(at);
        }
        match self.write_timer.as_mut().poll(cx) {
            Poll::Ready(()) => Poll::Ready(Err(self.clock.fire(Timeout::ClientWrite))),
            Poll::Pending => Poll::Pending,
        }
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for Guarded<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        if let Some(e) = this.expired() {
            return Poll::Ready(Err(e));
        }
        let before = buf.filled().len();
        match Pin::new(&mut this.io).poll_read(cx, buf) {
            Poll::Pending => this.read_pending(cx),
            Poll::Ready(Ok(())) => {
                if buf.filled().len() > before {
                    let mut s = this.clock.state();
                    if s.in_flight == 0 && s.idle_since.is_some() && s.first_byte.is_none() {
                        s.first_byte = Some(Instant::now());
                    }
                }
                Poll::Ready(Ok(()))
            }
            other => other,
        }
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Guarded<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.expired() {
            return Poll::Ready(Err(e));
        }
        let r = Pin::new(&mut this.io).poll_write(cx, buf);
        this.wrote(cx, r)
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if let Some(e) = this.expired() {
            return Poll::Ready(Err(e));
        }
        let r = Pin::new(&mut this.io).poll_write_vectored(cx, bufs);
        this.wrote(cx, r)
    }

    fn is_write_vectored(&self) -> bool {
        self.io.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_flush(cx);
        this.wrote(cx, r)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.io).poll_shutdown(cx);
        this.wrote(cx, r)
    }
}

#[cfg(test)]
mod tests;
