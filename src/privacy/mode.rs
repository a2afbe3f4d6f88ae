//! Capture modes — how much of a call llmtap keeps — and how the mode of one
//! call is chosen: the route's mode (or the global one), lowered, never
//! raised, by the call's `x-llmtap-capture` header.
//!
//! Pure: no I/O, no clock.

use http::HeaderMap;

/// The header a client sends to capture less of one call.
pub const HEADER: &str = "x-llmtap-capture";

/// How much of a call llmtap keeps, from most to least.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub enum CaptureMode {
    /// No trace at all: nothing written, nothing sent.
    None,
    /// A trace without bodies: model, usage, timing, status, ids, context.
    Metadata,
    /// Everything (redaction rules still apply).
    #[default]
    Full,
}

impl CaptureMode {
    /// `full`, `metadata` or `none` (case-insensitive, trimmed).
    pub fn parse(s: &str) -> Result<CaptureMode, String> {
        match s.trim().to_ascii_lowercase().as_str() {
            "full" => Ok(CaptureMode::Full),
            "metadata" => Ok(CaptureMode::Metadata),
            "none" => Ok(CaptureMode::None),
            _ => Err(format!("expected full, metadata or none, got {s:?}")),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            CaptureMode::Full => "full",
            CaptureMode::Metadata => "metadata",
            CaptureMode::None => "none",
        }
    }
}

/// The mode asked for by the call's [`HEADER`], if it names one. Read
/// before the `x-llmtap-*` headers are removed ([`crate::context::take`]);
/// an unreadable or unknown value asks for nothing.
pub fn requested(headers: &HeaderMap) -> Option<CaptureMode> {
    let v = headers.get(HEADER)?.to_str().ok()?;
    CaptureMode::parse(v).ok()
}

/// The mode of one call: the configured one (`route`'s when the route sets
/// one, else `global`), lowered by `asked` when that is less. A client can
/// never capture more than the operator configured for the route.
pub fn resolve(
    global: CaptureMode,
    route: Option<CaptureMode>,
    asked: Option<CaptureMode>,
) -> CaptureMode {
    let configured = route.unwrap_or(global);
    asked.map_or(configured, |a| a.min(configured))
}

#[cfg(test)]
mod tests {
    use super::CaptureMode::{Full, Metadata, None as Off};
    use super::*;

    #[test]
    fn parses_the_three_modes_and_refuses_others() {
        assert_eq!(CaptureMode::parse(" Metadata "), Ok(Metadata));
        assert_eq!(CaptureMode::parse("full"), Ok(Full));
        assert_eq!(CaptureMode::parse("NONE"), Ok(Off));
        assert!(CaptureMode::parse("bodies").is_err());
        assert!(CaptureMode::parse("").is_err());
    }

    #[test]
    fn the_route_overrides_the_global_mode() {
        assert_eq!(resolve(Full, Some(Metadata), None), Metadata);
        assert_eq!(resolve(Metadata, Some(Full), None), Full);
        assert_eq!(resolve(Metadata, None, None), Metadata);
    }

    #[test]
    fn a_header_lowers_the_mode_but_never_raises_it() {
        assert_eq!(resolve(Full, None, Some(Metadata)), Metadata);
        assert_eq!(resolve(Full, None, Some(Off)), Off);
        assert_eq!(resolve(Full, Some(Metadata), Some(Full)), Metadata);
        assert_eq!(resolve(Off, None, Some(Full)), Off);
        assert_eq!(resolve(Metadata, Some(Off), Some(Metadata)), Off);
    }

    #[test]
    fn the_header_is_read_and_bad_values_ignored() {
        let mut h = HeaderMap::new();
        assert_eq!(requested(&h), None);
        h.insert(HEADER, "metadata".parse().unwrap());
        assert_eq!(requested(&h), Some(Metadata));
        h.insert(HEADER, "everything".parse().unwrap());
        assert_eq!(requested(&h), None);
    }
}
