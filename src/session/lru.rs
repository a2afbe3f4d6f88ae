//! A bounded map with least-recently-used eviction and idle expiry.
//!
//! Invariants: it never holds more than `cap` entries; an entry not read or
//! written for `ttl` is gone (dropped lazily: on lookup, and from the old end
//! on every insert). Time is passed in, so tests are deterministic. Keys are
//! 64-bit hashes: the map never holds the text it was keyed by.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

struct Slot<V> {
    value: V,
    /// Position in the use order (larger = used later).
    seq: u64,
    /// When it was last used.
    at: Duration,
}

/// The map. `V` is small (a shared session id and a hash or two).
pub struct Lru<V> {
    slots: HashMap<u64, Slot<V>>,
    /// Use order: seq -> key. The first entry is the least recently used.
    order: BTreeMap<u64, u64>,
    next_seq: u64,
    cap: usize,
    ttl: Duration,
}

impl<V> Lru<V> {
    /// An empty map holding at most `cap` entries (at least one), each for
    /// `ttl` after its last use.
    pub fn new(cap: usize, ttl: Duration) -> Self {
        Lru {
            slots: HashMap::new(),
            order: BTreeMap::new(),
            next_seq: 0,
            cap: cap.max(1),
            ttl,
        }
    }

    /// How many entries it holds (expired ones not yet dropped included).
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether it holds nothing.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// The live entry for `key`, marked used at `now`; an expired one is dropped.
    pub fn get_mut(&mut self, key: u64, now: Duration) -> Option<&mut V> {
        let expired = self.slots.get(&key).map(|s| self.is_expired(s.at, now))?;
        if expired {
            self.remove(key);
            return None;
        }
        let seq = self.bump();
        let slot = self.slots.get_mut(&key)?;
        self.order.remove(&slot.seq);
        self.order.insert(seq, key);
        slot.seq = seq;
        slot.at = slot.at.max(now);
        Some(&mut slot.value)
    }

    /// Sets `key` to `value`, used at `now`; drops expired entries from the
    /// old end, then the least recently used ones beyond the cap.
    pub fn insert(&mut self, key: u64, value: V, now: Duration) {
        self.remove(key);
        let seq = self.bump();
        self.order.insert(seq, key);
        self.slots.insert(
            key,
            Slot {
                value,
                seq,
                at: now,
            },
        );
        self.drop_old(now);
    }

    fn drop_old(&mut self, now: Duration) {
        while let Some((_, &key)) = self.order.first_key_value() {
            let at = self.slots.get(&key).map_or(now, |s| s.at);
            if self.slots.len() > self.cap || self.is_expired(at, now) {
                self.remove(key);
            } else {
                break;
            }
        }
    }

    fn remove(&mut self, key: u64) {
        if let Some(slot) = self.slots.remove(&key) {
            self.order.remove(&slot.seq);
        }
    }

    fn bump(&mut self) -> u64 {
        self.next_seq += 1;
        self.next_seq
    }

    fn is_expired(&self, at: Duration, now: Duration) -> bool {
        now.saturating_sub(at) >= self.ttl
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TTL: Duration = Duration::from_secs(60);

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    #[test]
    fn the_least_recently_used_entry_goes_first_when_full() {
        let mut m = Lru::new(2, TTL);
        m.insert(1, "a", secs(0));
        m.insert(2, "b", secs(1));
        assert_eq!(m.get_mut(1, secs(2)).copied(), Some("a")); // 2 is now the oldest
        m.insert(3, "c", secs(3));
        assert_eq!(m.len(), 2);
        assert_eq!(m.get_mut(2, secs(4)), None);
        assert_eq!(m.get_mut(1, secs(4)).copied(), Some("a"));
        assert_eq!(m.get_mut(3, secs(4)).copied(), Some("c"));
    }

    #[test]
    fn an_entry_idle_for_the_ttl_is_gone_and_use_keeps_it_alive() {
        let mut m = Lru::new(10, TTL);
        m.insert(1, "a", secs(0));
        m.insert(2, "b", secs(0));
        assert!(m.get_mut(1, secs(59)).is_some());
        assert!(
            m.get_mut(1, secs(118)).is_some(),
            "used at 59 s: alive until 119 s"
        );
        assert_eq!(m.get_mut(2, secs(60)), None);
        assert_eq!(m.get_mut(1, secs(178)), None);
        assert!(m.is_empty());
    }

    #[test]
    fn inserting_drops_expired_entries_from_the_old_end() {
        let mut m = Lru::new(10, TTL);
        for k in 0..5 {
            m.insert(k, k, secs(k));
        }
        m.insert(99, 99, secs(62)); // 0, 1 and 2 are idle for >= 60 s
        assert_eq!(m.len(), 3);
    }
}
