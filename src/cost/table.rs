//! The price table: parsed from TOML (the shipped `data/prices.toml`, and
//! `[[prices]]` entries from the config that override or extend it).
//!
//! Prices are USD per million tokens. An entry names a model and either its
//! rates (`input` and `output` required; `cache_read`, `cache_write`,
//! `cache_write_1h`, `reasoning` optional), or `same_as = "<model>"` to bill
//! a custom name (a Databricks serving endpoint, a proxy alias) like another
//! model. `tiers.<service_tier>` holds the rates of a service tier (OpenAI
//! `flex` / `priority`, `batch`); a rate a tier leaves out is the base rate
//! scaled by the tier's input ratio. `long_context = [{ above = N, ... }]`
//! holds the rates billed when the prompt is longer than N tokens (Gemini
//! 2.5 Pro, Claude Sonnet 4/4.5 over 200k). Parsing is pure; errors name the
//! entry and the field.

use std::collections::{BTreeMap, HashMap};

use serde::Deserialize;

use super::normalize::{candidates, undated};

/// The rate fields of an entry or a long-context block.
macro_rules! rates_of {
    ($r:expr) => {
        RawRates {
            input: $r.input,
            output: $r.output,
            cache_read: $r.cache_read,
            cache_write: $r.cache_write,
            cache_write_1h: $r.cache_write_1h,
            reasoning: $r.reasoning,
        }
    };
}

/// One set of rates, USD per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub struct Rates {
    pub input: f64,
    pub output: f64,
    /// Prompt-cache hits; `None`: billed as input.
    pub cache_read: Option<f64>,
    /// Prompt-cache writes (Anthropic's 5-minute TTL); `None`: billed as input.
    pub cache_write: Option<f64>,
    /// Anthropic 1-hour cache writes; `None`: billed as `cache_write`.
    pub cache_write_1h: Option<f64>,
    /// Reasoning tokens, where priced apart from output; `None`: as output.
    pub reasoning: Option<f64>,
}

/// The prices of one model.
#[derive(Debug, Clone, PartialEq)]
pub struct Price {
    /// The model as the table names it.
    pub model: String,
    pub provider: Option<String>,
    pub base: Rates,
    /// Service tier (lowercase) -> its rates, every field resolved.
    pub tiers: BTreeMap<String, Rates>,
    /// `(above, rates)`, ascending: rates for prompts longer than `above`.
    pub long_context: Vec<(u64, Rates)>,
    /// Where the numbers come from (`memory` marks unverified ones).
    pub source: Option<String>,
}

/// All known prices, looked up through [`candidates`].
#[derive(Debug, Clone, Default)]
pub struct PriceTable {
    /// The date the shipped prices were taken.
    pub date: String,
    /// Provider -> its pricing page.
    pub sources: BTreeMap<String, String>,
    entries: HashMap<String, Price>,
    /// Base-model key -> the dated entry it reaches (`claude-3-5-sonnet` ->
    /// `claude-3-5-sonnet-20241022`) when no entry has the base key itself.
    aliases: HashMap<String, String>,
    /// Model names seen in calls -> the entry key they resolved to, so that
    /// a model's name is normalised once, not on every call (bounded:
    /// cleared when it reaches [`MAX_RESOLVED`] names).
    resolved: dashmap::DashMap<String, Option<String>>,
}

/// Distinct model names remembered by [`PriceTable::price`].
const MAX_RESOLVED: usize = 4096;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    date: String,
    #[serde(default)]
    sources: BTreeMap<String, String>,
    prices: Vec<toml::Value>,
}

