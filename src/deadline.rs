//! Time limits on an upstream response body: an idle limit (longest silence
//! between two frames) and an optional total limit for the whole exchange.
//!
//! A body that overruns either ends with an error frame, so the client's
//! stream is cut (its response head is long gone) and the tee records why.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep};

/// Why a body was cut, or the inner body's own error.
#[derive(Debug, thiserror::Error)]
pub enum DeadlineError<E> {
    #[error("upstream sent nothing for {0:?} (idle timeout)")]
    Idle(Duration),
    #[error("exchange exceeded the request timeout")]
    Total,
    #[error("{0}")]
    Inner(E),
}

/// A body with an idle and a total deadline; see the module docs.
pub struct Deadline<B> {
    inner: B,
    idle: Option<Duration>,
    idle_sleep: Option<Pin<Box<Sleep>>>,
    total_sleep: Option<Pin<Box<Sleep>>>,
    done: bool,
}

impl<B> Deadline<B> {
    /// `total_at` is the instant the whole exchange must be over by.
    pub fn new(inner: B, idle: Option<Duration>, total_at: Option<Instant>) -> Self {
        Deadline {
            inner,
            idle,
            idle_sleep: idle.map(|d| Box::pin(tokio::time::sleep(d))),
            total_sleep: total_at.map(|t| Box::pin(tokio::time::sleep_until(t))),
            done: false,
        }
    }
}

impl<B> Body for Deadline<B>
where
    B: Body<Data = Bytes> + Unpin,
{
    type Data = Bytes;
    type Error = DeadlineError<B::Error>;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(d), Some(sleep)) = (this.idle, this.idle_sleep.as_mut()) {
                    sleep.as_mut().reset(Instant::now() + d);
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(Some(Err(e))) => return Poll::Ready(Some(Err(DeadlineError::Inner(e)))),
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => {}
        }
        if let Some(sleep) = this.total_sleep.as_mut() {
            if sleep.as_mut().poll(cx).is_ready() {
                this.done = true;
                return Poll::Ready(Some(Err(DeadlineError::Total)));
            }
        }
        if let (Some(d), Some(sleep)) = (this.idle, this.idle_sleep.as_mut()) {
            if sleep.as_mut().poll(cx).is_ready() {
                this.done = true;
                return Poll::Ready(Some(Err(DeadlineError::Idle(d))));
            }
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        // Every byte a Content-Length announced has arrived. Over HTTP/2 the
        // END_STREAM flag can follow in an empty DATA frame, and a reader that
        // stops at the announced length (hyper's HTTP/1 server) never polls
        // for it: without this the tee took a finished body for an abandoned one.
        self.done || self.inner.is_end_stream() || self.inner.size_hint().exact() == Some(0)
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::{BodyExt, StreamBody};

    #[tokio::test(start_paused = true)]
    async fn idle_body_is_cut() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, String>>(4);
        let body = StreamBody::new(tokio_stream_from(rx));
        let mut body = Deadline::new(body, Some(Duration::from_secs(5)), None);
        tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .await
            .unwrap();
        assert!(body.frame().await.unwrap().is_ok());
        let err = body.frame().await.unwrap().unwrap_err();
        assert!(matches!(err, DeadlineError::Idle(_)), "{err}");
        assert!(body.frame().await.is_none(), "ends after the cut");
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn total_limit_applies_even_when_frames_flow() {
        let (tx, rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, String>>(4);
        let body = StreamBody::new(tokio_stream_from(rx));
        let total = Instant::now() + Duration::from_secs(3);
        let mut body = Deadline::new(body, Some(Duration::from_secs(2)), Some(total));
        tokio::spawn(async move {
            for _ in 0..10 {
                tokio::time::sleep(Duration::from_secs(1)).await;
                if tx
                    .send(Ok(Frame::data(Bytes::from_static(b"x"))))
                    .await
                    .is_err()
                {
                    return;
                }
            }
        });
        let mut frames = 0;
        loop {
            match body.frame().await {
                Some(Ok(_)) => frames += 1,
                Some(Err(e)) => {
                    assert!(matches!(e, DeadlineError::Total), "{e}");
                    break;
                }
                None => panic!("ended without the total limit"),
            }
        }
        assert!((2..=3).contains(&frames), "{frames}");
    }

    /// A body that announced `left` more bytes and never ends by itself.
    struct Announced(u64);

    impl Body for Announced {
        type Data = Bytes;
        type Error = String;

        fn poll_frame(
            self: Pin<&mut Self>,
            _: &mut Context<'_>,
        ) -> Poll<Option<Result<Frame<Bytes>, String>>> {
            Poll::Pending
        }

        fn size_hint(&self) -> SizeHint {
            SizeHint::with_exact(self.0)
        }
    }

    #[test]
    fn announced_length_reached_is_the_end() {
        assert!(Deadline::new(Announced(0), None, None).is_end_stream());
        assert!(!Deadline::new(Announced(3), None, None).is_end_stream());
    }

    fn tokio_stream_from<T: Send + 'static>(
        mut rx: tokio::sync::mpsc::Receiver<T>,
    ) -> impl futures_util::Stream<Item = T> + Unpin {
        Box::pin(futures_util::stream::poll_fn(move |cx| rx.poll_recv(cx)))
    }
}
