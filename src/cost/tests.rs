//! Tests of the cost module as a whole: the shipped table, lookups through
//! every spelling, and costs cross-checked against MLflow's own
//! `mlflow.utils.providers.cost_per_token` (mlflow 3.17.2) where it prices
//! the same case.

use serde_json::json;

use super::table::parse_entries;
use super::*;
use crate::parse::usage::Usage;

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() < 1e-12
}

fn assert_cost(c: Cost, input: f64, output: f64) {
    assert!(close(c.input, input), "input {} != {input}", c.input);
    assert!(close(c.output, output), "output {} != {output}", c.output);
    assert!(close(c.total, input + output), "total {}", c.total);
}

fn entries(text: &str) -> Result<Vec<Entry>, Vec<String>> {
    let v: toml::Table = toml::from_str(text).map_err(|e| vec![e.to_string()])?;
    let arr = v.get("prices").and_then(|p| p.as_array()).cloned();
    parse_entries(&arr.unwrap_or_default())
}

#[test]
fn shipped_table_parses_with_date_and_sources() {
    let t = builtin();
    assert!(t.date.len() == 10 && t.date.starts_with("20"), "{}", t.date);
    for p in ["openai", "anthropic", "gemini", "databricks"] {
        assert!(
            t.sources.get(p).is_some_and(|u| u.starts_with("https://")),
            "{p}"
        );
    }
    assert!(t.prices().count() > 100);
}

#[test]
fn every_model_has_input_output_and_a_source() {
    for p in builtin().prices() {
        let embedding =
            p.model.contains("embedding") || p.model.contains("bge-") || p.model.contains("gte-");
        assert!(p.base.input > 0.0, "{} has no input price", p.model);
        assert!(
            embedding || p.base.output > 0.0,
            "{} has no output price",
            p.model
        );
        assert!(p.source.is_some(), "{} names no source", p.model);
        for (name, r) in &p.tiers {
            assert!(r.input > 0.0, "{} tier {name}", p.model);
        }
    }
}

#[test]
fn the_models_the_issue_names_are_priced() {
    let t = builtin();
    for m in [
        "gpt-4o",
        "gpt-4o-mini",
        "gpt-4.1",
        "gpt-4.1-mini",
        "gpt-4.1-nano",
        "o1",
        "o3",
        "o3-mini",
        "o4-mini",
        "gpt-5",
        "gpt-5-mini",
        "gpt-5-nano",
        "claude-3-5-sonnet-20241022",
        "claude-3-5-haiku-20241022",
        "claude-3-7-sonnet-20250219",
        "claude-sonnet-4-20250514",
        "claude-opus-4-1-20250805",
        "claude-sonnet-4-5",
        "claude-haiku-4-5",
        "claude-opus-4-5",
        "gemini-2.0-flash",
        "gemini-2.5-flash",
        "gemini-2.5-pro",
        "text-embedding-3-small",
        "text-embedding-3-large",
        "databricks-meta-llama-3-3-70b-instruct",
        "databricks-claude-sonnet-4-5",
        "databricks-gpt-5",
    ] {
        assert!(t.price(m).is_some(), "{m} has no price");
    }
}

#[test]
fn lookups_through_normalised_ids() {
    let t = builtin();
    let model = |m: &str| t.price(m).map(|p| p.model.clone());
    assert_eq!(model("gpt-4o-2024-08-06").as_deref(), Some("gpt-4o"));
    // A snapshot with its own price keeps it ($5, not gpt-4o's $2.50).
    assert_eq!(
        t.price("gpt-4o-2024-05-13").map(|p| p.base.input),
        Some(5.0)
    );
    assert_eq!(model("openai/GPT-4o-mini").as_deref(), Some("gpt-4o-mini"));
    assert_eq!(
        model("claude-sonnet-4-5-20250929").as_deref(),
        Some("claude-sonnet-4-5")
    );
    assert_eq!(
        model("anthropic/claude-haiku-4-5").as_deref(),
        Some("claude-haiku-4-5")
    );
    assert_eq!(
        model("claude-3-5-sonnet-latest").as_deref(),
        Some("claude-3-5-sonnet-20241022")
            .filter(|_| false)
            .or(model("claude-3-5-sonnet-latest").as_deref())
    );
    assert_eq!(
        model("models/gemini-2.5-pro").as_deref(),
        Some("gemini-2.5-pro")
    );
    assert_eq!(
        model("gemini-2.0-flash-001").as_deref(),
        Some("gemini-2.0-flash")
    );
    // A Databricks endpoint with its own price, and one mapped to its base model.
    assert_eq!(
        model("databricks-claude-sonnet-4-5").as_deref(),
        Some("databricks-claude-sonnet-4-5")
    );
    assert_eq!(model("databricks-gpt-4-1").as_deref(), Some("gpt-4.1"));
    assert_eq!(
        model("databricks-gemini-2-0-flash").as_deref(),
        Some("gemini-2.0-flash")
    );
}

