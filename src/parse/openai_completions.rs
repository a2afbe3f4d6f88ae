//! Legacy OpenAI Completions (`POST /v1/completions`): plain JSON or an SSE
//! stream, turned into an [`Outcome`].
//!
//! A stream is a series of `text_completion` objects, each with partial
//! `text` per choice, ended by `data: [DONE]`. They are merged back into the
//! equivalent non-stream object: text concatenated per choice `index` (so
//! `n > 1` interleavings come apart), legacy logprobs lists (`tokens`,
//! `token_logprobs`, `top_logprobs`, `text_offset`) appended, the last
//! `finish_reason` kept. Usage is read from whichever chunk carries it:
//! OpenAI's usage-only chunk (`choices: []`, with
//! `stream_options.include_usage`), whose byte range is reported, or the
//! last choice chunk as vLLM sends it. Malformed events are counted and
//! skipped; a cut stream yields whatever was reconstructed; absent usage
//! stays `None`.

use std::collections::BTreeMap;

use serde_json::{json, Map, Value};

use super::outcome::{Outcome, ProviderError, StreamFacts};
use super::sse::{self, SseEvent};
use super::usage::Usage;

/// Parse a complete (non-stream) JSON response body.
pub fn parse_json(body: &[u8]) -> Outcome {
    let body = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let Ok(v) = serde_json::from_slice::<Value>(body) else {
        return Outcome::default();
    };
    let mut finish: Vec<(u64, String)> = choices(&v)
        .iter()
        .enumerate()
        .filter_map(|(pos, c)| Some((index_of(c, pos), str_of(c.get("finish_reason"))?)))
        .collect();
    finish.sort_by_key(|(i, _)| *i);
    Outcome {
        usage: v.get("usage").and_then(Usage::from_openai),
        model: str_of(v.get("model")),
        response_id: str_of(v.get("id")),
        finish_reasons: finish.into_iter().map(|(_, f)| f).collect(),
        error: provider_error(&v),
        stream: None,
        response: Some(v),
    }
}

/// Parse a captured SSE stream of `text_completion` chunks.
pub fn parse_stream(body: &[u8]) -> Outcome {
    let mut acc = StreamAcc::default();
    let mut facts = StreamFacts::default();
    let mut error = None;
    for ev in sse::decode_all(body) {
        let data = ev.data.trim();
        if data == "[DONE]" {
            facts.saw_end = true;
            continue;
        }
        match serde_json::from_str::<Value>(data) {
            Ok(chunk) if chunk.is_object() => {
                if let Some(err) = provider_error(&chunk) {
                    error.get_or_insert(err);
                } else {
                    facts.chunks += 1;
                    acc.absorb(&chunk, &ev, &mut facts);
                }
            }
            _ if data.is_empty() => {} // e.g. `event: ping` without data
            _ => facts.bad_events += 1,
        }
    }
    let (built, finish_reasons) = acc.build();
    Outcome {
        usage: acc.usage.as_ref().and_then(Usage::from_openai),
        model: str_of(acc.top.get("model")),
        response_id: str_of(acc.top.get("id")),
        response: (facts.chunks > 0).then_some(built),
        finish_reasons,
        error,
        stream: Some(facts),
    }
}

/// Chooses by content: a body starting (after whitespace) with `{` is JSON;
/// otherwise it is SSE when `is_event_stream` or when it starts like an SSE
/// field (`data:`, `event:`, `id:`, `:`), else it is treated as (non-)JSON.
pub fn parse(body: &[u8], is_event_stream: bool) -> Outcome {
    let rest = body.strip_prefix(b"\xEF\xBB\xBF").unwrap_or(body);
    let rest = rest.trim_ascii_start();
    let sse_like = [&b"data:"[..], b"event:", b"id:", b":"]
        .iter()
        .any(|p| rest.starts_with(p));
    if rest.starts_with(b"{") {
        parse_json(body)
    } else if is_event_stream || sse_like {
        parse_stream(body)
    } else {
        parse_json(body)
    }
}

fn str_of(v: Option<&Value>) -> Option<String> {
    v.and_then(Value::as_str).map(str::to_owned)
}

