//! One sink's pending feedback (pure): the items, their caps by count and
//! bytes, when each is due, and what one delivery attempt came to
//! ([`decide`]): done, try again at some time, or dead-letter.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::body::Record;
use crate::pipeline::retry::backoff;
use crate::sinks::{Attempt, Verdict};

/// A piece of feedback waiting for one sink. It is held as stored (its
/// JSON), so what the queue holds is what `max_pending_bytes` counts; the
/// [`Record`] is parsed again for each attempt.
#[derive(Debug, Clone)]
pub struct Item {
    /// Its file name in the sink's feedback directory (also its identity).
    pub file: String,
    pub trace_id: String,
    /// The stored [`Record`], shared by every sink's copy.
    pub json: Arc<[u8]>,
    /// Attempts that failed so far.
    pub failures: u32,
    pub due: Instant,
    /// When the sink first answered that it has no such trace.
    pub first_not_found: Option<Instant>,
}

impl Item {
    /// A new item, due now.
    pub fn new(file: String, trace_id: String, json: Arc<[u8]>) -> Item {
        Item {
            file,
            trace_id,
            json,
            failures: 0,
            due: Instant::now(),
            first_not_found: None,
        }
    }

    /// Its size against `max_pending_bytes`.
    pub fn bytes(&self) -> usize {
        self.json.len()
    }

    /// The record (the JSON was checked when stored or read back).
    pub fn record(&self) -> Result<Record, String> {
        serde_json::from_slice(&self.json).map_err(|e| format!("not a feedback item: {e}"))
    }
}

/// The items and their caps. An item being attempted is out of `items` but
/// still counted (`count`, `bytes`) until [`Queue::finish`] or
/// [`Queue::retry`].
#[derive(Debug)]
pub struct Queue {
    items: Vec<Item>,
    count: usize,
    bytes: usize,
    max_items: usize,
    max_bytes: usize,
}

impl Queue {
    pub fn new(max_items: usize, max_bytes: usize) -> Queue {
        Queue {
            items: Vec::new(),
            count: 0,
            bytes: 0,
            max_items,
            max_bytes,
        }
    }

    /// Whether one more item of `bytes` fits.
    pub fn has_room(&self, bytes: usize) -> bool {
        self.count < self.max_items && self.bytes.saturating_add(bytes) <= self.max_bytes
    }

    /// Adds an item (found at start, or accepted: the caps were checked then).
    pub fn push(&mut self, item: Item) {
        self.count += 1;
        self.bytes = self.bytes.saturating_add(item.bytes());
        self.items.push(item);
    }

    /// Puts back an item taken by [`Queue::take_due`] (still counted).
    pub fn retry(&mut self, item: Item) {
        self.items.push(item);
    }

    /// Forgets an item taken by [`Queue::take_due`]: delivered or given up.
    pub fn finish(&mut self, item: &Item) {
        self.count = self.count.saturating_sub(1);
        self.bytes = self.bytes.saturating_sub(item.bytes());
    }

    /// Items pending, those being attempted included.
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// The item due first: taken out when it is due at `now` (it stays
    /// counted), else how long until it is. `None` when none waits.
    pub fn take_due(&mut self, now: Instant) -> Option<Result<Item, Duration>> {
        let (i, first) = self.items.iter().enumerate().min_by_key(|(_, it)| it.due)?;
        if first.due > now {
            return Some(Err(first.due - now));
        }
        Some(Ok(self.items.swap_remove(i)))
    }
}

/// What to do with an item after one attempt.
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Delivered.
    Delivered,
    /// The sink has no place for feedback.
    Unsupported,
    /// Try again then.
    Retry(Instant),
    /// Give up: to the dead-letter file with this reason.
    DeadLetter(String),
}

/// Retry timing and the not-found window.
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub initial: Duration,
    pub max: Duration,
    /// How long "no such trace" answers are retried.
    pub max_wait: Duration,
}

/// Whether an attempt's answer says the sink has no such trace (yet): MLflow
/// and Databricks answer 404 `RESOURCE_DOES_NOT_EXIST`.
pub fn not_found(a: &Attempt) -> bool {
    a.reason.contains("HTTP 404") || a.reason.contains("RESOURCE_DOES_NOT_EXIST")
}

