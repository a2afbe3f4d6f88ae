//! The trace ids this sink delivered lately (a bounded set): when the
//! pipeline re-sends a batch because some of its traces failed, the ones
//! that went through are not sent again. Forgetting one is harmless (it is
//! re-sent, and Databricks replaces it); the bound keeps memory flat.

use std::collections::{HashSet, VecDeque};
use std::sync::Mutex;

pub struct Delivered {
    cap: usize,
    inner: Mutex<(HashSet<String>, VecDeque<String>)>,
}

impl Delivered {
    pub fn new(cap: usize) -> Self {
        Delivered {
            cap: cap.max(1),
            inner: Mutex::new((HashSet::new(), VecDeque::new())),
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.inner
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .0
            .contains(id)
    }

    /// Remembers `id`, forgetting the oldest beyond the bound.
    pub fn insert(&self, id: String) {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        if !g.0.insert(id.clone()) {
            return;
        }
        g.1.push_back(id);
        while g.1.len() > self.cap {
            if let Some(old) = g.1.pop_front() {
                g.0.remove(&old);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_up_to_its_bound() {
        let d = Delivered::new(2);
        d.insert("a".into());
        d.insert("b".into());
        d.insert("a".into());
        assert!(d.contains("a") && d.contains("b"));
        d.insert("c".into());
        assert!(!d.contains("a"), "the oldest is forgotten");
        assert!(d.contains("b") && d.contains("c"));
    }
}