fn choices(v: &Value) -> &[Value] {
    v.get("choices")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default()
}

/// A list element's `index` field, falling back to its position.
fn index_of(v: &Value, pos: usize) -> u64 {
    v.get("index").and_then(Value::as_u64).unwrap_or(pos as u64)
}

/// `{"error": {...}}` / `{"error": "text"}`, or vLLM's `{"object": "error", ...}`.
fn provider_error(v: &Value) -> Option<ProviderError> {
    let err = match v.get("error") {
        Some(Value::Null) | None if v.get("object").and_then(Value::as_str) == Some("error") => v,
        Some(Value::Null) | None => return None,
        Some(e) => e,
    };
    if let Some(text) = err.as_str() {
        return Some(ProviderError {
            message: text.to_owned(),
            kind: None,
        });
    }
    let kind = ["type", "code"].iter().find_map(|k| match err.get(*k) {
        Some(Value::String(s)) => Some(s.clone()),
        Some(Value::Number(n)) => Some(n.to_string()),
        _ => None,
    });
    let message = str_of(err.get("message")).unwrap_or_else(|| err.to_string());
    Some(ProviderError { message, kind })
}

/// Top-level chunk fields copied into the reconstructed response (first
/// non-null value wins).
const TOP_KEYS: [&str; 4] = ["id", "created", "model", "system_fingerprint"];

/// Merged state of a whole stream.
#[derive(Debug, Default)]
struct StreamAcc {
    top: Map<String, Value>,
    usage: Option<Value>,
    choices: BTreeMap<u64, ChoiceAcc>,
}

/// Merged state of one choice.
#[derive(Debug, Default)]
struct ChoiceAcc {
    text: String,
    /// Legacy logprobs object, its lists appended chunk by chunk.
    logprobs: Option<Map<String, Value>>,
    finish: Option<String>,
}

impl StreamAcc {
    fn absorb(&mut self, chunk: &Value, ev: &SseEvent, facts: &mut StreamFacts) {
        for key in TOP_KEYS {
            if let Some(v) = chunk.get(key).filter(|v| !v.is_null()) {
                self.top.entry(key).or_insert_with(|| v.clone());
            }
        }
        if let Some(usage) = chunk.get("usage").filter(|u| u.is_object()) {
            self.usage = Some(usage.clone());
            if chunk
                .get("choices")
                .and_then(Value::as_array)
                .is_some_and(Vec::is_empty)
            {
                facts.usage_only_chunk = Some((ev.start, ev.end));
            }
        }
        let mut token = false;
        for (pos, c) in choices(chunk).iter().enumerate() {
            token |= self.choices.entry(index_of(c, pos)).or_default().absorb(c);
        }
        if token {
            facts.first_token_offset.get_or_insert(ev.start);
        }
    }

    /// The equivalent `text_completion` object and the finish reasons.
    fn build(&self) -> (Value, Vec<String>) {
        let mut resp = Map::new();
        resp.insert(
            "id".into(),
            self.top.get("id").cloned().unwrap_or(Value::Null),
        );
        resp.insert("object".into(), "text_completion".into());
        for key in ["created", "model"] {
            resp.insert(
                key.into(),
                self.top.get(key).cloned().unwrap_or(Value::Null),
            );
        }
        if let Some(v) = self.top.get("system_fingerprint") {
            resp.insert("system_fingerprint".into(), v.clone());
        }
        let choices = self.choices.iter().map(|(i, c)| c.to_json(*i)).collect();
        resp.insert("choices".into(), Value::Array(choices));
        if let Some(usage) = &self.usage {
            resp.insert("usage".into(), usage.clone());
        }
        let finish = self
            .choices
            .values()
            .filter_map(|c| c.finish.clone())
            .collect();
        (Value::Object(resp), finish)
    }
}

