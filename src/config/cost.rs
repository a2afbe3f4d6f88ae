//! `[cost]` and `[[prices]]`: the optional `x-llmtap-cost-usd` response
//! header, and the config's price overrides merged once, at load, into the
//! shipped table ([`crate::cost`], `docs/cost.md`).

use std::sync::Arc;

use crate::cost::{table, Entry, PriceTable};

use super::layers::parse_bool;
use super::Layers;

/// Keys of the `[cost]` table.
pub const KEYS: &[&str] = &["response_header"];

/// The cost settings and the price table in force.
#[derive(Debug, Clone)]
pub struct CostSettings {
    /// Add `x-llmtap-cost-usd` to non-streamed responses (holds the body
    /// until it is complete; `src/forward/cost_header.rs`).
    pub response_header: bool,
    /// The shipped prices with the config's `[[prices]]` applied.
    pub prices: Arc<PriceTable>,
    /// The config's `[[prices]]` entries, as parsed.
    pub overrides: Vec<Entry>,
}

impl Default for CostSettings {
    fn default() -> Self {
        CostSettings {
            response_header: false,
            prices: Arc::new(crate::cost::builtin().clone()),
            overrides: Vec::new(),
        }
    }
}

/// The table follows from the overrides: comparing those is enough.
impl PartialEq for CostSettings {
    fn eq(&self, other: &Self) -> bool {
        self.response_header == other.response_header && self.overrides == other.overrides
    }
}

/// Reads `[cost]` and `[[prices]]`; bad entries become config errors, each
/// naming `prices[i]` and the field.
pub(super) fn resolve(l: &mut Layers<'_>) -> CostSettings {
    let response_header = l.parsed(
        Some("LLMTAP_COST_HEADER"),
        ("cost", "response_header"),
        false,
        parse_bool,
    );
    let values = match l.file.get("prices") {
        None => Vec::new(),
        Some(toml::Value::Array(a)) => a.clone(),
        Some(other) => {
            let msg = format!(
                "prices: expected an array of tables ([[prices]]), got {}",
                other.type_str()
            );
            l.errors.push(msg);
            Vec::new()
        }
    };
    let merged = table::parse_entries(&values).and_then(|entries| {
        let table = crate::cost::builtin().clone().with(entries.clone())?;
        Ok((table, entries))
    });
    let (prices, overrides) = match merged {
        Ok(t) => t,
        Err(errors) => {
            l.errors.extend(errors);
            (crate::cost::builtin().clone(), Vec::new())
        }
    };
    CostSettings {
        response_header,
        prices: Arc::new(prices),
        overrides,
    }
}

#[cfg(test)]
mod tests {
    use crate::config::{resolve, Env, Flags};

    fn load(file: &str, env: &[(&str, &str)]) -> Result<crate::config::Config, String> {
        let env: Env = env
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        resolve(&Flags::default(), &env, Some(file)).map_err(|e| e.to_string())
    }

    #[test]
    fn prices_are_merged_and_bad_ones_reported() {
        let c = load(
            "[[prices]]\nmodel = \"house-model\"\ninput = 1.0\noutput = 2.0\n[[prices]]\nmodel = \"gpt-4o\"\ninput = 9.0\noutput = 9.0\n",
            &[],
        )
        .unwrap();
        assert_eq!(c.cost.prices.price("house-model").unwrap().base.output, 2.0);
        assert_eq!(
            c.cost.prices.price("gpt-4o-2024-08-06").unwrap().base.input,
            9.0
        );
        assert!(!c.cost.response_header);
        let err = load("[[prices]]\nmodel = \"x\"\ninput = -1.0\n", &[]).unwrap_err();
        assert!(err.contains("prices[0] (`x`)"), "{err}");
        let err = load("prices = 3\n", &[]).unwrap_err();
        assert!(err.contains("prices: expected an array of tables"), "{err}");
    }

    #[test]
    fn the_header_and_sessions_come_from_file_and_env() {
        let c = load(
            "[cost]\nresponse_header = true\n[sessions]\nttl = \"1h\"\n",
            &[],
        )
        .unwrap();
        assert!(c.cost.response_header);
        assert_eq!(c.sessions.ttl, std::time::Duration::from_secs(3600));
        let c = load(
            "",
            &[
                ("LLMTAP_SESSION_HISTORY", "false"),
                ("LLMTAP_COST_HEADER", "true"),
            ],
        )
        .unwrap();
        assert!(!c.sessions.history && c.cost.response_header);
        let err = load("[sessions]\nhistory = \"maybe\"\n", &[]).unwrap_err();
        assert!(err.contains("sessions.history"), "{err}");
        let err = load("[cost]\nheader = true\n", &[]).unwrap_err();
        assert!(err.contains("cost.header: unknown key"), "{err}");
    }
}
