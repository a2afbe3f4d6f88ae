//! A sink's answer as data: what one attempt at a batch came to ([`Attempt`],
//! [`Verdict`]), and the default classification of an HTTP status. The
//! pipeline's retry loop ([`crate::pipeline::retry`]) acts on it.

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

    /// The destination has no place for what was sent (e.g. feedback to a
    /// plain OTLP backend): not retried, not dead-lettered as a failure.
    pub fn unsupported(what: &str, kind: &str) -> Self {
        Attempt {
            verdict: Verdict::DontRetry,
            reason: format!("a {kind} sink cannot take {what}"),
            class: "unsupported",
        }
    }

    /// Classifies an HTTP answer with `verdict`; `what` names the call for
    /// the reason, which quotes at most 300 characters of the body.
    pub fn from_answer(verdict: Verdict, status: u16, body: &[u8], what: &str) -> Self {
        let text = String::from_utf8_lossy(body);
        let snippet: String = text.chars().take(300).collect();
        let class = match status {
            408 => "http_408",
            429 => "http_429",
            500..=599 => "http_5xx",
            200..=299 => "",
            _ => "http_4xx",
        };
        Attempt {
            verdict,
            reason: match verdict {
                Verdict::Success => String::new(),
                _ => format!("{what}: HTTP {status}: {snippet}"),
            },
            class,
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
}