#[derive(Deserialize, Default, Clone, Copy)]
#[serde(deny_unknown_fields)]
struct RawRates {
    input: Option<f64>,
    output: Option<f64>,
    cache_read: Option<f64>,
    cache_write: Option<f64>,
    cache_write_1h: Option<f64>,
    reasoning: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLong {
    above: u64,
    input: Option<f64>,
    output: Option<f64>,
    cache_read: Option<f64>,
    cache_write: Option<f64>,
    cache_write_1h: Option<f64>,
    reasoning: Option<f64>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPrice {
    model: String,
    provider: Option<String>,
    same_as: Option<String>,
    source: Option<String>,
    input: Option<f64>,
    output: Option<f64>,
    cache_read: Option<f64>,
    cache_write: Option<f64>,
    cache_write_1h: Option<f64>,
    reasoning: Option<f64>,
    #[serde(default)]
    tiers: BTreeMap<String, RawRates>,
    #[serde(default)]
    long_context: Vec<RawLong>,
}

/// A parsed `[[prices]]` entry: a price, or an alias resolved on merge.
#[derive(Debug, Clone, PartialEq)]
pub enum Entry {
    Price(Price),
    SameAs { model: String, target: String },
}

impl PriceTable {
    /// Parses a whole price file (`date`, `[sources]`, `[[prices]]`).
    pub fn parse(text: &str) -> Result<PriceTable, Vec<String>> {
        let raw: RawFile = toml::from_str(text).map_err(|e| vec![e.message().to_string()])?;
        let entries = parse_entries(&raw.prices)?;
        let table = PriceTable {
            date: raw.date,
            sources: raw.sources,
            entries: HashMap::new(),
            aliases: HashMap::new(),
            resolved: Default::default(),
        };
        table.merge(entries, false)
    }

    /// This table with `entries` (the config's) added. An entry replaces the
    /// price of the same model and of its dated snapshots: an override of
    /// `claude-sonnet-4` also prices `claude-sonnet-4-20250514`.
    pub fn with(self, entries: Vec<Entry>) -> Result<PriceTable, Vec<String>> {
        self.merge(entries, true)
    }

    fn insert(&mut self, p: Price, replace_snapshots: bool) {
        self.resolved.clear();
        let key = p.model.trim().to_ascii_lowercase();
        if replace_snapshots {
            self.entries.retain(|k, _| *k == key || undated(k) != key);
        }
        self.entries.insert(key, p);
    }

    /// Rebuilds [`PriceTable::aliases`]; the latest snapshot wins a tie.
    fn index(&mut self) {
        let mut keys: Vec<&String> = self.entries.keys().collect();
        keys.sort();
        self.aliases.clear();
        for k in keys {
            let base = undated(k);
            if base != *k && !self.entries.contains_key(&base) {
                self.aliases.insert(base, k.clone());
            }
        }
    }

    fn merge(mut self, entries: Vec<Entry>, overrides: bool) -> Result<PriceTable, Vec<String>> {
        let mut errors = Vec::new();
        for e in entries {
            match e {
                Entry::Price(p) => self.insert(p, overrides),
                Entry::SameAs { model, target } => match self.price(&target) {
                    Some(p) => {
                        let alias = Price {
                            model: model.clone(),
                            ..p.clone()
                        };
                        self.insert(alias, overrides);
                    }
                    None => errors.push(format!(
                        "prices: `{model}`: same_as names `{target}`, which has no price"
                    )),
                },
            }
        }
        self.index();
        if errors.is_empty() {
            Ok(self)
        } else {
            Err(errors)
        }
    }

    /// The price of `model` (any spelling [`candidates`] knows), or `None`.
    pub fn price(&self, model: &str) -> Option<&Price> {
        if let Some(key) = self.resolved.get(model) {
            return key.as_deref().and_then(|k| self.entries.get(k));
        }
        let key = candidates(model).iter().find_map(|key| {
            let key = self.aliases.get(key).unwrap_or(key);
            self.entries.get_key_value(key).map(|(k, _)| k.clone())
        });
        if self.resolved.len() >= MAX_RESOLVED {
            self.resolved.clear();
        }
        self.resolved.insert(model.to_string(), key.clone());
        key.and_then(|k| self.entries.get(&k))
    }

    /// Every price, in no particular order.
    pub fn prices(&self) -> impl Iterator<Item = &Price> {
        self.entries.values()
    }
}

/// Parses `[[prices]]` entries (the shipped file's, or the config's),
/// reporting every bad entry; each error names `prices[i]` and the model.
pub fn parse_entries(values: &[toml::Value]) -> Result<Vec<Entry>, Vec<String>> {
    let mut out = Vec::new();
    let mut errors = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let raw = match RawPrice::deserialize(v.clone()) {
            Ok(r) => r,
            Err(e) => {
                errors.push(format!("prices[{i}]: {}", e.message()));
                continue;
            }
        };
        let at = format!("prices[{i}] (`{}`)", raw.model);
        match entry(raw) {
            Ok(e) => out.push(e),
            Err(msgs) => errors.extend(msgs.into_iter().map(|m| format!("{at}: {m}"))),
        }
    }
    if errors.is_empty() {
        Ok(out)
    } else {
        Err(errors)
    }
}

fn entry(raw: RawPrice) -> Result<Entry, Vec<String>> {
    if raw.model.trim().is_empty() {
        return Err(vec!["model must not be empty".into()]);
    }
    if let Some(target) = raw.same_as {
        let r = rates_of!(raw);
        let has_rates = [
            r.input,
            r.output,
            r.cache_read,
            r.cache_write,
            r.cache_write_1h,
        ]
        .iter()
        .any(Option::is_some);
        if has_rates || !raw.tiers.is_empty() || !raw.long_context.is_empty() {
            return Err(vec!["same_as takes no rates of its own".into()]);
        }
        return Ok(Entry::SameAs {
            model: raw.model,
            target,
        });
    }
    let mut errors = Vec::new();
    let base = base_rates(rates_of!(raw), "", &mut errors);
    let mut tiers = BTreeMap::new();
    for (name, t) in raw.tiers {
        let rates = tier_rates(&base, t, &format!("tiers.{name}."), &mut errors);
        tiers.insert(name.to_ascii_lowercase(), rates);
    }
    let mut long_context = Vec::new();
    for (i, l) in raw.long_context.iter().enumerate() {
        let rates = tier_rates(
            &base,
            rates_of!(l),
            &format!("long_context[{i}]."),
            &mut errors,
        );
        long_context.push((l.above, rates));
    }
    long_context.sort_by_key(|(above, _)| *above);
    if !errors.is_empty() {
        return Err(errors);
    }
    Ok(Entry::Price(Price {
        model: raw.model,
        provider: raw.provider,
        base,
        tiers,
        long_context,
        source: raw.source,
    }))
}

/// A rate must be a finite number >= 0.
fn checked(v: Option<f64>, name: &str, errors: &mut Vec<String>) -> Option<f64> {
    let v = v?;
    if v.is_finite() && v >= 0.0 {
        Some(v)
    } else {
        errors.push(format!(
            "{name} must be a number >= 0 (USD per million tokens)"
        ));
        None
    }
}

fn base_rates(r: RawRates, at: &str, errors: &mut Vec<String>) -> Rates {
    let mut need = |v: Option<f64>, name: &str| {
        let got = checked(v, &format!("{at}{name}"), errors);
        if v.is_none() {
            errors.push(format!("{at}{name} is required"));
        }
        got.unwrap_or(0.0)
    };
    let input = need(r.input, "input");
    let output = need(r.output, "output");
    Rates {
        input,
        output,
        cache_read: checked(r.cache_read, &format!("{at}cache_read"), errors),
        cache_write: checked(r.cache_write, &format!("{at}cache_write"), errors),
        cache_write_1h: checked(r.cache_write_1h, &format!("{at}cache_write_1h"), errors),
        reasoning: checked(r.reasoning, &format!("{at}reasoning"), errors),
    }
}

/// A tier or long-context block: what it leaves out is the base rate times
/// the block's input ratio (or its output ratio when it gives no input).
fn tier_rates(base: &Rates, r: RawRates, at: &str, errors: &mut Vec<String>) -> Rates {
    let input = checked(r.input, &format!("{at}input"), errors);
    let output = checked(r.output, &format!("{at}output"), errors);
    let ratio = match (input, output) {
        (Some(i), _) if base.input > 0.0 => i / base.input,
        (_, Some(o)) if base.output > 0.0 => o / base.output,
        (None, None) => {
            errors.push(format!("{at}input or {at}output is required"));
            1.0
        }
        _ => 1.0,
    };
    let scaled = |v: Option<f64>, given: Option<f64>| given.or(v.map(|b| b * ratio));
    Rates {
        input: input.unwrap_or(base.input * ratio),
        output: output.unwrap_or(base.output * ratio),
        cache_read: scaled(
            base.cache_read,
            checked(r.cache_read, &format!("{at}cache_read"), errors),
        ),
        cache_write: scaled(
            base.cache_write,
            checked(r.cache_write, &format!("{at}cache_write"), errors),
        ),
        cache_write_1h: scaled(
            base.cache_write_1h,
            checked(r.cache_write_1h, &format!("{at}cache_write_1h"), errors),
        ),
        reasoning: scaled(
            base.reasoning,
            checked(r.reasoning, &format!("{at}reasoning"), errors),
        ),
    }
}