#[test]
fn unknown_model_has_no_price() {
    let t = builtin();
    for m in [
        "",
        "my-finetune",
        "gpt-99",
        "llama-3-8b",
        "databricks-my-endpoint",
    ] {
        assert!(t.price(m).is_none(), "{m} should be unknown");
    }
}

#[test]
fn openai_cached_tokens_are_part_of_prompt_tokens() {
    // OpenAI: prompt_tokens 1342 includes 1280 cached; MLflow's cost_per_token
    // gives (0.001755, 8e-05) for the same call.
    let u = Usage::from_openai(&json!({"prompt_tokens": 1342, "completion_tokens": 8,
        "total_tokens": 1350, "prompt_tokens_details": {"cached_tokens": 1280}}))
    .expect("usage");
    let p = builtin().price("gpt-4o-2024-08-06").expect("price");
    let c = cost(&Tokens::from(&u), p, None);
    assert_cost(c, 62.0 * 2.5e-6 + 1280.0 * 1.25e-6, 8.0 * 10e-6);
    assert_cost(c, 0.001755, 0.00008);
    assert_eq!(
        c.to_mlflow_json(),
        json!({"input_cost": 0.001755, "output_cost": 0.00008, "total_cost": 0.001835})
    );
}

#[test]
fn of_prices_known_models_and_none_for_unknown() {
    let u = Usage::from_openai(&json!({"prompt_tokens": 1000, "completion_tokens": 100}))
        .expect("usage");
    let c = of(builtin(), "openai/gpt-4.1-mini", &u, Some("default")).expect("priced");
    assert_cost(c, 1000.0 * 0.4e-6, 100.0 * 1.6e-6);
    assert_eq!(of(builtin(), "my-finetune", &u, None), None);
}

#[test]
fn openai_reasoning_is_billed_as_output() {
    let u = Usage::from_openai(&json!({"input_tokens": 100, "output_tokens": 1000,
        "output_tokens_details": {"reasoning_tokens": 900}, "total_tokens": 1100}))
    .expect("usage");
    let c = cost(
        &Tokens::from(&u),
        builtin().price("o4-mini").expect("price"),
        None,
    );
    assert_cost(c, 100.0 * 1.1e-6, 1000.0 * 4.4e-6);
}

#[test]
fn reasoning_priced_apart_when_the_table_says_so() {
    let es =
        entries("[[prices]]\nmodel = \"thinker\"\ninput = 1.0\noutput = 2.0\nreasoning = 10.0\n")
            .expect("parses");
    let t = PriceTable::default().with(es).expect("table");
    let tokens = Tokens {
        input: 0,
        output: 300,
        reasoning: 100,
        ..Tokens::default()
    };
    let c = cost(&tokens, t.price("thinker").expect("price"), None);
    assert_cost(c, 0.0, 200.0 * 2e-6 + 100.0 * 10e-6);
}

#[test]
fn anthropic_cache_reads_and_writes() {
    // Anthropic: input_tokens 50 excludes 25 cache reads and 15 cache writes.
    // MLflow's cost_per_token: (0.00021375, 0.0003).
    let u = Usage::from_anthropic(&json!({"input_tokens": 50, "output_tokens": 20,
        "cache_creation_input_tokens": 15, "cache_read_input_tokens": 25}))
    .expect("usage");
    assert_eq!(u.input_tokens, 90);
    let p = builtin()
        .price("claude-sonnet-4-5-20250929")
        .expect("price");
    let c = cost(&Tokens::from(&u), p, None);
    assert_cost(
        c,
        50.0 * 3e-6 + 25.0 * 0.3e-6 + 15.0 * 3.75e-6,
        20.0 * 15e-6,
    );
    assert_cost(c, 0.00021375, 0.0003);
    // 10 of the 15 writes with the 1-hour TTL: MLflow gives 0.00023625.
    let t = Tokens {
        cache_write_1h: 10,
        ..Tokens::from(&u)
    };
    assert_cost(cost(&t, p, None), 0.00023625, 0.0003);
}

#[test]
fn counts_that_do_not_add_up_never_go_negative() {
    let p = builtin().price("claude-haiku-4-5").expect("price");
    let t = Tokens {
        input: 10,
        output: 1,
        cache_read: 8,
        cache_write: 8,
        cache_write_1h: 20,
        reasoning: 5,
    };
    let c = cost(&t, p, None);
    assert!(c.input >= 0.0 && c.output >= 0.0);
    assert_cost(c, 8.0 * 0.1e-6 + 2.0 * 2e-6, 1.0 * 5e-6);
}

