//! The regression gauge's budget (`tests/perf_budget.toml`): per-call
//! allocation figures and the heap a started llmtap holds, the tolerance they
//! may grow by, the check of measured figures against it, and the rewrite of
//! the file from a measurement (`LLMTAP_GAUGE_WRITE=1`).
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

/// Heap bytes a started llmtap holds before its first call (allocated minus
/// freed while it starts and settles), with defaults: what a preallocated
/// queue or table costs every deployment, idle.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Startup {
    pub off_live_bytes: f64,
    pub traced_live_bytes: f64,
}

impl Startup {
    /// `(name, value)` of each figure, in file order.
    pub fn named(&self) -> [(&'static str, f64); 2] {
        [
            ("off_live_bytes", self.off_live_bytes),
            ("traced_live_bytes", self.traced_live_bytes),
        ]
    }
}

/// The budget file: what llmtap adds per call over a direct connection, and
/// what it holds once started.
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
    /// Heap held right after start, tracing off and on.
    pub startup: Startup,
}

/// One gauge run's figures, in the budget's shape.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Measured {
    pub request_path: Figures,
    pub traced: Figures,
    pub startup: Startup,
}

/// A section's name in the file and its `(name, value)` figures.
type Section = (&'static str, Vec<(&'static str, f64)>);

impl Measured {
    /// Every section, in file order.
    fn sections(&self) -> [Section; 3] {
        [
            ("request_path", self.request_path.named().to_vec()),
            ("traced", self.traced.named().to_vec()),
            ("startup", self.startup.named().to_vec()),
        ]
    }
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
fn excess(figure: &Figure, tolerance: f64) -> Option<String> {
    let Figure {
        section,
        name,
        budget,
        measured,
    } = figure;
    let unit = unit(section);
    let limit = budget * (1.0 + tolerance);
    (*measured > limit).then(|| {
        format!(
            "{section}.{name}: measured {measured:.1} {unit} > budget {budget:.1} + {:.0}% = {limit:.1}",
            tolerance * 100.0
        )
    })
}

/// How a section's figures are counted, for messages.
fn unit(section: &str) -> &'static str {
    match section {
        "startup" => "after start",
        _ => "per call",
    }
}

/// One figure: where it is in the file, its budget and what was measured.
struct Figure {
    section: &'static str,
    name: &'static str,
    budget: f64,
    measured: f64,
}

/// Every figure, in file order.
fn pairs(budget: &Budget, measured: &Measured) -> Vec<Figure> {
    let want = Measured {
        request_path: budget.request_path,
        traced: budget.traced,
        startup: budget.startup,
    };
    want.sections()
        .into_iter()
        .zip(measured.sections())
        .flat_map(|((section, want), (_, got))| {
            want.into_iter()
                .zip(got)
                .map(move |((name, budget), (_, measured))| Figure {
                    section,
                    name,
                    budget,
                    measured,
                })
        })
        .collect()
}

/// Every figure of `measured` above its budget plus the tolerance; empty when
/// all are within it.
pub fn check(budget: &Budget, measured: &Measured) -> Vec<String> {
    pairs(budget, measured)
        .iter()
        .filter_map(|f| excess(f, budget.tolerance))
        .collect()
}

/// Figures more than the tolerance *below* their budget: gains that a
/// re-set budget would lock in (printed, never a failure).
pub fn gains(budget: &Budget, measured: &Measured) -> Vec<String> {
    pairs(budget, measured)
        .into_iter()
        .filter(|f| f.measured < f.budget * (1.0 - budget.tolerance))
        .map(|f| {
            let unit = unit(f.section);
            format!(
                "{}.{}: measured {:.1} {unit}, budget {:.1}",
                f.section, f.name, f.measured, f.budget
            )
        })
        .collect()
}

/// The failure message for `excesses`: what, and how to re-set the budget.
pub fn failure(excesses: &[String], path: &Path) -> String {
    format!(
        "llmtap got heavier than its budget ({}):\n  {}\n\
         If the increase is intended, re-set the budget with `{UPDATE}` and commit {}.",
        path.display(),
        excesses.join("\n  "),
        path.display()
    )
}

/// The budget file's text for measured figures (rounded up) and `tolerance`.
pub fn render(measured: &Measured, tolerance: f64) -> String {
    let mut out = String::from(
        "# Regression gauge budget, checked by tests/perf_gauge.rs (README, Development).\n\
         # Per call, what llmtap adds over a direct connection to the same provider:\n\
         # allocations (allocs + reallocs) and bytes allocated, counted by a counting\n\
         # global allocator over N sequential calls (debug build, as `cargo test` runs);\n\
         # and the heap a started llmtap holds before its first call.\n\
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
    let comments = [
        "llmtap, tracing off",
        "llmtap, tracing on to a file sink (defaults; each trace exported before the next call)",
        "Heap a started llmtap holds before its first call (bytes allocated minus\n\
         # freed while it starts and settles; defaults): catches preallocated queues",
    ];
    for ((section, figures), what) in measured.sections().into_iter().zip(comments) {
        let _ = writeln!(out, "\n# {what}\n[{section}]");
        for (name, v) in figures {
            let _ = writeln!(out, "{name} = {:.1}", (v * 10.0).ceil() / 10.0);
        }
    }
    out
}
