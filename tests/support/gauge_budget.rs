//! The regression gauge's budget (`tests/perf_budget.toml`): per-call
//! allocation figures, the tolerance they may grow by, the check of measured
//! figures against it, and the rewrite of the file from a measurement
//! (`LLMTAP_GAUGE_WRITE=1`).
#![allow(dead_code)]

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use serde::Deserialize;

/// The command that re-sets the budget from a fresh measurement.
pub const UPDATE: &str = "LLMTAP_GAUGE_WRITE=1 cargo test --test perf_gauge";

/// The tolerance written into a new budget file (see its comment there).
pub const DEFAULT_TOLERANCE: f64 = 0.05;

/// Allocations (allocs + reallocs) and bytes allocated, per call, for a
/// plain chat JSON call and a streamed (SSE) chat call.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Figures {
    pub json_allocations: f64,
    pub json_bytes: f64,
    pub sse_allocations: f64,
    pub sse_bytes: f64,
}

impl Figures {
    /// `(name, value)` of each figure, in file order.
    pub fn named(&self) -> [(&'static str, f64); 4] {
        [
            ("json_allocations", self.json_allocations),
            ("json_bytes", self.json_bytes),
            ("sse_allocations", self.sse_allocations),
            ("sse_bytes", self.sse_bytes),
        ]
    }
}

/// The budget file: what llmtap adds per call over a direct connection.
#[derive(Debug, Clone, Copy, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Budget {
    /// A figure fails when it exceeds its budget by more than this fraction.
    pub tolerance: f64,
    /// llmtap with tracing off: the request path alone.
    pub request_path: Figures,
    /// llmtap with tracing on to a file sink: the request path, the journal,
    /// parse, trace build, spool and export of one call.
    pub traced: Figures,
}

/// `tests/perf_budget.toml` of this checkout.
pub fn path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/perf_budget.toml")
}

/// Reads and parses the budget file; a clear error when it is missing or bad.
pub fn read(path: &Path) -> Result<Budget, String> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        format!(
            "budget file {}: {e}; create it with `{UPDATE}`",
            path.display()
        )
    })?;
    parse(&text).map_err(|e| format!("budget file {}: {e}", path.display()))
}

/// Parses a budget file's text.
pub fn parse(text: &str) -> Result<Budget, toml::de::Error> {
    toml::from_str(text)
}

/// One figure that exceeds its budget, as a line of the failure message.
fn excess(section: &str, name: &str, measured: f64, budget: f64, tolerance: f64) -> Option<String> {
    let limit = budget * (1.0 + tolerance);
    (measured > limit).then(|| {
        format!(
            "{section}.{name}: measured {measured:.1} per call > budget {budget:.1} + {:.0}% = {limit:.1}",
            tolerance * 100.0
        )
    })
}

/// `(section, name, budget, measured)` of every figure, in file order.
fn pairs(
    budget: &Budget,
    measured_off: &Figures,
    measured_on: &Figures,
) -> Vec<(&'static str, &'static str, f64, f64)> {
    let mut out = Vec::new();
    for (section, want, got) in [
        ("request_path", &budget.request_path, measured_off),
        ("traced", &budget.traced, measured_on),
    ] {
        for ((name, b), (_, m)) in want.named().into_iter().zip(got.named()) {
            out.push((section, name, b, m));
        }
    }
    out
}

/// Every figure of `measured` above its budget plus the tolerance; empty when
/// all are within it.
pub fn check(budget: &Budget, measured_off: &Figures, measured_on: &Figures) -> Vec<String> {
    pairs(budget, measured_off, measured_on)
        .into_iter()
        .filter_map(|(section, name, b, m)| excess(section, name, m, b, budget.tolerance))
        .collect()
}

/// Figures more than the tolerance *below* their budget: gains that a
/// re-set budget would lock in (printed, never a failure).
pub fn gains(budget: &Budget, measured_off: &Figures, measured_on: &Figures) -> Vec<String> {
    pairs(budget, measured_off, measured_on)
        .into_iter()
        .filter(|&(_, _, b, m)| m < b * (1.0 - budget.tolerance))
        .map(|(section, name, b, m)| {
            format!("{section}.{name}: measured {m:.1} per call, budget {b:.1}")
        })
        .collect()
}

/// The failure message for `excesses`: what, and how to re-set the budget.
pub fn failure(excesses: &[String], path: &Path) -> String {
    format!(
        "the hot path got heavier than its budget ({}):\n  {}\n\
         If the increase is intended, re-set the budget with `{UPDATE}` and commit {}.",
        path.display(),
        excesses.join("\n  "),
        path.display()
    )
}

/// The budget file's text for measured figures (rounded up) and `tolerance`.
pub fn render(off: &Figures, on: &Figures, tolerance: f64) -> String {
    let mut out = String::from(
        "# Regression gauge budget, checked by tests/perf_gauge.rs (README, Development).\n\
         # Per call, what llmtap adds over a direct connection to the same provider:\n\
         # allocations (allocs + reallocs) and bytes allocated, counted by a counting\n\
         # global allocator over N sequential calls (debug build, as `cargo test` runs).\n\
         # Re-set from a fresh measurement with:\n",
    );
    let _ = writeln!(out, "#   {UPDATE}");
    out.push_str(
        "#\n\
         # tolerance: a figure fails above budget * (1 + tolerance). The gauge runs on\n\
         # one thread and exports each trace before the next call, so three runs gave\n\
         # the request path to the byte and the traced figures within 0.3%; 5% leaves\n\
         # room for what still varies (spool fsync ticks, blocking-pool threads) and\n\
         # catches two more allocations per call on the request path.\n",
    );
    let _ = writeln!(out, "tolerance = {tolerance:.2}");
    for (section, what, f) in [
        ("request_path", "llmtap, tracing off", off),
        (
            "traced",
            "llmtap, tracing on to a file sink (defaults; each trace exported before the next call)",
            on,
        ),
    ] {
        let _ = writeln!(out, "\n# {what}\n[{section}]");
        for (name, v) in f.named() {
            let _ = writeln!(out, "{name} = {:.1}", (v * 10.0).ceil() / 10.0);
        }
    }
    out
}
