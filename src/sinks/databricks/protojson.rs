//! The protobuf JSON forms of `google.protobuf.Timestamp` and `Duration`
//! that MLflow's trace info carries (`request_time`, `execution_duration`),
//! from the millisecond values the client holds: RFC 3339 in UTC and
//! seconds with `s`, each with 0, 3, 6 or 9 fractional digits, as protobuf's
//! own JSON printer writes them.

/// `Timestamp.FromMilliseconds(ms)` printed: `2025-11-24T16:00:00.123Z`.
pub fn timestamp_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let millis = ms.rem_euclid(1000);
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let (y, m, d) = civil_from_days(days);
    let (hh, mm, ss) = (rem / 3600, rem % 3600 / 60, rem % 60);
    let frac = if millis == 0 {
        String::new()
    } else {
        format!(".{millis:03}")
    };
    format!("{y:04}-{m:02}-{d:02}T{hh:02}:{mm:02}:{ss:02}{frac}Z")
}

/// `Duration.FromMilliseconds(ms)` printed: `1.250s`, `0.003s`, `2s`.
pub fn duration_ms(ms: i64) -> String {
    let sign = if ms < 0 { "-" } else { "" };
    let ms = ms.unsigned_abs();
    let (secs, millis) = (ms / 1000, ms % 1000);
    if millis == 0 {
        format!("{sign}{secs}s")
    } else {
        format!("{sign}{secs}.{millis:03}s")
    }
}

/// Days since 1970-01-01 to (year, month, day), proleptic Gregorian
/// (Howard Hinnant's `civil_from_days`).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_as_protobuf_prints_them() {
        // Printed by the client: Timestamp().FromMilliseconds(1764000000123)
        assert_eq!(timestamp_ms(1_764_000_000_123), "2025-11-24T16:00:00.123Z");
        assert_eq!(timestamp_ms(0), "1970-01-01T00:00:00Z");
        assert_eq!(timestamp_ms(951_782_400_000), "2000-02-29T00:00:00Z");
        assert_eq!(timestamp_ms(1_709_251_199_999), "2024-02-29T23:59:59.999Z");
    }

    #[test]
    fn durations_as_protobuf_prints_them() {
        assert_eq!(duration_ms(1250), "1.250s");
        assert_eq!(duration_ms(3), "0.003s");
        assert_eq!(duration_ms(2000), "2s");
        assert_eq!(duration_ms(0), "0s");
    }
}
