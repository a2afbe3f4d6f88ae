//! A bound on the bytes of parsed spans waiting between the parse workers
//! and the batchers (spool off; spool on, the workers store their spans
//! themselves): the span queue is bounded by count, and a span can be
//! megabytes (its request and response text), so a slow sink could
//! otherwise pile up gigabytes of spans.
//!
//! A parse worker takes a [`Held`] for each span before queueing it and waits
//! while the spans ahead of it are over the bound (one span larger than the
//! bound passes alone). The worker is a thread of its own, so waiting slows
//! nothing on the request path. The bytes are given back when the span leaves the queue
//! ([`Held`] drops with its `Parsed`).

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::time::Duration;

/// The bound shared by the workers and the queue's consumer.
#[derive(Debug)]
pub struct SpanGate {
    max: usize,
    used: Mutex<usize>,
    freed: Condvar,
}

/// Bytes of one queued span; given back on drop.
#[derive(Debug)]
pub struct Held {
    gate: Arc<SpanGate>,
    bytes: usize,
}

impl SpanGate {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(SpanGate {
            max,
            used: Mutex::new(0),
            freed: Condvar::new(),
        })
    }

    /// Bytes held now.
    pub fn used(&self) -> usize {
        *self.used.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Waits until `bytes` fit (or nothing else is held), then holds them.
    pub fn hold(self: &Arc<Self>, bytes: usize) -> Held {
        let mut used = self.used.lock().unwrap_or_else(PoisonError::into_inner);
        while *used > 0 && used.saturating_add(bytes) > self.max {
            // A timed wait, re-checked: a missed wake-up costs 100 ms, never a hang.
            used = match self.freed.wait_timeout(used, Duration::from_millis(100)) {
                Ok((u, _)) => u,
                Err(p) => p.into_inner().0,
            };
        }
        *used = used.saturating_add(bytes);
        drop(used);
        Held {
            gate: self.clone(),
            bytes,
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        let mut used = self
            .gate
            .used
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        *used = used.saturating_sub(self.bytes);
        drop(used);
        self.gate.freed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    #[test]
    fn holds_add_up_and_drain_to_zero() {
        let g = SpanGate::new(100);
        let a = g.hold(60);
        let b = g.hold(40);
        assert_eq!(g.used(), 100);
        drop(a);
        drop(b);
        assert_eq!(g.used(), 0);
        // A span larger than the bound passes alone.
        let big = g.hold(500);
        assert_eq!(g.used(), 500);
        drop(big);
        assert_eq!(g.used(), 0);
    }

    #[test]
    fn a_hold_past_the_bound_waits_for_the_queue_to_drain() {
        let g = SpanGate::new(100);
        let first = g.hold(80);
        let waiter = {
            let g = g.clone();
            std::thread::spawn(move || {
                let t = Instant::now();
                let held = g.hold(50);
                (t.elapsed(), held.bytes)
            })
        };
        std::thread::sleep(Duration::from_millis(150));
        assert_eq!(g.used(), 80, "the second span waits");
        drop(first);
        let (waited, bytes) = waiter.join().expect("waiter");
        assert!(waited >= Duration::from_millis(100), "{waited:?}");
        assert_eq!(bytes, 50);
        assert_eq!(g.used(), 0, "released when the waiter's hold dropped");
    }
}
