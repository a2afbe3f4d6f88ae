//! The range of every numeric setting. Each setting states its maximum once,
//! at its call site in [`super::resolve`], by wrapping its parser in one of
//! these: a value past the maximum is an error that says what the maximum is
//! (reported under the field's name like any other bad value), so a typo such
//! as `max_body_bytes = "100GiB"` is caught at start, not at the first call.
//!
//! The maxima are generous — well past anything a sidecar needs — and only
//! there to refuse values that would exhaust memory or disk, or make a
//! timeout meaningless.

use std::time::Duration;

use super::layers::{parse_bytes, parse_count, parse_duration, parse_duration_opt};

pub const KIB: u64 = 1 << 10;
pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
pub const TIB: u64 = 1 << 40;

pub const MINUTE: Duration = Duration::from_secs(60);
pub const HOUR: Duration = Duration::from_secs(3600);
pub const DAY: Duration = Duration::from_secs(24 * 3600);

/// `value` (as written) checked against `max` (as shown).
fn within<T: PartialOrd>(value: T, max: T, written: &str, shown: String) -> Result<T, String> {
    if value > max {
        Err(format!(
            "{:?} is above the maximum of {shown}",
            written.trim()
        ))
    } else {
        Ok(value)
    }
}

/// A byte size (see [`parse_bytes`]) of at most `max`.
pub fn bytes_max(max: u64) -> impl Fn(&str) -> Result<u64, String> {
    move |s| within(parse_bytes(s)?, max, s, show_bytes(max))
}

/// A byte size of at most `max`, as a `usize` (an in-memory bound).
pub fn mem_bytes_max(max: u64) -> impl Fn(&str) -> Result<usize, String> {
    let bytes = bytes_max(max);
    move |s| {
        let n = bytes(s)?;
        usize::try_from(n).map_err(|_| format!("{:?} is too large for this machine", s.trim()))
    }
}

/// A count of at least 1 and at most `max`.
pub fn count_max(max: usize) -> impl Fn(&str) -> Result<usize, String> {
    move |s| within(parse_count(s)?, max, s, max.to_string())
}

/// A duration greater than zero and at most `max`.
pub fn duration_max(max: Duration) -> impl Fn(&str) -> Result<Duration, String> {
    move |s| within(parse_duration(s)?, max, s, show_duration(max))
}

/// A duration of at most `max`, or none (`0`, `none`, `off`: no limit).
pub fn duration_opt_max(max: Duration) -> impl Fn(&str) -> Result<Option<Duration>, String> {
    move |s| match parse_duration_opt(s)? {
        None => Ok(None),
        Some(d) => within(d, max, s, show_duration(max)).map(Some),
    }
}

/// A positive number of at most `max`, or none (`0`, `none`: no limit).
pub fn rate_max(max: f64) -> impl Fn(&str) -> Result<Option<f64>, String> {
    move |s| match s.trim() {
        "none" | "0" | "" => Ok(None),
        v => match v.parse::<f64>() {
            Ok(f) if f > 0.0 && f.is_finite() => within(f, max, s, max.to_string()).map(Some),
            _ => Err(format!("not a positive number: {v:?}")),
        },
    }
}

/// `1GiB`, `16TiB`, `4096 bytes`: the largest unit that divides `n`.
pub fn show_bytes(n: u64) -> String {
    for (unit, size) in [("TiB", TIB), ("GiB", GIB), ("MiB", MIB), ("KiB", KIB)] {
        if n >= size && n.is_multiple_of(size) {
            return format!("{}{unit}", n / size);
        }
    }
    format!("{n} bytes")
}

/// `24h`, `10m`, `30s`, `250ms`: the largest unit that divides `d`.
pub fn show_duration(d: Duration) -> String {
    let ms = d.as_millis();
    for (unit, size) in [("h", 3_600_000), ("m", 60_000), ("s", 1_000)] {
        if ms >= size && ms.is_multiple_of(size) {
            return format!("{}{unit}", ms / size);
        }
    }
    format!("{ms}ms")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shown_in_the_largest_whole_unit() {
        assert_eq!(show_bytes(GIB), "1GiB");
        assert_eq!(show_bytes(16 * TIB), "16TiB");
        assert_eq!(show_bytes(1536 * KIB), "1536KiB");
        assert_eq!(show_bytes(1000), "1000 bytes");
        assert_eq!(show_duration(DAY), "24h");
        assert_eq!(show_duration(90 * MINUTE / 90), "1m");
        assert_eq!(show_duration(Duration::from_millis(1500)), "1500ms");
    }

    #[test]
    fn the_maximum_itself_is_accepted_and_one_past_it_is_not() {
        assert_eq!(bytes_max(GIB)("1GiB"), Ok(GIB));
        assert_eq!(
            bytes_max(GIB)("1073741825"),
            Err("\"1073741825\" is above the maximum of 1GiB".into())
        );
        assert_eq!(count_max(64)("64"), Ok(64));
        assert!(count_max(64)("65").unwrap_err().contains("maximum of 64"));
        assert!(count_max(64)("0").unwrap_err().contains("at least 1"));
        assert_eq!(duration_max(HOUR)("60m"), Ok(HOUR));
        assert!(duration_max(HOUR)("61m").unwrap_err().contains("1h"));
        assert_eq!(duration_opt_max(DAY)("none"), Ok(None));
        assert!(duration_opt_max(DAY)("25h").unwrap_err().contains("24h"));
        assert_eq!(rate_max(1e6)("0"), Ok(None));
        assert!(rate_max(1e6)("2e6").unwrap_err().contains("1000000"));
    }
}
