//! The response body: a whole buffer, or a stream that writes each frame
//! of a [`StreamPlan`] as its own frame at its time: the head frames and
//! the first content chunk `ttft` after the start, each further chunk
//! `chunk_delay` after the previous one was handed to the connection (as a
//! model generates: a late token delays the rest, the gap is a lower
//! bound), the tail frames right after the last chunk. Tokio's timer has a
//! 1 ms resolution: a shorter delay waits until the next tick.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

use crate::bodies::StreamPlan;

/// What `serve` answers with.
pub enum SimBody {
    Full(Option<Bytes>),
    Stream(Box<Paced>),
}

/// A stream in progress.
pub struct Paced {
    plan: StreamPlan,
    /// Index of the next frame: head, then content, then tail.
    next: u64,
    start: Instant,
    /// When the previous content chunk was handed out.
    last_sent: Instant,
    ttft: Duration,
    delay: Duration,
    sleep: Option<Pin<Box<Sleep>>>,
}

impl SimBody {
    pub fn full(bytes: Bytes) -> SimBody {
        SimBody::Full(Some(bytes))
    }

    pub fn paced(plan: StreamPlan, ttft: Duration, delay: Duration) -> SimBody {
        SimBody::Stream(Box::new(Paced {
            plan,
            next: 0,
            start: Instant::now(),
            last_sent: Instant::now(),
            ttft,
            delay,
            sleep: None,
        }))
    }
}

impl Paced {
    fn total(&self) -> u64 {
        self.plan.head.len() as u64 + self.plan.chunks + self.plan.tail.len() as u64
    }

    /// When frame `k` is due (`None`: now).
    fn due(&self, k: u64) -> Option<Instant> {
        let head = self.plan.head.len() as u64;
        if k <= head {
            (!self.ttft.is_zero()).then(|| self.start + self.ttft)
        } else if k < head + self.plan.chunks {
            (!self.delay.is_zero()).then(|| self.last_sent + self.delay)
        } else {
            None
        }
    }

    fn frame(&self, k: u64) -> Bytes {
        let head = self.plan.head.len() as u64;
        if k < head {
            self.plan.head[k as usize].clone()
        } else if k < head + self.plan.chunks {
            self.plan.content(k - head)
        } else {
            self.plan.tail[(k - head - self.plan.chunks) as usize].clone()
        }
    }

    fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Bytes>> {
        if self.next >= self.total() {
            return Poll::Ready(None);
        }
        if let Some(due) = self.due(self.next) {
            if Instant::now() < due {
                let sleep = self
                    .sleep
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
                if sleep.deadline() != due {
                    sleep.as_mut().reset(due);
                }
                if sleep.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
            }
        }
        let frame = self.frame(self.next);
        self.next += 1;
        if !self.delay.is_zero() {
            self.last_sent = Instant::now();
        }
        Poll::Ready(Some(frame))
    }
}

impl Body for SimBody {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        match self.get_mut() {
            SimBody::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            SimBody::Stream(paced) => paced.poll_next(cx).map(|b| b.map(|b| Ok(Frame::data(b)))),
        }
    }

    fn is_end_stream(&self) -> bool {
        match self {
            SimBody::Full(bytes) => bytes.is_none(),
            SimBody::Stream(paced) => paced.next >= paced.total(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match self {
            SimBody::Full(Some(b)) => SizeHint::with_exact(b.len() as u64),
            SimBody::Full(None) => SizeHint::with_exact(0),
            SimBody::Stream(_) => SizeHint::default(),
        }
    }
}
