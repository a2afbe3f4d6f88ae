//! W3C Trace Context `traceparent` (`00-<32 hex trace id>-<16 hex parent
//! id>-<2 hex flags>`): parsed strictly, so that llmtap's span can join the
//! agent's own trace (`[trace] join_client_trace`). An invalid value is
//! ignored (the call gets a trace of its own) and logged once per process.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

/// The ids a valid `traceparent` names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Parent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
}

/// Parses a `traceparent` value; `None` when it is not a valid one
/// (wrong shape, upper-case hex, version `ff`, all-zero ids). A version
/// above `00` may carry more fields after the flags, as the spec allows.
pub fn parse(value: &str) -> Option<Parent> {
    let v = value.trim();
    let mut parts = v.split('-');
    let (version, trace, parent, flags) =
        (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    let lower_hex = |s: &str, n: usize| {
        s.len() == n && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
    };
    if !lower_hex(version, 2) || version == "ff" || !lower_hex(flags, 2) {
        return None;
    }
    if version == "00" && parts.next().is_some() {
        return None;
    }
    if !lower_hex(trace, 32) || !lower_hex(parent, 16) {
        return None;
    }
    let trace_id = u128::from_str_radix(trace, 16).ok()?.to_be_bytes();
    let span_id = u64::from_str_radix(parent, 16).ok()?.to_be_bytes();
    (trace_id != [0; 16] && span_id != [0; 8]).then_some(Parent { trace_id, span_id })
}

static INVALID: AtomicU64 = AtomicU64::new(0);
static LOGGED: AtomicBool = AtomicBool::new(false);

/// `traceparent` values ignored so far because they were invalid.
pub fn invalid_seen() -> u64 {
    INVALID.load(Relaxed)
}

/// The agent's trace a call's span joins: with `join` and a valid
/// `traceparent`, its trace id; `None` means a trace of the call's own.
pub fn joined_trace_id(traceparent: Option<&str>, join: bool) -> Option<[u8; 16]> {
    let tp = traceparent.filter(|_| join)?;
    let parent = parse(tp);
    if parent.is_none() {
        INVALID.fetch_add(1, Relaxed);
        if !LOGGED.swap(true, Relaxed) {
            tracing::warn!(traceparent = %tp.chars().take(80).collect::<String>(), "invalid traceparent ignored: the call gets a trace of its own (logged once)");
        }
    }
    parent.map(|p| p.trace_id)
}

/// `llmtap_traceparent_invalid_total`, in the Prometheus text format.
pub fn render_metrics(out: &mut String) {
    use std::fmt::Write;
    let _ = writeln!(
        out,
        "# HELP llmtap_traceparent_invalid_total Invalid traceparent headers ignored in join mode (context.join_client_trace).\n# TYPE llmtap_traceparent_invalid_total counter\nllmtap_traceparent_invalid_total {}",
        invalid_seen()
    );
}

/// The span llmtap's span is a child of: the `traceparent`'s parent id,
/// when the call joined that trace (its trace id is the exchange's).
pub fn parent_span(traceparent: Option<&str>, trace_id: &[u8; 16]) -> Option<[u8; 8]> {
    parse(traceparent?)
        .filter(|p| &p.trace_id == trace_id)
        .map(|p| p.span_id)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

    #[test]
    fn a_valid_traceparent() {
        let p = parse(GOOD).unwrap();
        assert_eq!(p.trace_id[0], 0x0a);
        assert_eq!(p.trace_id[15], 0x9c);
        assert_eq!(p.span_id, 0xb7ad6b7169203331u64.to_be_bytes());
        assert!(parse("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra").is_some());
    }

    #[test]
    fn invalid_ones_are_refused() {
        for bad in [
            "",
            "garbage",
            "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
            "00-0af7651916cd43dd8448eb211c8031-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b71692033-01",
            "00-+af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331",
        ] {
            assert_eq!(parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn joining_takes_the_agents_trace_only_when_asked_and_valid() {
        let p = parse(GOOD).unwrap();
        assert_eq!(joined_trace_id(Some(GOOD), true), Some(p.trace_id));
        assert_eq!(joined_trace_id(Some(GOOD), false), None);
        assert_eq!(joined_trace_id(None, true), None);
        let before = invalid_seen();
        assert_eq!(joined_trace_id(Some("00-zz"), true), None);
        assert!(invalid_seen() > before);
        let mut out = String::new();
        render_metrics(&mut out);
        assert!(out.contains("\nllmtap_traceparent_invalid_total "), "{out}");
        assert_eq!(parent_span(Some(GOOD), &p.trace_id), Some(p.span_id));
        assert_eq!(parent_span(Some(GOOD), &[1; 16]), None);
        assert_eq!(parent_span(None, &p.trace_id), None);
    }
}