/// What an attempt came to for `item` (whose `failures` and
/// `first_not_found` it updates). A transient failure is retried without
/// limit (the item is on disk); "no such trace" is retried for
/// `max_wait` from its first answer (the trace may still be in the spool);
/// any other refusal is final.
pub fn decide(item: &mut Item, a: &Attempt, now: Instant, t: Timing) -> Decision {
    let again = |item: &mut Item, hint| {
        let wait = backoff(t.initial, t.max, item.failures, hint);
        item.failures = item.failures.saturating_add(1);
        Decision::Retry(now + wait)
    };
    match a.verdict {
        Verdict::Success => Decision::Delivered,
        Verdict::Retry { after } => again(item, after),
        _ if a.class == "unsupported" => Decision::Unsupported,
        Verdict::DontRetry if not_found(a) => {
            let first = *item.first_not_found.get_or_insert(now);
            if now.duration_since(first) >= t.max_wait {
                Decision::DeadLetter(format!(
                    "the sink still had no trace {} after {:?}: {}",
                    item.trace_id, t.max_wait, a.reason
                ))
            } else {
                again(item, None)
            }
        }
        Verdict::DontRetry | Verdict::Split => Decision::DeadLetter(a.reason.clone()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(file: &str, bytes: usize, due: Instant) -> Item {
        let mut it = Item::new(file.into(), "tr-1".into(), vec![b' '; bytes].into());
        it.due = due;
        it
    }

    const T: Timing = Timing {
        initial: Duration::from_millis(100),
        max: Duration::from_secs(1),
        max_wait: Duration::from_secs(10),
    };

    #[test]
    fn caps_and_due_order() {
        let now = Instant::now();
        let mut q = Queue::new(2, 100);
        assert!(q.take_due(now).is_none());
        assert!(q.has_room(100) && !q.has_room(101));
        q.push(item("late", 60, now + Duration::from_secs(5)));
        q.push(item("now", 30, now));
        assert!(!q.has_room(11), "bytes cap");
        assert!(q.has_room(10) || q.len() == 2);
        assert!(!q.has_room(1), "count cap");
        let taken = q.take_due(now).unwrap().unwrap();
        assert_eq!(taken.file, "now");
        assert_eq!(
            q.take_due(now).unwrap().unwrap_err(),
            Duration::from_secs(5)
        );
        assert!(!q.has_room(1), "an item being attempted still counts");
        q.retry(taken.clone());
        assert_eq!(q.len(), 2);
        assert_eq!(q.take_due(now).unwrap().unwrap().file, "now");
        q.finish(&taken);
        assert_eq!(q.len(), 1);
        assert!(q.has_room(40) && !q.has_room(41));
    }

    #[test]
    fn success_transient_and_refusals() {
        let now = Instant::now();
        let mut it = item("a", 1, now);
        assert_eq!(decide(&mut it, &Attempt::ok(), now, T), Decision::Delivered);
        let down = Attempt::transient("connection refused");
        assert!(matches!(decide(&mut it, &down, now, T), Decision::Retry(at) if at > now));
        assert_eq!(it.failures, 1);
        let bad = Attempt::from_answer(
            Verdict::DontRetry,
            400,
            b"bad value",
            "logging an assessment",
        );
        assert!(
            matches!(decide(&mut it, &bad, now, T), Decision::DeadLetter(r) if r.contains("HTTP 400"))
        );
        let u = Attempt::unsupported("assessments", "otlp");
        assert_eq!(decide(&mut it, &u, now, T), Decision::Unsupported);
    }

    #[test]
    fn not_found_is_retried_for_max_wait_from_the_first_answer() {
        let start = Instant::now();
        let mut it = item("a", 1, start);
        let nf = Attempt::from_answer(
            Verdict::DontRetry,
            404,
            br#"{"error_code": "RESOURCE_DOES_NOT_EXIST"}"#,
            "logging an assessment",
        );
        assert!(not_found(&nf));
        assert!(matches!(decide(&mut it, &nf, start, T), Decision::Retry(_)));
        let later = start + Duration::from_secs(9);
        assert!(matches!(decide(&mut it, &nf, later, T), Decision::Retry(_)));
        let past = start + Duration::from_secs(10);
        match decide(&mut it, &nf, past, T) {
            Decision::DeadLetter(r) => assert!(r.contains("still had no trace"), "{r}"),
            d => panic!("{d:?}"),
        }
    }
}
