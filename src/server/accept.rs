//! Accepting within a connection limit, with a backoff on accept errors.
//!
//! At its limit a listener stops accepting: new connections complete their
//! TCP handshake in the kernel and wait in the listen backlog until a slot
//! frees (they are not refused: a real call queued behind a flood still gets
//! served once the flood's connections time out). An accept error (EMFILE,
//! ENFILE, ENOBUFS, ENOMEM) is retried after an exponential backoff from
//! 5 ms to 1 s, so a process out of descriptors does not spin; the warning
//! is logged at most every 10 s with the count of those not logged.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::metrics::Listener;

const BACKOFF_MIN: Duration = Duration::from_millis(5);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Exponential backoff between failed accepts.
#[derive(Debug, Default)]
pub struct Backoff {
    next: Option<Duration>,
}

impl Backoff {
    /// The pause before the next attempt: 5 ms, doubling to 1 s.
    pub fn next_pause(&mut self) -> Duration {
        let pause = self.next.unwrap_or(BACKOFF_MIN);
        self.next = Some((pause * 2).min(BACKOFF_MAX));
        pause
    }

    /// An accept succeeded: start again from the shortest pause.
    pub fn reset(&mut self) {
        self.next = None;
    }
}

/// Lets a warning through at most once per period, counting the others.
#[derive(Debug)]
pub struct Throttle {
    every: Duration,
    last: Option<Instant>,
    suppressed: u64,
}

impl Throttle {
    pub fn new(every: Duration) -> Self {
        Throttle {
            every,
            last: None,
            suppressed: 0,
        }
    }

    /// `Some(n)` when a warning may be logged now (`n` were held back since
    /// the last one); `None` when it is to be held back.
    pub fn allow(&mut self, now: Instant) -> Option<u64> {
        match self.last {
            Some(last) if now.duration_since(last) < self.every => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// Accepts one connection at a time within `slots`.
pub struct Acceptor {
    listener: TcpListener,
    name: &'static str,
    slots: Arc<Semaphore>,
    limit: usize,
    backoff: Backoff,
    errors: Throttle,
    full: Throttle,
}

/// An accepted connection and its slot (released when dropped).
pub struct Accepted {
    pub stream: TcpStream,
    pub peer: SocketAddr,
    pub slot: OwnedSemaphorePermit,
}

/// Errors that concern one connection, not the process: retried at once.
fn is_transient(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        io::ErrorKind::ConnectionAborted
            | io::ErrorKind::ConnectionReset
            | io::ErrorKind::Interrupted
    )
}

impl Acceptor {
    pub fn new(listener: TcpListener, name: &'static str, limit: usize) -> Self {
        Acceptor {
            listener,
            name,
            slots: Arc::new(Semaphore::new(limit)),
            limit,
            backoff: Backoff::default(),
            errors: Throttle::new(WARN_EVERY),
            full: Throttle::new(WARN_EVERY),
        }
    }

    /// The next connection, once a slot is free; `None` when `stop`
    /// resolves first.
    pub async fn next(
        &mut self,
        stats: &Listener,
        stop: &mut (impl Future<Output = ()> + Unpin),
    ) -> Option<Accepted> {
        let slot = match self.slots.clone().try_acquire_owned() {
            Ok(s) => s,
            Err(_) => {
                stats.at_limit();
                if let Some(held) = self.full.allow(Instant::now()) {
                    tracing::warn!(
                        listener = self.name,
                        limit = self.limit,
                        also_since_last_warning = held,
                        "connection limit reached: new connections wait in the backlog"
                    );
                }
                tokio::select! {
                    s = self.slots.clone().acquire_owned() => s.ok()?,
                    _ = &mut *stop => return None,
                }
            }
        };
        loop {
            let accepted = tokio::select! {
                a = self.listener.accept() => a,
                _ = &mut *stop => return None,
            };
            match accepted {
                Ok((stream, peer)) => {
                    self.backoff.reset();
                    stats.accepted();
                    return Some(Accepted { stream, peer, slot });
                }
                Err(e) if is_transient(&e) => continue,
                Err(e) => {
                    stats.accept_error();
                    let pause = self.backoff.next_pause();
                    if let Some(held) = self.errors.allow(Instant::now()) {
                        tracing::warn!(listener = self.name, error = %e, ?pause, also_since_last_warning = held, "accept failed; backing off");
                    }
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = &mut *stop => return None,
                    }
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_5ms_to_1s_and_resets() {
        let mut b = Backoff::default();
        let pauses: Vec<u64> = (0..10).map(|_| b.next_pause().as_millis() as u64).collect();
        assert_eq!(pauses, [5, 10, 20, 40, 80, 160, 320, 640, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_pause(), Duration::from_millis(5));
    }

    #[tokio::test(start_paused = true)]
    async fn throttle_logs_once_per_period_and_counts_the_rest() {
        let mut t = Throttle::new(Duration::from_secs(10));
        assert_eq!(t.allow(Instant::now()), Some(0));
        for _ in 0..5 {
            tokio::time::advance(Duration::from_secs(1)).await;
            assert_eq!(t.allow(Instant::now()), None);
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        assert_eq!(t.allow(Instant::now()), Some(5));
        assert_eq!(t.allow(Instant::now()), None);
    }

    #[tokio::test]
    async fn at_the_limit_connections_wait_until_a_slot_frees() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stats = Listener::default();
        let mut acceptor = Acceptor::new(listener, "test", 1);
        let mut never = Box::pin(std::future::pending::<()>());
        let _c1 = TcpStream::connect(addr).await.unwrap();
        let _c2 = TcpStream::connect(addr).await.unwrap();
        let first = acceptor.next(&stats, &mut never).await.unwrap();
        let waiting = tokio::time::timeout(
            Duration::from_millis(200),
            acceptor.next(&stats, &mut never),
        )
        .await;
        assert!(
            waiting.is_err(),
            "the second connection waits while the slot is held"
        );
        assert_eq!(stats.at_limit_count(), 1);
        drop(first);
        let second =
            tokio::time::timeout(Duration::from_secs(5), acceptor.next(&stats, &mut never))
                .await
                .expect("accepted once the slot is free");
        assert!(second.is_some());
        assert_eq!(stats.open(), 2, "closing is the connection task's job");
    }
}
