//! Privacy: how much of a call is captured, what is redacted from it, and
//! which calls are traced at all. Pure logic; the request path and the
//! pipeline call it at two points:
//!
//! ```text
//! forward (call starts)  mode::resolve  -> `none`: no trace, nothing kept
//!                        sample::draw   -> the draw, kept in the draft
//! forward (call ends)    sample::keep   -> drawn out and fine: not submitted
//! pipeline (before the journal write, off the request path)
//!                        body::rewrite  -> `metadata`: bodies reduced;
//!                                          rules: bodies and context redacted
//! ```
//!
//! So nothing of an unsampled call, and no unredacted or (in the `metadata`
//! mode) no body text, is ever written to the journal, the spool, the
//! dead-letter file or sent to a sink: the span is built from the rewritten
//! exchange.
//!
//! - [`mode`]: capture modes and their resolution (route, global, header).
//! - [`redact`]: the rule engine; [`detectors`]: the built-in detectors.
//! - [`json`], [`stream`], [`body`]: redaction and reduction of a body.
//! - [`sample`]: the sampling draw and decision.

pub mod body;
pub mod detectors;
pub mod json;
pub mod mode;
pub mod redact;
pub mod sample;
pub mod stream;

use std::sync::Arc;

pub use mode::CaptureMode;
pub use redact::{Redactor, RuleSpec};

/// The privacy settings (`[privacy]`, and `capture` per route).
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// The mode of calls whose route sets none.
    pub capture: CaptureMode,
    /// Each configured route's mode, in the order of `Config::routes`.
    pub route_capture: Vec<Option<CaptureMode>>,
    /// The share of calls traced (errors always are).
    pub sample: f64,
    /// The redaction rules; `None` when there are none.
    pub redactor: Option<Arc<Redactor>>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            capture: CaptureMode::Full,
            route_capture: Vec::new(),
            sample: 1.0,
            redactor: None,
        }
    }
}

impl Settings {
    /// The mode of a call to route `route` (`None`: the default upstream)
    /// whose header asked for `asked`.
    pub fn mode(&self, route: Option<usize>, asked: Option<CaptureMode>) -> CaptureMode {
        let route = route.and_then(|i| self.route_capture.get(i).copied().flatten());
        mode::resolve(self.capture, route, asked)
    }

    /// What the pipeline must do to a call captured in `mode`.
    pub fn plan(&self, mode: CaptureMode) -> Plan {
        Plan {
            mode,
            redactor: self.redactor.clone(),
        }
    }
}

/// What to do to a body.
#[derive(Debug, Clone, Copy)]
pub enum Op<'a> {
    /// `full` capture with redaction rules.
    Redact(&'a Redactor),
    /// `metadata` capture: content emptied, then what is left redacted.
    Reduce(Option<&'a Redactor>),
}

impl<'a> Op<'a> {
    pub fn redactor(self) -> Option<&'a Redactor> {
        match self {
            Op::Redact(r) => Some(r),
            Op::Reduce(r) => r,
        }
    }
}

/// What is still to be done to one exchange before it is written: carried
/// by the exchange from the request path to the pipeline, and reset to the
/// default (nothing) once done.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    pub mode: CaptureMode,
    pub redactor: Option<Arc<Redactor>>,
}

impl Plan {
    /// True when the exchange is kept as captured.
    pub fn is_noop(&self) -> bool {
        self.mode == CaptureMode::Full && self.redactor.as_ref().is_none_or(|r| r.is_empty())
    }

    /// The body operation, `None` when there is none.
    pub fn op(&self) -> Option<body::Op<'_>> {
        match (self.mode, self.redactor.as_deref()) {
            (CaptureMode::Metadata, r) => Some(body::Op::Reduce(r)),
            (_, Some(r)) if !r.is_empty() => Some(body::Op::Redact(r)),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_without_a_mode_use_the_global_one() {
        let s = Settings {
            capture: CaptureMode::Full,
            route_capture: vec![None, Some(CaptureMode::Metadata)],
            ..Settings::default()
        };
        assert_eq!(s.mode(None, None), CaptureMode::Full);
        assert_eq!(s.mode(Some(0), None), CaptureMode::Full);
        assert_eq!(s.mode(Some(1), None), CaptureMode::Metadata);
        assert_eq!(
            s.mode(Some(1), Some(CaptureMode::Full)),
            CaptureMode::Metadata
        );
        assert_eq!(s.mode(Some(7), Some(CaptureMode::None)), CaptureMode::None);
    }

    #[test]
    fn a_plan_is_a_noop_only_in_full_mode_without_rules() {
        let r = Arc::new(Redactor::new(&["email".into()], &[]).unwrap());
        assert!(Plan::default().is_noop());
        assert!(Plan::default().op().is_none());
        let full = Plan {
            mode: CaptureMode::Full,
            redactor: Some(r.clone()),
        };
        assert!(!full.is_noop());
        assert!(matches!(full.op(), Some(body::Op::Redact(_))));
        let meta = Plan {
            mode: CaptureMode::Metadata,
            redactor: None,
        };
        assert!(matches!(meta.op(), Some(body::Op::Reduce(None))));
    }
}
