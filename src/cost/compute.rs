//! One call's cost from its token counts and its model's [`Price`].
//!
//! [`Tokens`] follows llmtap's [`Usage`] (and MLflow's `cost_per_token`):
//! `input` counts every prompt token, cache hits and cache writes included,
//! and `output` counts reasoning tokens. That is how OpenAI reports
//! (`prompt_tokens` includes `prompt_tokens_details.cached_tokens`,
//! `completion_tokens` includes `reasoning_tokens`); Anthropic reports
//! `input_tokens` *without* cache reads and writes, and
//! [`Usage::from_anthropic`] adds them back. So the uncached input is
//! `input - cache_read - cache_write`, each part billed at its own rate.

use serde_json::{json, Value};

use super::table::{Price, Rates};
use crate::parse::usage::Usage;

/// Token counts of one call. `cache_read`, `cache_write` are parts of
/// `input`; `cache_write_1h` is the part of `cache_write` with Anthropic's
/// 1-hour TTL; `reasoning` is part of `output`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Tokens {
    pub input: u64,
    pub output: u64,
    pub cache_read: u64,
    pub cache_write: u64,
    pub cache_write_1h: u64,
    pub reasoning: u64,
}

impl From<&Usage> for Tokens {
    /// The 1-hour cache writes are Anthropic's
    /// `usage.cache_creation.ephemeral_1h_input_tokens`.
    fn from(u: &Usage) -> Tokens {
        Tokens {
            input: u.input_tokens,
            output: u.output_tokens,
            cache_read: u.cache_read_input_tokens.unwrap_or(0),
            cache_write: u.cache_creation_input_tokens.unwrap_or(0),
            cache_write_1h: u.cache_creation_1h_input_tokens.unwrap_or(0),
            reasoning: u.reasoning_tokens.unwrap_or(0),
        }
    }
}

/// USD, rounded to 1e-10 (a tenth of a cent's ten-millionth).
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Cost {
    pub input: f64,
    pub output: f64,
    pub total: f64,
}

impl Cost {
    /// The `mlflow.llm.cost` attribute value, keys as MLflow's `CostKey`.
    pub fn to_mlflow_json(&self) -> Value {
        json!({"input_cost": self.input, "output_cost": self.output, "total_cost": self.total})
    }
}

fn round(usd: f64) -> f64 {
    (usd * 1e10).round() / 1e10
}

/// The rates that bill this call: the long-context block when the prompt
/// (all of `input`) is longer than its threshold, else the base rates; a
/// known service tier (`flex`, `priority`, `batch`; `default`, `auto`,
/// `standard` mean base) replaces the base rates, and scales long-context
/// rates by its input ratio.
pub fn rates_for(price: &Price, tier: Option<&str>, prompt_tokens: u64) -> Rates {
    let long = price
        .long_context
        .iter()
        .rev()
        .find(|(above, _)| prompt_tokens > *above)
        .map(|(_, r)| *r);
    let tier = tier
        .map(str::to_ascii_lowercase)
        .and_then(|t| price.tiers.get(&t).copied());
    match (long, tier) {
        (None, None) => price.base,
        (None, Some(t)) => t,
        (Some(l), None) => l,
        (Some(l), Some(t)) => {
            let k = if price.base.input > 0.0 {
                t.input / price.base.input
            } else {
                1.0
            };
            scale(&l, k)
        }
    }
}

fn scale(r: &Rates, k: f64) -> Rates {
    Rates {
        input: r.input * k,
        output: r.output * k,
        cache_read: r.cache_read.map(|v| v * k),
        cache_write: r.cache_write.map(|v| v * k),
        cache_write_1h: r.cache_write_1h.map(|v| v * k),
        reasoning: r.reasoning.map(|v| v * k),
    }
}

/// The cost of `t` at `price` (service tier `tier`, if the response named one).
pub fn cost(t: &Tokens, price: &Price, tier: Option<&str>) -> Cost {
    let r = rates_for(price, tier, t.input);
    let per = |n: u64, rate: f64| n as f64 * rate / 1e6;
    let cache_read = t.cache_read.min(t.input);
    let cache_write = t.cache_write.min(t.input - cache_read);
    let write_1h = t.cache_write_1h.min(cache_write);
    let uncached = t.input - cache_read - cache_write;
    let write_rate = r.cache_write.unwrap_or(r.input);
    let input = per(uncached, r.input)
        + per(cache_read, r.cache_read.unwrap_or(r.input))
        + per(cache_write - write_1h, write_rate)
        + per(write_1h, r.cache_write_1h.unwrap_or(write_rate));
    let reasoning = t.reasoning.min(t.output);
    let output =
        per(t.output - reasoning, r.output) + per(reasoning, r.reasoning.unwrap_or(r.output));
    Cost {
        input: round(input),
        output: round(output),
        total: round(input + output),
    }
}
