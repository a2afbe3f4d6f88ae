//! Cost: what an LLM call cost in USD, from its token usage and a price table.
//!
//! - [`table`]: the price table (USD per million tokens; service tiers,
//!   long-context tiers) parsed from TOML; [`builtin`] is the one shipped in
//!   `data/prices.toml`; [`table::parse_entries`] parses the config's
//!   `[[prices]]` overrides, [`PriceTable::with`] applies them.
//! - [`normalize`]: the spellings of a model id a price is found under.
//! - [`compute`]: [`Tokens`] x [`Price`] -> [`Cost`] (`mlflow.llm.cost`).
//!
//! An unknown model has no price and so no cost: callers record nothing (never
//! 0) and count it. All of it is pure.

pub mod compute;
pub mod normalize;
pub mod table;

use std::sync::OnceLock;

pub use compute::{cost, Cost, Tokens};
pub use table::{Entry, Price, PriceTable, Rates};

/// The shipped price file.
pub const PRICES_TOML: &str = include_str!("../../data/prices.toml");

/// The shipped price table, parsed once. A parse failure is a build defect
/// (the unit tests parse the same text), hence the panic.
pub fn builtin() -> &'static PriceTable {
    static TABLE: OnceLock<PriceTable> = OnceLock::new();
    TABLE.get_or_init(|| {
        PriceTable::parse(PRICES_TOML)
            .unwrap_or_else(|e| panic!("data/prices.toml does not parse: {e:?}"))
    })
}

/// The cost of one call of `model` with `usage`, at `service_tier` (as the
/// response reported it: OpenAI `service_tier`, Anthropic
/// `usage.service_tier`), or `None` when `table` has no price for `model`.
pub fn of(
    table: &PriceTable,
    model: &str,
    usage: &crate::parse::usage::Usage,
    service_tier: Option<&str>,
) -> Option<Cost> {
    let price = table.price(model)?;
    Some(cost(&Tokens::from(usage), price, service_tier))
}

#[cfg(test)]
mod tests;