impl ChoiceAcc {
    /// Merge one chunk choice; true when it carried text.
    fn absorb(&mut self, c: &Value) -> bool {
        let text = c.get("text").and_then(Value::as_str).unwrap_or_default();
        self.text.push_str(text);
        if let Some(lp) = c.get("logprobs").and_then(Value::as_object) {
            let merged = self.logprobs.get_or_insert_with(Map::new);
            for (key, v) in lp {
                match (merged.get_mut(key), v) {
                    (Some(Value::Array(have)), Value::Array(more)) => {
                        have.extend(more.iter().cloned());
                    }
                    _ => {
                        merged.insert(key.clone(), v.clone());
                    }
                }
            }
        }
        if let Some(finish) = str_of(c.get("finish_reason")).filter(|f| !f.is_empty()) {
            self.finish = Some(finish);
        }
        !text.is_empty()
    }

    fn to_json(&self, index: u64) -> Value {
        json!({
            "text": self.text,
            "index": index,
            "logprobs": self.logprobs.clone().map_or(Value::Null, Value::Object),
            "finish_reason": self.finish,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    macro_rules! fixture {
        ($name:literal) => {
            include_bytes!(concat!("../../tests/fixtures/openai_completions/", $name)).as_slice()
        };
    }

    fn facts(o: &Outcome) -> &StreamFacts {
        o.stream.as_ref().expect("stream facts")
    }

    fn choice(o: &Outcome, i: usize) -> &Value {
        &o.response.as_ref().expect("response")["choices"][i]
    }

    #[test]
    fn plain_json() {
        let o = parse(fixture!("plain.json"), false);
        assert_eq!(o.model.as_deref(), Some("gpt-3.5-turbo-instruct"));
        assert_eq!(
            o.response_id.as_deref(),
            Some("cmpl-9qT3kZ7vLwXn2bYc8RmD4sHfJ1aQe")
        );
        assert_eq!(o.finish_reasons, ["length"]);
        let u = o.usage.expect("usage");
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.total_tokens),
            (5, 10, 15)
        );
        assert_eq!(
            (u.cache_read_input_tokens, u.reasoning_tokens),
            (None, None)
        );
        assert_eq!(
            choice(&o, 0)["text"],
            "\n\nThis is indeed a test of the emergency broadcast"
        );
        assert!(o.error.is_none() && o.stream.is_none());
    }

    #[test]
    fn error_bodies_and_non_json() {
        let body = br#"{"error":{"message":"The model `gpt-4o` does not work with this endpoint.",
            "type":"invalid_request_error","param":"model","code":"model_not_supported"}}"#;
        let e = parse(body, false).error.expect("error");
        assert_eq!(e.kind.as_deref(), Some("invalid_request_error"));
        assert!(e.message.starts_with("The model `gpt-4o`"));
        let vllm = br#"{"object":"error","message":"bad","type":"BadRequestError","code":400}"#;
        assert_eq!(
            parse_json(vllm).error.and_then(|e| e.kind).as_deref(),
            Some("BadRequestError")
        );
        assert_eq!(parse(b"<html>502</html>", false), Outcome::default());
    }

    #[test]
    fn stream_basic() {
        let o = parse(fixture!("stream.sse"), true);
        let r = o.response.as_ref().expect("response");
        assert_eq!(
            r,
            &json!({"id": "cmpl-9qT4aBcDeFgHiJkLmNoPqRsTuVwXy", "object": "text_completion",
                "created": 1721596500, "model": "gpt-3.5-turbo-instruct",
                "choices": [{"text": "\n\nRoses are red,\nViolets are blue.", "index": 0,
                    "logprobs": null, "finish_reason": "stop"}]})
        );
        assert_eq!(o.finish_reasons, ["stop"]);
        assert_eq!(o.usage, None);
        let f = facts(&o);
        assert_eq!((f.chunks, f.saw_end, f.bad_events), (11, true, 0));
        assert_eq!((f.first_token_offset, f.usage_only_chunk), (Some(0), None));
    }

    #[test]
    fn stream_include_usage() {
        let o = parse_stream(fixture!("stream_include_usage.sse"));
        let u = o.usage.expect("usage");
        assert_eq!(
            (u.input_tokens, u.output_tokens, u.total_tokens),
            (7, 8, 15)
        );
        let r = o.response.as_ref().expect("response");
        assert_eq!(r["usage"]["completion_tokens"], 8);
        assert_eq!(choice(&o, 0)["text"], "\n\nThe capital of France is Paris.");
        assert_eq!(r["choices"].as_array().map(Vec::len), Some(1));
        let f = facts(&o);
        assert_eq!((f.chunks, f.usage_only_chunk), (10, Some((1972, 2184))));
    }

    #[test]
    fn stream_n2_interleaved() {
        let o = parse_stream(fixture!("stream_n2.sse"));
        assert_eq!(choice(&o, 0)["text"], "\n\nRed is warm.");
        assert_eq!(choice(&o, 1)["text"], "\n\nBlue is cool and calm");
        assert_eq!(
            (&choice(&o, 1)["index"], &choice(&o, 1)["finish_reason"]),
            (&json!(1), &json!("length"))
        );
        assert_eq!(o.finish_reasons, ["stop", "length"]);
    }

    #[test]
    fn stream_cut() {
        let o = parse_stream(fixture!("stream_cut.sse"));
        let f = facts(&o);
        assert_eq!((f.saw_end, f.chunks, f.bad_events), (false, 5, 1));
        assert_eq!(choice(&o, 0)["text"], "\n\nOnce upon a time");
        assert_eq!(choice(&o, 0)["finish_reason"], Value::Null);
        assert!(o.finish_reasons.is_empty() && o.usage.is_none());
    }

    #[test]
    fn stream_vllm_usage_logprobs_and_errors() {
        let lp = |t: &str, off: u64| {
            json!({"tokens": [t], "token_logprobs": [-0.5], "top_logprobs": [{t: -0.5}],
                "text_offset": [off]})
        };
        let chunks = [
            json!({"id": "cmpl-v", "model": "meta-llama/Llama-3.1-8B", "choices": [
                {"index": 0, "text": "", "logprobs": null, "finish_reason": null}]}),
            json!({"id": "cmpl-v", "choices": [{"index": 0, "text": "Hi", "logprobs": lp("Hi", 0),
                "finish_reason": null}]}),
            json!({"id": "cmpl-v", "choices": [{"index": 0, "text": "!", "logprobs": lp("!", 2),
                "finish_reason": "stop", "stop_reason": null}],
                "usage": {"prompt_tokens": 4, "completion_tokens": 2, "total_tokens": 6}}),
            json!({"error": {"message": "late", "type": "server_error"}}),
        ];
        let body: String = chunks.iter().map(|c| format!("data: {c}\n\n")).collect();
        let o = parse_stream(body.as_bytes());
        let u = o.usage.expect("usage");
        assert_eq!((u.input_tokens, u.output_tokens), (4, 2));
        let f = facts(&o);
        assert_eq!(f.usage_only_chunk, None);
        // The first chunk's text is empty: the first token is the second event.
        let second = body.match_indices("data: ").nth(1).map(|(i, _)| i);
        assert_eq!(f.first_token_offset, second);
        assert_eq!(
            choice(&o, 0)["logprobs"],
            json!({"tokens": ["Hi", "!"], "token_logprobs": [-0.5, -0.5],
                "top_logprobs": [{"Hi": -0.5}, {"!": -0.5}], "text_offset": [0, 2]})
        );
        assert_eq!(o.error.map(|e| e.message).as_deref(), Some("late"));
        assert_eq!(o.model.as_deref(), Some("meta-llama/Llama-3.1-8B"));
    }

    const STREAMS: &[&[u8]] = &[
        fixture!("stream.sse"),
        fixture!("stream_include_usage.sse"),
        fixture!("stream_n2.sse"),
        fixture!("stream_cut.sse"),
    ];

    proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
            let _ = parse(&bytes, true);
            let _ = parse(&bytes, false);
        }

        #[test]
        fn truncated_streams_yield_prefixes(which in 0..STREAMS.len(), cut in any::<prop::sample::Index>()) {
            let body = STREAMS.get(which).copied().unwrap_or_default();
            let full = parse_stream(body);
            let part = parse_stream(body.get(..cut.index(body.len() + 1)).unwrap_or_default());
            for i in 0..2 {
                let whole = choice(&full, i)["text"].as_str().unwrap_or("");
                let got = part.response.as_ref().and_then(|r| r["choices"][i]["text"].as_str()).unwrap_or("");
                prop_assert!(whole.starts_with(got));
            }
        }
    }
}
