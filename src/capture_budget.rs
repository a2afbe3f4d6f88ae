//! The global budget of captured bytes held in memory
//! (`capture.max_inflight_bytes`).
//!
//! Every byte a [`crate::tee::Capture`] keeps is reserved here first, by the
//! chunk, and given back when the capture is dropped: after the journal
//! writer has encoded its exchange (spool on), or after a parse worker has
//! built its span (spool off). Invariants:
//!
//! - the reserved total never exceeds the maximum (a reservation that does
//!   not fit fails and changes nothing);
//! - every reserved byte is released exactly once, when its [`Reservation`]
//!   drops, whatever ended the call (completed, errored, cancelled, dropped
//!   with a full export queue);
//! - nothing waits: a call that finds the budget spent is proxied without a
//!   capture, one whose capture hits it mid-body stops keeping bytes.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

/// Why a capture kept less than the capture cap allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shortfall {
    /// `capture.max_inflight_bytes` was reached.
    MemoryBudget,
}

impl Shortfall {
    /// The label used in traces, metrics and the journal.
    pub fn as_str(self) -> &'static str {
        match self {
            Shortfall::MemoryBudget => "memory_budget",
        }
    }

    /// The reverse of [`Shortfall::as_str`]; `None` for a label this build
    /// does not know.
    pub fn from_label(s: &str) -> Option<Self> {
        (s == "memory_budget").then_some(Shortfall::MemoryBudget)
    }
}

/// The shared budget; see the module docs.
#[derive(Debug)]
pub struct CaptureBudget {
    max: usize,
    used: AtomicUsize,
}

impl CaptureBudget {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(CaptureBudget {
            max,
            used: AtomicUsize::new(0),
        })
    }

    /// Bytes reserved right now.
    pub fn used(&self) -> usize {
        self.used.load(Ordering::Relaxed)
    }

    pub fn max(&self) -> usize {
        self.max
    }

    /// True when `n` more bytes would fit now (a new call starts capturing
    /// only when its first chunk would).
    pub fn has_room(&self, n: usize) -> bool {
        self.used().saturating_add(n) <= self.max
    }

    /// Reserves `n` more bytes if they fit; all or nothing.
    fn try_take(&self, n: usize) -> bool {
        self.used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                used.checked_add(n).filter(|total| *total <= self.max)
            })
            .is_ok()
    }

    fn give_back(&self, n: usize) {
        // Never below zero: a reservation only gives back what it took.
        let _ = self
            .used
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |used| {
                Some(used.saturating_sub(n))
            });
    }

    /// An empty reservation that grows against this budget.
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: self.clone(),
            bytes: 0,
        }
    }
}

/// Bytes one capture holds against the budget; released on drop.
#[derive(Debug)]
pub struct Reservation {
    budget: Arc<CaptureBudget>,
    bytes: usize,
}

impl Reservation {
    /// Reserves `n` more bytes; false (and nothing reserved) when they do not fit.
    pub fn grow(&mut self, n: usize) -> bool {
        if !self.budget.try_take(n) {
            return false;
        }
        self.bytes += n;
        true
    }

    /// Bytes held by this reservation.
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reservations_never_pass_the_maximum() {
        let b = CaptureBudget::new(100);
        let mut a = b.reservation();
        assert!(a.grow(60));
        let mut c = b.reservation();
        assert!(!c.grow(41), "all or nothing");
        assert_eq!(c.bytes(), 0);
        assert!(c.grow(40));
        assert_eq!(b.used(), 100);
        assert!(!b.has_room(1));
        assert!(b.has_room(0));
        assert!(!a.grow(1));
        assert_eq!((a.bytes(), c.bytes()), (60, 40));
    }

    #[test]
    fn dropping_a_reservation_releases_exactly_its_bytes() {
        let b = CaptureBudget::new(100);
        let mut a = b.reservation();
        let mut c = b.reservation();
        assert!(a.grow(30) && a.grow(20) && c.grow(10));
        drop(a);
        assert_eq!(b.used(), 10);
        drop(c);
        assert_eq!(b.used(), 0);
        assert!(b.has_room(100) && !b.has_room(101));
        // An empty reservation gives back nothing, and the count never goes negative.
        drop(b.reservation());
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn a_huge_request_does_not_overflow() {
        let b = CaptureBudget::new(usize::MAX - 1);
        let mut a = b.reservation();
        assert!(a.grow(usize::MAX - 1));
        assert!(!b.reservation().grow(usize::MAX));
        assert!(!b.reservation().grow(1));
        drop(a);
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn concurrent_reservations_add_up_and_drain_to_zero() {
        let b = CaptureBudget::new(1_000);
        let threads: Vec<_> = (0..8)
            .map(|_| {
                let b = b.clone();
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    for _ in 0..1_000 {
                        let mut r = b.reservation();
                        if r.grow(7) {
                            assert!(b.used() <= 1_000);
                            held.push(r);
                        }
                        if held.len() > 10 {
                            held.clear();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().expect("thread");
        }
        assert_eq!(b.used(), 0);
    }

    #[test]
    fn shortfall_labels_round_trip() {
        let s = Shortfall::MemoryBudget;
        assert_eq!(Shortfall::from_label(s.as_str()), Some(s));
        assert_eq!(Shortfall::from_label("other"), None);
    }
}
