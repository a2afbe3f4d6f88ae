//! Sampling: which calls are traced when `privacy.sample` is below 1.
//!
//! The draw is made when the call starts; the decision when it ends, before
//! anything is written: a call drawn out is still traced when it failed
//! (status 400 or more, llmtap's own 502/504) or its response body did not
//! complete (an upstream error mid-stream, or a client that hung up), so
//! errors are always kept. A call drawn out and fine is never submitted to
//! the pipeline: nothing of it reaches the disk or a sink.

use crate::tee::BodyEnd;

/// The draw for one call: true (traced) with probability `ratio`.
pub fn draw(ratio: f64) -> bool {
    ratio >= 1.0 || (ratio > 0.0 && fastrand::f64() < ratio)
}

/// [`draw`] with a given generator (tests seed it).
pub fn draw_with(rng: &mut fastrand::Rng, ratio: f64) -> bool {
    ratio >= 1.0 || (ratio > 0.0 && rng.f64() < ratio)
}

/// Whether a call ending with `status` and `end` is traced.
pub fn keep(drawn: bool, status: u16, end: &BodyEnd) -> bool {
    drawn || status >= 400 || *end != BodyEnd::Complete
}

/// `0` to `1`, the share of calls traced.
pub fn parse_ratio(s: &str) -> Result<f64, String> {
    match s.trim().parse::<f64>() {
        Ok(f) if (0.0..=1.0).contains(&f) => Ok(f),
        _ => Err(format!("expected a ratio between 0 and 1, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ratio_is_respected() {
        let mut rng = fastrand::Rng::with_seed(7);
        let n = 10_000;
        let kept = (0..n).filter(|_| draw_with(&mut rng, 0.1)).count();
        assert!((800..1200).contains(&kept), "{kept}");
        assert!((0..1000).all(|_| draw_with(&mut rng, 1.0)));
        assert!((0..1000).all(|_| !draw_with(&mut rng, 0.0)));
    }

    #[test]
    fn errors_and_broken_streams_are_always_kept() {
        assert!(!keep(false, 200, &BodyEnd::Complete));
        assert!(keep(true, 200, &BodyEnd::Complete));
        assert!(keep(false, 500, &BodyEnd::Complete));
        assert!(keep(false, 429, &BodyEnd::Complete));
        assert!(keep(false, 200, &BodyEnd::Cancelled));
        assert!(keep(false, 200, &BodyEnd::Error("reset".into())));
    }

    #[test]
    fn ratios_outside_zero_to_one_are_refused() {
        assert_eq!(parse_ratio("0.25"), Ok(0.25));
        assert_eq!(parse_ratio("0"), Ok(0.0));
        assert_eq!(parse_ratio("1"), Ok(1.0));
        for bad in ["1.5", "-0.1", "half", "NaN"] {
            assert!(parse_ratio(bad).is_err(), "{bad}");
        }
    }
}
