//! The pipeline's retry timing: how long to wait before the next attempt at a
//! batch. What an attempt came to is the sink's to say
//! ([`crate::sinks::Attempt`]).

use std::time::Duration;

/// Jittered exponential backoff: attempt `n` (0-based) waits a random time in
/// `[d/2, d]` where `d = min(initial * 2^n, max)`; a server hint is a floor.
pub fn backoff(initial: Duration, max: Duration, attempt: u32, hint: Option<Duration>) -> Duration {
    let exp = initial.saturating_mul(1u32 << attempt.min(20));
    let capped = exp.min(max);
    let half = capped / 2;
    let jitter = half.mul_f64(fastrand::f64());
    let wait = half + jitter;
    match hint {
        Some(h) => wait.max(h),
        None => wait,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let (i, m) = (Duration::from_millis(100), Duration::from_secs(2));
        for attempt in 0..10 {
            let d = backoff(i, m, attempt, None);
            let full = (i * (1 << attempt)).min(m);
            assert!(d >= full / 2 && d <= full, "attempt {attempt}: {d:?}");
        }
        let hinted = backoff(i, m, 0, Some(Duration::from_secs(5)));
        assert_eq!(hinted, Duration::from_secs(5));
    }
}
