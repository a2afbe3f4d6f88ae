//! What a batch came to, from what each of its traces came to: delivered
//! when all were; else retried (with the longest `Retry-After` any trace
//! got) when any failure may pass; else refused for good.
//!
//! [`run`] sends a batch's traces a few at a time and stops starting new
//! ones after a transient failure (a workspace that is down, slow or
//! throttling would only fail them too, each after the full time limit): a
//! batch's attempt then lasts about one round of calls, and the pipeline
//! sends it again later.

use std::sync::atomic::{AtomicBool, Ordering};

use futures_util::StreamExt;

use crate::sinks::{Attempt, SinkFuture, Verdict};

/// Runs `sends`, `max_in_flight` at a time, and combines their attempts.
pub async fn run(sends: Vec<SinkFuture<'_, Attempt>>, max_in_flight: usize) -> Attempt {
    let stop = AtomicBool::new(false);
    let stop = &stop;
    let guarded: Vec<SinkFuture<'_, Attempt>> = sends
        .into_iter()
        .map(|send| {
            Box::pin(async move {
                if stop.load(Ordering::Relaxed) {
                    return Attempt::transient("not sent: an earlier trace of the batch failed");
                }
                let a = send.await;
                if matches!(a.verdict, Verdict::Retry { .. }) {
                    stop.store(true, Ordering::Relaxed);
                }
                a
            }) as SinkFuture<'_, Attempt>
        })
        .collect();
    let results: Vec<Attempt> = futures_util::stream::iter(guarded)
        .buffer_unordered(max_in_flight.max(1))
        .collect()
        .await;
    combine(&results)
}

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
    // A trace skipped after a failure carries no hint; prefer a real one.
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

    #[tokio::test]
    async fn after_a_transient_failure_no_new_trace_is_started() {
        use std::sync::atomic::AtomicUsize;
        let started = AtomicUsize::new(0);
        let started = &started;
        let sends: Vec<SinkFuture<'_, Attempt>> = (0..5)
            .map(|i| {
                Box::pin(async move {
                    started.fetch_add(1, Ordering::Relaxed);
                    if i == 0 {
                        retry(3)
                    } else {
                        Attempt::ok()
                    }
                }) as SinkFuture<'_, Attempt>
            })
            .collect();
        let a = run(sends, 1).await;
        assert_eq!(
            started.load(Ordering::Relaxed),
            1,
            "one at a time: the rest never start"
        );
        assert_eq!(
            a.verdict,
            Verdict::Retry {
                after: Some(Duration::from_secs(3))
            }
        );
        assert!(
            a.reason.starts_with("5 of 5 traces not delivered"),
            "{}",
            a.reason
        );
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
