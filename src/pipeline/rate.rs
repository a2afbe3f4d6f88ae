//! A per-sink rate limit in traces per second (a token bucket): the batcher
//! waits for tokens before it sends, so a burst far above what the tracking
//! server may ingest (Databricks allows 50–200 trace creations per second
//! per workspace) drains at the allowed rate instead of being refused.

use std::time::Duration;

use tokio::time::Instant;

/// Token bucket; `burst` tokens at most, refilled at `rate` per second.
#[derive(Debug)]
pub struct RateLimit {
    rate: f64,
    burst: f64,
    tokens: f64,
    at: Instant,
}

impl RateLimit {
    /// `per_second` traces, with a burst of one second's worth.
    pub fn new(per_second: f64) -> Self {
        let rate = per_second.max(0.001);
        RateLimit {
            rate,
            burst: rate.max(1.0),
            tokens: rate.max(1.0),
            at: Instant::now(),
        }
    }

    /// The most traces that may go at once.
    pub fn burst(&self) -> usize {
        self.burst as usize
    }

    fn refill(&mut self) {
        let now = Instant::now();
        let add = now.saturating_duration_since(self.at).as_secs_f64() * self.rate;
        self.tokens = (self.tokens + add).min(self.burst);
        self.at = now;
    }

    /// How long to wait before `n` traces may go (zero if now), taking them.
    /// A batch larger than the burst waits for its whole cost.
    pub fn reserve(&mut self, n: usize) -> Duration {
        self.refill();
        self.tokens -= n as f64;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::from_secs_f64(-self.tokens / self.rate)
        }
    }

    /// Waits until `n` traces may go.
    pub async fn acquire(&mut self, n: usize) {
        let wait = self.reserve(n);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_burst_drains_at_the_rate() {
        let mut r = RateLimit::new(50.0);
        let start = Instant::now();
        // 500 traces in batches of 10: the first 50 go at once, the rest at 50/s.
        for _ in 0..50 {
            r.acquire(10).await;
        }
        let took = start.elapsed().as_secs_f64();
        assert!((8.9..=9.1).contains(&took), "{took}");
    }

    #[tokio::test(start_paused = true)]
    async fn idle_time_refills_up_to_the_burst_only() {
        let mut r = RateLimit::new(10.0);
        assert_eq!(r.reserve(10), Duration::ZERO);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert_eq!(r.reserve(10), Duration::ZERO);
        assert_eq!(r.reserve(5), Duration::from_millis(500));
    }
}
