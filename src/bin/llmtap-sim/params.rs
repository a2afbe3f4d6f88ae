//! What shapes one response: latency, time to first token, chunks, gap
//! between chunks, text size. Defaults come from the `serve` flags; each
//! can be overridden per request by an `x-sim-*` header, within bounds.

use std::time::Duration;

use http::HeaderMap;

use crate::cli::ServeArgs;

/// Longest delay a flag or header may ask for.
pub const MAX_DELAY_MS: f64 = 600_000.0;
/// Most chunks a stream may have.
pub const MAX_CHUNKS: u64 = 100_000;
/// Largest answer text.
pub const MAX_BODY_BYTES: u64 = 8 << 20;

/// One response's shape.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Params {
    pub latency: Duration,
    pub ttft: Duration,
    pub chunks: u64,
    pub chunk_delay: Duration,
    pub body_bytes: u64,
}

impl Params {
    /// The defaults, from the flags (bounds checked like the headers).
    pub fn from_args(a: &ServeArgs) -> Result<Params, String> {
        Ok(Params {
            latency: delay("--latency-ms", a.latency_ms)?,
            ttft: delay("--ttft-ms", a.ttft_ms)?,
            chunks: chunks("--chunks", a.chunks)?,
            chunk_delay: delay("--chunk-delay-ms", a.chunk_delay_ms)?,
            body_bytes: body_bytes("--body-bytes", a.body_bytes)?,
        })
    }

    /// These defaults with the request's `x-sim-*` headers applied.
    pub fn with_headers(mut self, headers: &HeaderMap) -> Result<Params, String> {
        if headers.is_empty() {
            return Ok(self);
        }
        if let Some(v) = header::<f64>(headers, "x-sim-latency-ms")? {
            self.latency = delay("x-sim-latency-ms", v)?;
        }
        if let Some(v) = header::<f64>(headers, "x-sim-ttft-ms")? {
            self.ttft = delay("x-sim-ttft-ms", v)?;
        }
        if let Some(v) = header::<u64>(headers, "x-sim-chunks")? {
            self.chunks = chunks("x-sim-chunks", v)?;
        }
        if let Some(v) = header::<f64>(headers, "x-sim-chunk-delay-ms")? {
            self.chunk_delay = delay("x-sim-chunk-delay-ms", v)?;
        }
        if let Some(v) = header::<u64>(headers, "x-sim-body-bytes")? {
            self.body_bytes = body_bytes("x-sim-body-bytes", v)?;
        }
        Ok(self)
    }
}

fn header<T: std::str::FromStr>(headers: &HeaderMap, name: &str) -> Result<Option<T>, String> {
    let Some(value) = headers.get(name) else {
        return Ok(None);
    };
    let text = value
        .to_str()
        .map_err(|_| format!("{name}: not text"))?
        .trim();
    text.parse()
        .map(Some)
        .map_err(|_| format!("{name}: {text:?} is not a number"))
}

fn delay(name: &str, ms: f64) -> Result<Duration, String> {
    if !(0.0..=MAX_DELAY_MS).contains(&ms) {
        return Err(format!("{name}: {ms} ms is outside 0..={MAX_DELAY_MS}"));
    }
    Ok(Duration::from_secs_f64(ms / 1000.0))
}

fn chunks(name: &str, n: u64) -> Result<u64, String> {
    if !(1..=MAX_CHUNKS).contains(&n) {
        return Err(format!("{name}: {n} is outside 1..={MAX_CHUNKS}"));
    }
    Ok(n)
}

fn body_bytes(name: &str, n: u64) -> Result<u64, String> {
    if n > MAX_BODY_BYTES {
        return Err(format!("{name}: {n} is above {MAX_BODY_BYTES}"));
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn defaults() -> Params {
        Params {
            latency: Duration::ZERO,
            ttft: Duration::ZERO,
            chunks: 20,
            chunk_delay: Duration::ZERO,
            body_bytes: 400,
        }
    }

    #[test]
    fn headers_override_within_bounds() {
        let mut h = HeaderMap::new();
        h.insert("x-sim-chunks", "7".parse().unwrap());
        h.insert("x-sim-chunk-delay-ms", "0.5".parse().unwrap());
        let p = defaults().with_headers(&h).unwrap();
        assert_eq!(p.chunks, 7);
        assert_eq!(p.chunk_delay, Duration::from_micros(500));
        assert_eq!(p.body_bytes, 400);
    }

    #[test]
    fn bad_headers_are_refused() {
        for (name, value) in [
            ("x-sim-chunks", "0"),
            ("x-sim-chunks", "100001"),
            ("x-sim-chunks", "many"),
            ("x-sim-ttft-ms", "-1"),
            ("x-sim-latency-ms", "NaN"),
            ("x-sim-chunk-delay-ms", "600001"),
            ("x-sim-body-bytes", "99999999999"),
        ] {
            let mut h = HeaderMap::new();
            h.insert(name, value.parse().unwrap());
            let err = defaults().with_headers(&h).unwrap_err();
            assert!(err.starts_with(name), "{name}={value}: {err}");
        }
    }
}
