//! `[feedback]`: bounds of user feedback (`POST /llmtap/v1/feedback`,
//! [`crate::feedback`]): how much may wait for delivery per sink, and how
//! long an assessment for a trace the sink does not know yet is retried.

use std::time::Duration;

use super::{count_max, duration_max, mem_bytes_max, Layers, DAY, GIB};

/// Limits of the feedback each sink holds until it is delivered.
#[derive(Debug, Clone, PartialEq)]
pub struct FeedbackSettings {
    /// Feedback items waiting per sink; past it new feedback is answered 503.
    pub max_pending: usize,
    /// Their bytes (as stored) per sink; past it new feedback is answered 503.
    pub max_pending_bytes: usize,
    /// How long after the sink first answers "no such trace" (404) the
    /// feedback is still retried (its trace may still be in the spool);
    /// then it goes to the dead-letter file.
    pub max_wait: Duration,
}

impl Default for FeedbackSettings {
    fn default() -> Self {
        FeedbackSettings {
            max_pending: 10_000,
            max_pending_bytes: 16 << 20,
            max_wait: Duration::from_secs(15 * 60),
        }
    }
}

/// Reads the three settings (env over file over default).
pub(super) fn resolve(l: &mut Layers<'_>) -> FeedbackSettings {
    let d = FeedbackSettings::default();
    FeedbackSettings {
        max_pending: l.parsed(
            Some("LLMTAP_FEEDBACK_MAX_PENDING"),
            ("feedback", "max_pending"),
            d.max_pending,
            count_max(1_000_000),
        ),
        max_pending_bytes: l.parsed(
            Some("LLMTAP_FEEDBACK_MAX_PENDING_BYTES"),
            ("feedback", "max_pending_bytes"),
            d.max_pending_bytes,
            mem_bytes_max(4 * GIB),
        ),
        max_wait: l.parsed(
            Some("LLMTAP_FEEDBACK_MAX_WAIT"),
            ("feedback", "max_wait"),
            d.max_wait,
            duration_max(7 * DAY),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn resolve_with(env: &[(&str, &str)], file: &str) -> (FeedbackSettings, Vec<String>) {
        crate::config::layers::resolve_in(env, file, resolve)
    }

    #[test]
    fn defaults_file_and_env() {
        let (s, e) = resolve_with(&[], "");
        assert!(e.is_empty());
        assert_eq!(s, FeedbackSettings::default());
        let (s, e) = resolve_with(
            &[("LLMTAP_FEEDBACK_MAX_WAIT", "3s")],
            "[feedback]\nmax_pending = 5\nmax_pending_bytes = \"1MiB\"\nmax_wait = \"1m\"\n",
        );
        assert!(e.is_empty(), "{e:?}");
        assert_eq!(s.max_pending, 5);
        assert_eq!(s.max_pending_bytes, 1 << 20);
        assert_eq!(s.max_wait, Duration::from_secs(3));
    }

    #[test]
    fn bad_values_name_the_setting() {
        let (_, e) = resolve_with(&[("LLMTAP_FEEDBACK_MAX_PENDING", "0")], "");
        assert!(e[0].contains("LLMTAP_FEEDBACK_MAX_PENDING"), "{e:?}");
        let (_, e) = resolve_with(&[], "[feedback]\nmax_wait = \"soon\"\n");
        assert!(e[0].contains("max_wait"), "{e:?}");
    }
}
