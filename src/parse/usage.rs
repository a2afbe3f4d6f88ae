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
