//! Token usage: normalise provider `usage` objects into one [`Usage`] shape.
//!
//! OpenAI Chat Completions / Completions / Embeddings report
//! `prompt_tokens` / `completion_tokens` / `total_tokens` with optional
//! `prompt_tokens_details.cached_tokens` and
//! `completion_tokens_details.reasoning_tokens`; the Responses API uses
//! `input_tokens` / `output_tokens` with `input_tokens_details` /
//! `output_tokens_details`. Both map onto [`Usage`]. Only what the provider
//! reported is kept: optional counters stay `None` when absent, and a body
//! without any token counts yields no `Usage` at all (never invented zeros).
//! Anthropic Messages report `input_tokens` *excluding* prompt-cache reads and
//! writes; [`Usage::from_anthropic`] folds them back in the way MLflow's own
//! Anthropic autologging does.
//! [`Usage::to_mlflow_json`] renders MLflow's `mlflow.chat.tokenUsage` value.

use serde_json::{json, Map, Value};

/// Normalised token counts for one LLM call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize)]
pub struct Usage {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub total_tokens: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_read_input_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_creation_input_tokens: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reasoning_tokens: Option<u64>,
    /// The part of `cache_creation_input_tokens` written with Anthropic's
    /// 1-hour TTL (`usage.cache_creation.ephemeral_1h_input_tokens`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache_creation_1h_input_tokens: Option<u64>,
}

/// A non-negative integer count; tolerates integral floats (`12.0`) that some
/// OpenAI-compatible servers emit.
fn count(v: Option<&Value>) -> Option<u64> {
    let v = v?;
    if let Some(n) = v.as_u64() {
        return Some(n);
    }
    let f = v.as_f64()?;
    // Saturating float-to-int conversion is intended: counts never exceed u64.
    (f.is_finite() && f >= 0.0 && f.fract() == 0.0).then_some(f as u64)
}

/// `obj[outer][inner]` as a count, trying each `outer` key in turn.
fn nested(obj: &Map<String, Value>, outers: &[&str], inner: &str) -> Option<u64> {
    outers
        .iter()
        .find_map(|outer| count(obj.get(*outer).and_then(|d| d.get(inner))))
}

impl Usage {
    /// From an OpenAI `usage` object (chat/completions/embeddings) or the
    /// Responses-API shape. Returns `None` when `v` is not an object or
    /// carries neither an input count nor `total_tokens`.
    pub fn from_openai(v: &Value) -> Option<Usage> {
        let obj = v.as_object()?;
        let input = count(obj.get("prompt_tokens")).or_else(|| count(obj.get("input_tokens")));
        let total = count(obj.get("total_tokens"));
        if input.is_none() && total.is_none() {
            return None;
        }
        let input_tokens = input.unwrap_or(0);
        let output_tokens = count(obj.get("completion_tokens"))
            .or_else(|| count(obj.get("output_tokens")))
            .unwrap_or(0);
        let details_in = ["prompt_tokens_details", "input_tokens_details"];
        let details_out = ["completion_tokens_details", "output_tokens_details"];
        Some(Usage {
            input_tokens,
            output_tokens,
            total_tokens: total.unwrap_or(input_tokens.saturating_add(output_tokens)),
            cache_read_input_tokens: nested(obj, &details_in, "cached_tokens")
                .or_else(|| count(obj.get("cache_read_input_tokens"))),
            cache_creation_input_tokens: count(obj.get("cache_creation_input_tokens")),
            reasoning_tokens: nested(obj, &details_out, "reasoning_tokens"),
            cache_creation_1h_input_tokens: None,
        })
    }

    /// From an Anthropic Messages `usage` object (non-stream body, or the
    /// merge of a stream's `message_start` and `message_delta` usage).
    ///
    /// The rule is MLflow's own, from `_parse_usage` in
    /// `mlflow/anthropic/autolog.py` (mlflow-tracing 3.17.2; introduced by
    /// mlflow/mlflow PR #22516, "same logic as `_normalize_anthropic_input_tokens`
    /// in `gateway/providers/anthropic.py`"):
    ///
    /// - `cache_read_input_tokens` / `cache_creation_input_tokens` are copied
    ///   whenever present and not null, zero included;
    /// - Anthropic's `input_tokens` excludes cache tokens, so
    ///   `input_tokens = input_tokens + cache_read + cache_creation`;
    /// - `total_tokens = input_tokens (normalised) + output_tokens` (Anthropic
    ///   reports no total).
    ///
    /// MLflow also records `cache_creation_input_tokens_above_1hr` from
    /// `cache_creation.ephemeral_1h_input_tokens` (whenever present); so
    /// does [`Usage::cache_creation_1h_input_tokens`]. Returns `None` when `v` is not an object
    /// or carries none of `input_tokens`, `output_tokens` and the two cache
    /// counters; a missing `input_tokens` or `output_tokens` counts as 0.
    pub fn from_anthropic(v: &Value) -> Option<Usage> {
        let obj = v.as_object()?;
        let input = count(obj.get("input_tokens"));
        let output = count(obj.get("output_tokens"));
        let cache_read = count(obj.get("cache_read_input_tokens"));
        let cache_creation = count(obj.get("cache_creation_input_tokens"));
        if input.is_none() && output.is_none() && cache_read.is_none() && cache_creation.is_none() {
            return None;
        }
        let input_tokens = input
            .unwrap_or(0)
            .saturating_add(cache_read.unwrap_or(0))
            .saturating_add(cache_creation.unwrap_or(0));
        let output_tokens = output.unwrap_or(0);
        Some(Usage {
            input_tokens,
            output_tokens,
            total_tokens: input_tokens.saturating_add(output_tokens),
            cache_read_input_tokens: cache_read,
            cache_creation_input_tokens: cache_creation,
            reasoning_tokens: None,
            cache_creation_1h_input_tokens: nested(
                obj,
                &["cache_creation"],
                "ephemeral_1h_input_tokens",
            ),
        })
    }

