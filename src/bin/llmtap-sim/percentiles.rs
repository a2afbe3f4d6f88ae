//! Latency samples: a uniform sample of at most `cap` values (reservoir
//! sampling, so memory stays bounded however long the run) plus the exact
//! maximum; percentiles by nearest rank over the sorted sample.

use serde_json::{json, Value};

#[derive(Debug, Clone)]
pub struct Samples {
    values: Vec<u64>,
    seen: u64,
    cap: usize,
    max: u64,
}

impl Samples {
    pub fn new(cap: usize) -> Samples {
        Samples {
            values: Vec::new(),
            seen: 0,
            cap: cap.max(1),
            max: 0,
        }
    }

    pub fn record(&mut self, v: u64) {
        self.seen += 1;
        self.max = self.max.max(v);
        if self.values.len() < self.cap {
            self.values.push(v);
        } else {
            let slot = fastrand::u64(0..self.seen);
            if (slot as usize) < self.cap {
                self.values[slot as usize] = v;
            }
        }
    }

    /// Adds another worker's sample (each a fair sample of its own streams).
    pub fn merge(&mut self, other: Samples) {
        self.seen += other.seen;
        self.max = self.max.max(other.max);
        self.values.extend(other.values);
    }

    /// `{"p50","p99","p999","max"}` in the recorded unit; nulls when empty.
    pub fn summary(mut self) -> Value {
        if self.values.is_empty() {
            return json!({"p50": null, "p99": null, "p999": null, "max": null});
        }
        self.values.sort_unstable();
        let at = |q: f64| {
            let rank = (q * self.values.len() as f64).ceil() as usize;
            self.values[rank.clamp(1, self.values.len()) - 1]
        };
        json!({"p50": at(0.5), "p99": at(0.99), "p999": at(0.999), "max": self.max})
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_percentiles_and_exact_max() {
        let mut s = Samples::new(10_000);
        for v in 1..=1000 {
            s.record(v);
        }
        assert_eq!(
            s.summary(),
            json!({"p50": 500, "p99": 990, "p999": 999, "max": 1000})
        );
        assert_eq!(Samples::new(3).summary()["p50"], Value::Null);
    }

    #[test]
    fn the_sample_stays_bounded_and_keeps_the_max() {
        let mut s = Samples::new(100);
        for v in 0..100_000 {
            s.record(v % 1000);
        }
        s.record(5_000);
        assert_eq!(s.values.len(), 100);
        let summary = s.summary();
        assert_eq!(summary["max"], 5_000);
        let p50 = summary["p50"].as_u64().unwrap();
        assert!((200..800).contains(&p50), "{p50}");
    }
}