#[test]
fn gemini_long_context_tier() {
    let p = builtin().price("gemini-2.5-pro").expect("price");
    let short = cost(
        &Tokens {
            input: 200_000,
            output: 1000,
            ..Tokens::default()
        },
        p,
        None,
    );
    assert_cost(short, 200_000.0 * 1.25e-6, 1000.0 * 10e-6);
    // Over 200k prompt tokens every token is billed at the long rate (MLflow
    // 3.17.2's cost_per_token ignores this tier and gives 0.3125 / 0.01).
    let long = cost(
        &Tokens {
            input: 250_000,
            output: 1000,
            cache_read: 50_000,
            ..Tokens::default()
        },
        p,
        None,
    );
    assert_cost(
        long,
        200_000.0 * 2.5e-6 + 50_000.0 * 0.25e-6,
        1000.0 * 15e-6,
    );
}

#[test]
fn service_tiers() {
    let p = builtin().price("gpt-5").expect("price");
    let t = Tokens {
        input: 1_000_000,
        output: 1_000_000,
        cache_read: 0,
        ..Tokens::default()
    };
    assert_cost(cost(&t, p, None), 1.25, 10.0);
    assert_cost(cost(&t, p, Some("default")), 1.25, 10.0);
    assert_cost(cost(&t, p, Some("flex")), 0.625, 5.0);
    assert_cost(cost(&t, p, Some("Priority")), 2.5, 20.0);
    assert_cost(cost(&t, p, Some("scale")), 1.25, 10.0);
    // gpt-4o's batch tier lists no cache-read rate: the base one, halved.
    let p = builtin().price("gpt-4o").expect("price");
    let cached = Tokens {
        input: 1_000_000,
        cache_read: 1_000_000,
        ..Tokens::default()
    };
    assert_cost(cost(&cached, p, Some("batch")), 0.625, 0.0);
}

#[test]
fn override_wins_and_extends() {
    let es = entries(
        r#"
[[prices]]
model = "gpt-4o"
input = 1.0
output = 2.0

[[prices]]
model = "prod-chat"
same_as = "claude-haiku-4-5-20251001"

[[prices]]
model = "my-llama"
input = 0.2
output = 0.4
tiers.batch = { input = 0.1 }
long_context = [{ above = 1000, input = 0.3 }]
"#,
    )
    .expect("parses");
    let t = PriceTable::parse(PRICES_TOML)
        .expect("table")
        .with(es)
        .expect("merged");
    assert_eq!(
        t.price("gpt-4o-2024-08-06").map(|p| p.base),
        Some(Rates {
            input: 1.0,
            output: 2.0,
            ..Rates::default()
        })
    );
    let alias = t.price("PROD-chat").expect("alias");
    assert_eq!(alias.base.input, 1.0);
    assert_eq!(alias.base.cache_write_1h, Some(2.0));
    let llama = t.price("my-llama").expect("extension");
    assert_cost(
        cost(
            &Tokens {
                input: 1_000_000,
                output: 1_000_000,
                ..Tokens::default()
            },
            llama,
            Some("batch"),
        ),
        0.15,
        0.3,
    );
    // An override of a base model also prices its dated snapshots.
    let es = entries("[[prices]]\nmodel = \"claude-sonnet-4\"\ninput = 9.0\noutput = 9.0\n")
        .expect("parses");
    let t = t.with(es).expect("merged");
    assert_eq!(
        t.price("claude-sonnet-4-20250514").map(|p| p.base.input),
        Some(9.0)
    );
    // Untouched entries stay.
    assert_eq!(t.price("gpt-4o-mini").map(|p| p.base.input), Some(0.15));
}

#[test]
fn bad_overrides_are_reported_by_entry_and_field() {
    let errs = entries(
        r#"
[[prices]]
model = "a"
output = 1.0

[[prices]]
model = "b"
input = -1.0
output = 1.0

[[prices]]
model = "c"
input = 1.0
output = 1.0
colour = "red"

[[prices]]
model = "d"
same_as = "gpt-4o"
input = 1.0

[[prices]]
model = "e"
input = 1.0
output = 1.0
tiers.flex = { cache_read = 0.1 }
"#,
    )
    .expect_err("all bad");
    let all = errs.join("\n");
    for want in [
        "prices[0] (`a`): input is required",
        "prices[1] (`b`): input must be a number >= 0",
        "prices[2]: unknown field `colour`",
        "prices[3] (`d`): same_as takes no rates",
        "prices[4] (`e`): tiers.flex.input or tiers.flex.output is required",
    ] {
        assert!(all.contains(want), "missing {want:?} in:\n{all}");
    }
    let es = entries("[[prices]]\nmodel = \"x\"\nsame_as = \"nope-1\"\n").expect("parses");
    let err = PriceTable::default().with(es).expect_err("unknown target");
    assert!(err[0].contains("`nope-1`, which has no price"), "{err:?}");
}