    /// The `mlflow.chat.tokenUsage` attribute value. Cache counters are
    /// included only when known; `reasoning_tokens` is omitted because
    /// MLflow's token-usage schema has no such key.
    pub fn to_mlflow_json(&self) -> Value {
        let mut v = json!({
            "input_tokens": self.input_tokens,
            "output_tokens": self.output_tokens,
            "total_tokens": self.total_tokens,
        });
        if let Some(obj) = v.as_object_mut() {
            if let Some(n) = self.cache_read_input_tokens {
                obj.insert("cache_read_input_tokens".into(), n.into());
            }
            if let Some(n) = self.cache_creation_input_tokens {
                obj.insert("cache_creation_input_tokens".into(), n.into());
            }
            if let Some(n) = self.cache_creation_1h_input_tokens {
                obj.insert("cache_creation_input_tokens_above_1hr".into(), n.into());
            }
        }
        v
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chat_usage_with_details() {
        let v = json!({"prompt_tokens": 1342, "completion_tokens": 8, "total_tokens": 1350,
            "prompt_tokens_details": {"cached_tokens": 1280, "audio_tokens": 0},
            "completion_tokens_details": {"reasoning_tokens": 64}});
        let u = Usage::from_openai(&v).expect("usage");
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.total_tokens),
            (1342, 8, 1350)
        );
        assert_eq!(u.cache_read_input_tokens, Some(1280));
        assert_eq!(u.reasoning_tokens, Some(64));
        assert_eq!(u.cache_creation_input_tokens, None);
        assert_eq!(
            u.to_mlflow_json(),
            json!({"input_tokens": 1342, "output_tokens": 8, "total_tokens": 1350,
                "cache_read_input_tokens": 1280})
        );
    }

    #[test]
    fn embeddings_usage_has_no_completion() {
        let u = Usage::from_openai(&json!({"prompt_tokens": 8, "total_tokens": 8})).expect("usage");
        assert_eq!(
            u,
            Usage {
                input_tokens: 8,
                total_tokens: 8,
                ..Usage::default()
            }
        );
        assert_eq!(
            u.to_mlflow_json(),
            json!({"input_tokens": 8, "output_tokens": 0, "total_tokens": 8})
        );
    }

    #[test]
    fn anthropic_one_hour_cache_writes_are_kept_as_mlflow_names_them() {
        let v = json!({"input_tokens": 10, "output_tokens": 5, "cache_creation_input_tokens": 300,
            "cache_creation": {"ephemeral_5m_input_tokens": 100, "ephemeral_1h_input_tokens": 200}});
        let u = Usage::from_anthropic(&v).expect("usage");
        assert_eq!(u.cache_creation_1h_input_tokens, Some(200));
        assert_eq!(
            u.to_mlflow_json()["cache_creation_input_tokens_above_1hr"],
            json!(200)
        );
        let plain = Usage::from_anthropic(&json!({"input_tokens": 1})).expect("usage");
        assert_eq!(plain.cache_creation_1h_input_tokens, None);
    }

    #[test]
    fn total_is_derived_when_missing() {
        let u =
            Usage::from_openai(&json!({"prompt_tokens": 5, "completion_tokens": 7})).expect("u");
        assert_eq!(u.total_tokens, 12);
    }

    #[test]
    fn responses_api_shape() {
        let v = json!({"input_tokens": 36, "input_tokens_details": {"cached_tokens": 4},
            "output_tokens": 87, "output_tokens_details": {"reasoning_tokens": 32},
            "total_tokens": 123});
        let u = Usage::from_openai(&v).expect("usage");
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.total_tokens),
            (36, 87, 123)
        );
        assert_eq!(
            (u.cache_read_input_tokens, u.reasoning_tokens),
            (Some(4), Some(32))
        );
    }

    #[test]
    fn compat_cache_fields_and_float_counts() {
        let v = json!({"prompt_tokens": 10.0, "completion_tokens": 2, "total_tokens": 12,
            "cache_read_input_tokens": 3, "cache_creation_input_tokens": 5});
        let u = Usage::from_openai(&v).expect("usage");
        assert_eq!(u.input_tokens, 10);
        assert_eq!(
            (u.cache_read_input_tokens, u.cache_creation_input_tokens),
            (Some(3), Some(5))
        );
        let m = u.to_mlflow_json();
        assert_eq!(m["cache_creation_input_tokens"], 5);
        assert!(m.get("reasoning_tokens").is_none());
    }

    #[test]
    fn rejects_non_usage_values() {
        for v in [
            json!(null),
            json!([1, 2]),
            json!("12"),
            json!({}),
            json!({"completion_tokens": 3}),
            json!({"prompt_tokens": -1}),
            json!({"prompt_tokens": "12"}),
        ] {
            assert_eq!(Usage::from_openai(&v), None, "{v}");
        }
    }

    #[test]
    fn anthropic_plain_usage_matches_mlflow_autolog() {
        // MLflow's tests/anthropic/test_anthropic_autolog.py: 10 in / 18 out.
        let u = Usage::from_anthropic(&json!({"input_tokens": 10, "output_tokens": 18}))
            .expect("usage");
        assert_eq!(
            u.to_mlflow_json(),
            json!({"input_tokens": 10, "output_tokens": 18, "total_tokens": 28})
        );
        // Explicit nulls (the SDK's `cache_*: None`) are not counters.
        let v = json!({"input_tokens": 10, "output_tokens": 18,
            "cache_creation_input_tokens": null, "cache_read_input_tokens": null});
        assert_eq!(Usage::from_anthropic(&v), Some(u));
    }

    #[test]
    fn anthropic_cache_tokens_fold_into_input() {
        let v = json!({"input_tokens": 50, "output_tokens": 20,
            "cache_creation_input_tokens": 15, "cache_read_input_tokens": 25,
            "cache_creation": {"ephemeral_5m_input_tokens": 15, "ephemeral_1h_input_tokens": 0},
            "service_tier": "standard"});
        let u = Usage::from_anthropic(&v).expect("usage");
        assert_eq!(
            u,
            Usage {
                input_tokens: 90,
                output_tokens: 20,
                total_tokens: 110,
                cache_read_input_tokens: Some(25),
                cache_creation_input_tokens: Some(15),
                reasoning_tokens: None,
                cache_creation_1h_input_tokens: Some(0),
            }
        );
        // MLflow's autologging records the 1h part whenever present, 0 too.
        assert_eq!(
            u.to_mlflow_json(),
            json!({"input_tokens": 90, "output_tokens": 20, "total_tokens": 110,
                "cache_read_input_tokens": 25, "cache_creation_input_tokens": 15,
                "cache_creation_input_tokens_above_1hr": 0})
        );
        // Zero cache counters are still reported, as MLflow does.
        let zeros = json!({"input_tokens": 12, "output_tokens": 3,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": 0});
        let m = Usage::from_anthropic(&zeros)
            .expect("usage")
            .to_mlflow_json();
        assert_eq!(
            m,
            json!({"input_tokens": 12, "output_tokens": 3, "total_tokens": 15,
                "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0})
        );
    }

    #[test]
    fn anthropic_partial_and_invalid_usage() {
        // A stream whose message_start was lost: only the delta's output count.
        let u = Usage::from_anthropic(&json!({"output_tokens": 7})).expect("usage");
        assert_eq!((u.input_tokens, u.output_tokens, u.total_tokens), (0, 7, 7));
        let u = Usage::from_anthropic(&json!({"input_tokens": 4.0, "output_tokens": 1}))
            .expect("usage");
        assert_eq!(u.total_tokens, 5);
        for v in [
            json!(null),
            json!([]),
            json!({}),
            json!({"service_tier": "standard"}),
            json!({"input_tokens": "12"}),
            json!({"input_tokens": -1, "cache_read_input_tokens": null}),
        ] {
            assert_eq!(Usage::from_anthropic(&v), None, "{v}");
        }
        let huge =
            json!({"input_tokens": u64::MAX, "cache_read_input_tokens": 1, "output_tokens": 1});
        assert_eq!(
            Usage::from_anthropic(&huge).map(|u| u.total_tokens),
            Some(u64::MAX)
        );
    }

    #[test]
    fn serializes_without_absent_options() {
        let u = Usage {
            input_tokens: 1,
            output_tokens: 2,
            total_tokens: 3,
            ..Usage::default()
        };
        let s = serde_json::to_value(u).expect("serialize");
        assert_eq!(
            s,
            json!({"input_tokens": 1, "output_tokens": 2, "total_tokens": 3})
        );
    }
}
