//! What a batch came to, from what each of its traces came to: delivered
//! when all were; else retried (with the longest `Retry-After` any trace
//! got) when any failure may pass; else refused for good.

use crate::sinks::{Attempt, Verdict};

pub fn combine(results: &[Attempt]) -> Attempt {
    let failed: Vec<&Attempt> = results
        .iter()
        .filter(|a| a.verdict != Verdict::Success)
        .collect();
    let Some(first) = failed.first() else {
        return Attempt::ok();
    };
    let retry = failed
        .iter()
        .filter(|a| matches!(a.verdict, Verdict::Retry { .. }))
        .max_by_key(|a| match a.verdict {
            Verdict::Retry { after } => after,
            _ => None,
        });
    let pick = retry.unwrap_or(first);
    let mut out = (*pick).clone();
    if results.len() > 1 {
        out.reason = format!(
            "{} of {} traces not delivered; {}",
            failed.len(),
            results.len(),
            pick.reason
        );
    }
    if out.verdict == Verdict::Split {
        // Splitting the batch cannot shrink one trace's document.
        out.verdict = Verdict::DontRetry;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn retry(secs: u64) -> Attempt {
        Attempt::from_answer(
            Verdict::Retry {
                after: Some(Duration::from_secs(secs)),
            },
            429,
            b"slow down",
            "creating the trace",
        )
    }

    #[test]
    fn all_delivered_is_success() {
        assert_eq!(combine(&[Attempt::ok(), Attempt::ok()]), Attempt::ok());
        assert_eq!(combine(&[]), Attempt::ok());
    }

    #[test]
    fn a_transient_failure_retries_the_batch_with_the_longest_hint() {
        let a = combine(&[Attempt::ok(), retry(2), Attempt::permanent("bad"), retry(7)]);
        assert_eq!(
            a.verdict,
            Verdict::Retry {
                after: Some(Duration::from_secs(7))
            }
        );
        assert_eq!(a.class, "http_429");
        assert!(
            a.reason.starts_with("3 of 4 traces not delivered"),
            "{}",
            a.reason
        );
    }

    #[test]
    fn only_permanent_failures_refuse_the_batch() {
        let a = combine(&[Attempt::ok(), Attempt::permanent("bad trace")]);
        assert_eq!(a.verdict, Verdict::DontRetry);
        let split = Attempt::from_answer(Verdict::Split, 413, b"too large", "upload");
        assert_eq!(combine(&[split]).verdict, Verdict::DontRetry);
    }
}
