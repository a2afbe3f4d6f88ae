//! A shared/exclusive gate for parse workers: every parse holds it shared,
//! except the re-parse of a record with a strike, which holds it alone so
//! that a second crash points at that record and no bystander.
//!
//! Owned tokens (no borrowed guard), so a token can travel with the record
//! it covers. Waiting for exclusive use blocks new shared users (no
//! starvation); it lasts as long as the parses already running, which are
//! bounded by the parse budget. Waits are in short slices so a missed
//! wake-up costs at most one slice.

use std::sync::{Condvar, Mutex};
use std::time::Duration;

#[derive(Default)]
struct State {
    shared: usize,
    exclusive: bool,
    waiting_exclusive: usize,
}

/// The gate.
#[derive(Default)]
pub struct Gate {
    state: Mutex<State>,
    cv: Condvar,
}

const SLICE: Duration = Duration::from_millis(100);

impl Gate {
    /// Waits until no exclusive user holds or waits for the gate, then
    /// enters shared.
    pub fn enter_shared(&self) {
        let Ok(mut s) = self.state.lock() else { return };
        while s.exclusive || s.waiting_exclusive > 0 {
            s = match self.cv.wait_timeout(s, SLICE) {
                Ok((s, _)) => s,
                Err(_) => return,
            };
        }
        s.shared += 1;
    }

    /// Waits until nobody else holds the gate, then enters alone.
    pub fn enter_exclusive(&self) {
        let Ok(mut s) = self.state.lock() else { return };
        s.waiting_exclusive += 1;
        while s.exclusive || s.shared > 0 {
            s = match self.cv.wait_timeout(s, SLICE) {
                Ok((s, _)) => s,
                Err(_) => return,
            };
        }
        s.waiting_exclusive -= 1;
        s.exclusive = true;
    }

    /// Leaves the gate (`exclusive`: as entered).
    pub fn leave(&self, exclusive: bool) {
        if let Ok(mut s) = self.state.lock() {
            if exclusive {
                s.exclusive = false;
            } else {
                s.shared = s.shared.saturating_sub(1);
            }
        }
        self.cv.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering::SeqCst};
    use std::sync::Arc;

    #[test]
    fn an_exclusive_holder_is_alone() {
        let gate = Arc::new(Gate::default());
        let inside = Arc::new(AtomicUsize::new(0));
        let overlaps = Arc::new(AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|t| {
                let (gate, inside, overlaps) = (gate.clone(), inside.clone(), overlaps.clone());
                std::thread::spawn(move || {
                    for i in 0..200 {
                        let exclusive = (i + t) % 10 == 0;
                        if exclusive {
                            gate.enter_exclusive();
                        } else {
                            gate.enter_shared();
                        }
                        let n = inside.fetch_add(1, SeqCst) + 1;
                        if exclusive && n != 1 {
                            overlaps.fetch_add(1, SeqCst);
                        }
                        std::thread::yield_now();
                        inside.fetch_sub(1, SeqCst);
                        gate.leave(exclusive);
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        assert_eq!(overlaps.load(SeqCst), 0);
        let s = gate.state.lock().unwrap();
        assert_eq!((s.shared, s.exclusive, s.waiting_exclusive), (0, false, 0));
    }
}
