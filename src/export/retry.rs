//! Retry policy as data: what a sink's answer means ([`Attempt`], [`Verdict`]), and how long to wait.

use std::time::Duration;

/// What to do with a batch after one attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Accepted by the sink.
    Success,
    /// A transient failure: try again later, honouring the server's hint if any.
    Retry { after: Option<Duration> },
    /// The batch is too large for the sink (413): send it in halves.
    Split,
    /// The sink refused the batch for good (a bad request, an unknown
    /// experiment): it goes to the dead-letter file with the reason.
    DontRetry,
}

/// Classifies an HTTP answer from the sink.
pub fn classify(status: u16, retry_after: Option<&str>) -> Verdict {
    match status {
        200..=299 => Verdict::Success,
        408 | 429 | 500..=599 => Verdict::Retry {
            after: retry_after.and_then(parse_retry_after),
        },
        413 => Verdict::Split,
        _ => Verdict::DontRetry,
    }
}

/// `Retry-After` as delay-seconds (an HTTP date is treated as no hint).
fn parse_retry_after(v: &str) -> Option<Duration> {
    v.trim()
        .parse::<u64>()
        .ok()
        .map(|s| Duration::from_secs(s.min(3600)))
}

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

/// The result of one export attempt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Attempt {
    pub verdict: Verdict,
    /// Why it failed (empty on success).
    pub reason: String,
    /// The kind of failure, for the retries-by-reason metric: `connect`,
    /// `timeout`, `io`, `http_408`, `http_429`, `http_5xx`, `http_4xx`.
    pub class: &'static str,
}

impl Attempt {
    pub fn ok() -> Self {
        Attempt {
            verdict: Verdict::Success,
            reason: String::new(),
            class: "",
        }
    }

    /// A transport failure: no answer came back (`timeout` when the reason
    /// says the time ran out, else `connect`).
    pub fn transient(reason: impl Into<String>) -> Self {
        let reason = reason.into();
        let class = if reason.contains("no answer within") || reason.contains("timed out") {
            "timeout"
        } else {
            "connect"
        };
        Attempt {
            verdict: Verdict::Retry { after: None },
            reason,
            class,
        }
    }

    /// A local I/O failure (the file sink).
    pub fn io(reason: impl Into<String>) -> Self {
        Attempt {
            class: "io",
            ..Attempt::transient(reason)
        }
    }

    pub fn permanent(reason: impl Into<String>) -> Self {
        Attempt {
            verdict: Verdict::DontRetry,
            reason: reason.into(),
            class: "local",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn success_statuses() {
        assert_eq!(classify(200, None), Verdict::Success);
        assert_eq!(classify(204, None), Verdict::Success);
    }

    #[test]
    fn transient_statuses_retry() {
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(matches!(classify(s, None), Verdict::Retry { .. }), "{s}");
        }
        assert_eq!(
            classify(429, Some("7")),
            Verdict::Retry {
                after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(
            classify(503, Some("Wed, 21 Oct 2026 07:28:00 GMT")),
            Verdict::Retry { after: None }
        );
    }

    #[test]
    fn client_errors_do_not_retry() {
        assert_eq!(classify(413, None), Verdict::Split);
        for s in [400, 401, 403, 404, 422, 501] {
            let v = classify(s, None);
            if s == 501 {
                // 501 is a 5xx: retried (a file-store server answers it; the
                // operator may fix the server), bounded by max_attempts.
                assert!(matches!(v, Verdict::Retry { .. }));
            } else {
                assert_eq!(v, Verdict::DontRetry, "{s}");
            }
        }
    }

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
