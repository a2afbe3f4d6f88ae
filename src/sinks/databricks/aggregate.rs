//! Trace-level token usage and cost, summed over the trace's spans the way
//! MLflow's client does (`aggregate_usage_from_spans`,
//! `aggregate_cost_from_spans`): a span counts unless an ancestor already
//! carries the figure (no double counting of a parent's rollup).

use std::collections::HashMap;

use opentelemetry_proto::tonic::trace::v1::Span;
use serde_json::{Map, Value};

use crate::pydumps::Ordered;

use super::span_doc::stored_attribute;

/// Span attribute with a span's token usage.
pub const CHAT_USAGE: &str = "mlflow.chat.tokenUsage";
/// Span attribute with a span's cost in USD (`{"input_cost", "output_cost",
/// "total_cost"}`), set by `crate::pipeline::enrich`.
pub const LLM_COST: &str = "mlflow.llm.cost";

const USAGE_KEYS: [&str; 3] = ["input_tokens", "output_tokens", "total_tokens"];
const USAGE_OPTIONAL: [&str; 3] = [
    "cache_read_input_tokens",
    "cache_creation_input_tokens",
    "cache_creation_input_tokens_above_1hr",
];
const COST_KEYS: [&str; 3] = ["input_cost", "output_cost", "total_cost"];

/// The trace's token usage, or `None` when no span carries any.
pub fn usage(spans: &[&Span]) -> Option<Ordered> {
    aggregate(spans, CHAT_USAGE, &USAGE_KEYS, &USAGE_OPTIONAL, false)
}

/// The trace's cost, or `None` when no span carries any.
pub fn cost(spans: &[&Span]) -> Option<Ordered> {
    aggregate(spans, LLM_COST, &COST_KEYS, &[], true)
}

fn aggregate(
    spans: &[&Span],
    key: &str,
    keys: &[&str],
    optional: &[&str],
    float: bool,
) -> Option<Ordered> {
    let data: Vec<Option<Map<String, Value>>> = spans
        .iter()
        .map(|s| {
            let text = stored_attribute(s, key)?;
            match serde_json::from_str::<Value>(&text).ok()? {
                Value::Object(m) => Some(m),
                _ => None,
            }
        })
        .collect();
    let by_id: HashMap<&[u8], usize> = spans
        .iter()
        .enumerate()
        .map(|(i, s)| (s.span_id.as_slice(), i))
        .collect();
    let mut totals: Vec<(String, f64)> = keys.iter().map(|k| (k.to_string(), 0.0)).collect();
    let mut any = false;
    for (i, d) in data.iter().enumerate() {
        let Some(d) = d else { continue };
        if ancestor_has(spans, &by_id, &data, i) {
            continue;
        }
        any = true;
        for k in keys.iter().chain(optional.iter()) {
            let Some(v) = d.get(*k).and_then(Value::as_f64) else {
                continue;
            };
            match totals.iter_mut().find(|(name, _)| name == k) {
                Some((_, t)) => *t += v,
                None => totals.push((k.to_string(), v)),
            }
        }
    }
    any.then(|| {
        Ordered(
            totals
                .into_iter()
                .map(|(k, v)| {
                    let n = if float {
                        serde_json::json!(v)
                    } else {
                        serde_json::json!(v as i64)
                    };
                    (k, n)
                })
                .collect(),
        )
    })
}

/// Whether any ancestor of span `i` (within the trace) carries the figure.
fn ancestor_has(
    spans: &[&Span],
    by_id: &HashMap<&[u8], usize>,
    data: &[Option<Map<String, Value>>],
    i: usize,
) -> bool {
    let mut cur = i;
    for _ in 0..spans.len() {
        let parent = spans[cur].parent_span_id.as_slice();
        match by_id.get(parent) {
            Some(&p) if !parent.is_empty() => {
                if data[p].is_some() {
                    return true;
                }
                cur = p;
            }
            _ => return false,
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sinks::databricks::fixtures::*;

    #[test]
    fn usage_of_a_single_call() {
        let s = chat_span([1; 16], [1; 8]);
        let u = usage(&[&s]).unwrap();
        assert_eq!(
            crate::pydumps::dumps(&u, false),
            r#"{"input_tokens": 9, "output_tokens": 3, "total_tokens": 12}"#
        );
        let s = stream_span();
        let u = usage(&[&s]).unwrap();
        assert_eq!(
            crate::pydumps::dumps(&u, false),
            r#"{"input_tokens": 9, "output_tokens": 6, "total_tokens": 15, "cache_read_input_tokens": 4}"#
        );
    }

    #[test]
    fn no_usage_is_none_never_zero() {
        assert!(usage(&[&error_span()]).is_none());
        assert!(cost(&[&chat_span([1; 16], [1; 8])]).is_none());
    }

    #[test]
    fn a_childs_usage_under_a_parent_with_usage_is_not_counted_twice() {
        let root = chat_span([1; 16], [1; 8]);
        let child = child_span([1; 16], [2; 8], [1; 8]);
        let u = usage(&[&root, &child]).unwrap();
        assert_eq!(u.get("total_tokens"), Some(&Value::from(12)));
        // Two siblings under a root without usage both count.
        let a = child_span([1; 16], [2; 8], [9; 8]);
        let b = child_span([1; 16], [3; 8], [9; 8]);
        assert_eq!(
            usage(&[&a, &b]).unwrap().get("total_tokens"),
            Some(&Value::from(24))
        );
    }
}
