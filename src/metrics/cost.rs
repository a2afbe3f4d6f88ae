//! Tokens and cost by model, calls without a price by provider, and the
//! session recogniser's held entries:
//! `llmtap_tokens_total{model,kind}`, `llmtap_cost_usd_total{model,kind}`,
//! `llmtap_cost_unpriced_total{provider}`, `llmtap_session_entries{map}`.
//!
//! Bounded labels: `model` is the price table's own name for a model
//! (`Price::model`), so only priced calls are labelled by model and the set
//! is at most the table plus the config's `[[prices]]`; `provider` is
//! llmtap's route provider (a fixed set); `kind` and `map` are fixed.
//! Updated by the parse workers (never the request path), hence a mutex.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

use crate::cost::{Cost, Tokens};

/// The token kinds counted.
pub const TOKEN_KINDS: [&str; 6] = [
    "input",
    "output",
    "cache_read",
    "cache_write",
    "cache_write_1h",
    "reasoning",
];

#[derive(Debug, Default)]
struct Totals {
    /// (model, kind) -> tokens.
    tokens: BTreeMap<(String, &'static str), u64>,
    /// (model, kind: input/output) -> USD.
    usd: BTreeMap<(String, &'static str), f64>,
    /// provider -> calls with usage but no price.
    unpriced: BTreeMap<&'static str, u64>,
}

/// The cost and session metrics.
#[derive(Debug, Default)]
pub struct CostMetrics {
    totals: Mutex<Totals>,
    /// History prefixes the session recogniser holds.
    pub session_histories: AtomicU64,
    /// Responses ids the session recogniser holds.
    pub session_responses: AtomicU64,
}

impl CostMetrics {
    /// A priced call of `model` (the table's name).
    pub fn priced(&self, model: &str, t: &Tokens, cost: &Cost) {
        let mut g = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        let counts = [
            t.input,
            t.output,
            t.cache_read,
            t.cache_write,
            t.cache_write_1h,
            t.reasoning,
        ];
        for (kind, n) in TOKEN_KINDS.into_iter().zip(counts) {
            *g.tokens.entry((model.to_owned(), kind)).or_default() += n;
        }
        for (kind, usd) in [("input", cost.input), ("output", cost.output)] {
            *g.usd.entry((model.to_owned(), kind)).or_default() += usd;
        }
    }

    /// A call with usage whose model has no price.
    pub fn unpriced(&self, provider: &'static str) {
        let mut g = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        *g.unpriced.entry(provider).or_default() += 1;
    }

    /// The recogniser's held entries, for the gauges.
    pub fn sessions_held(&self, (histories, responses): (usize, usize)) {
        self.session_histories.store(histories as u64, Relaxed);
        self.session_responses.store(responses as u64, Relaxed);
    }

    pub fn render(&self, out: &mut String) {
        let g = self.totals.lock().unwrap_or_else(|e| e.into_inner());
        out.push_str("# HELP llmtap_tokens_total Tokens of priced calls, by model (the price table's name) and kind.\n# TYPE llmtap_tokens_total counter\n");
        for ((model, kind), n) in &g.tokens {
            let _ = writeln!(
                out,
                "llmtap_tokens_total{{model=\"{}\",kind=\"{kind}\"}} {n}",
                escape(model)
            );
        }
        out.push_str("# HELP llmtap_cost_usd_total Cost in USD of priced calls, by model and kind (input, output).\n# TYPE llmtap_cost_usd_total counter\n");
        for ((model, kind), usd) in &g.usd {
            let _ = writeln!(
                out,
                "llmtap_cost_usd_total{{model=\"{}\",kind=\"{kind}\"}} {usd}",
                escape(model)
            );
        }
        out.push_str("# HELP llmtap_cost_unpriced_total Calls with token usage but no price for their model, by provider.\n# TYPE llmtap_cost_unpriced_total counter\n");
        for (provider, n) in &g.unpriced {
            let _ = writeln!(
                out,
                "llmtap_cost_unpriced_total{{provider=\"{provider}\"}} {n}"
            );
        }
        let _ = writeln!(
            out,
            "# HELP llmtap_session_entries Entries the session recogniser holds, by map.\n# TYPE llmtap_session_entries gauge\nllmtap_session_entries{{map=\"histories\"}} {}\nllmtap_session_entries{{map=\"responses\"}} {}",
            self.session_histories.load(Relaxed),
            self.session_responses.load(Relaxed)
        );
    }
}

/// A label value as Prometheus text wants it.
fn escape(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_tokens_cost_and_unpriced() {
        let m = CostMetrics::default();
        let t = Tokens {
            input: 100,
            output: 10,
            ..Tokens::default()
        };
        let c = Cost {
            input: 0.25,
            output: 0.5,
            total: 0.75,
        };
        m.priced("gpt-4o", &t, &c);
        m.priced("gpt-4o", &t, &c);
        m.unpriced("openai");
        m.sessions_held((3, 1));
        let mut out = String::new();
        m.render(&mut out);
        assert!(out.contains("llmtap_tokens_total{model=\"gpt-4o\",kind=\"input\"} 200\n"));
        assert!(out.contains("llmtap_cost_usd_total{model=\"gpt-4o\",kind=\"output\"} 1\n"));
        assert!(out.contains("llmtap_cost_unpriced_total{provider=\"openai\"} 1\n"));
        assert!(out.contains("llmtap_session_entries{map=\"histories\"} 3\n"));
    }
}
