//! The request's parameters as plain span attributes, as MLflow's OpenAI
//! autologging records them (`mlflow/openai/autolog.py` `_start_span`:
//! every keyword argument except `messages` and `input`), so the UI's
//! Attributes tab shows `model`, `temperature`, `stream`, `tools`, ...
//! Anthropic's autologging records none, so neither does llmtap.
//!
//! The SDK sends exactly the arguments it was given, so the request body's
//! top-level keys are those arguments (except what the SDK adds itself,
//! e.g. embeddings' `encoding_format`). Pure.

use std::collections::BTreeMap;

use serde_json::value::RawValue;
use serde_json::Value;

use crate::record::AttrValue;
use crate::route::Api;
use crate::trace::pyjson;

/// Keys autologging leaves out: the conversation is in `mlflow.spanInputs`.
const SKIPPED: [&str; 2] = ["messages", "input"];

/// At most this many parameters become attributes (a hostile body cannot
/// flood the span).
const MAX_PARAMS: usize = 64;

/// Whether the API's autologging records parameters.
pub fn recorded(api: Api) -> bool {
    matches!(
        api,
        Api::ChatCompletions | Api::Responses | Api::Completions | Api::Embeddings
    )
}

/// `(key, value)` attributes for the request body's top-level parameters.
/// A key with a dot is skipped (no OpenAI parameter has one; it could shadow
/// `mlflow.*` or `gen_ai.*`). Strings stay strings (quoted as JSON when the
/// text would otherwise read as another JSON value: the MLflow server decodes
/// JSON-looking strings), numbers and booleans stay native, objects, arrays
/// and null become their `json.dumps` text.
pub fn attributes(body: &[u8]) -> Vec<(String, AttrValue)> {
    let Ok(fields) = serde_json::from_slice::<BTreeMap<String, &RawValue>>(body) else {
        return Vec::new();
    };
    fields
        .into_iter()
        .filter(|(k, _)| !SKIPPED.contains(&k.as_str()) && !k.contains('.'))
        .take(MAX_PARAMS)
        .filter_map(|(k, raw)| Some((k, value(raw)?)))
        .collect()
}

fn value(raw: &RawValue) -> Option<AttrValue> {
    let v: Value = serde_json::from_str(raw.get()).ok()?;
    Some(match v {
        Value::String(s) if serde_json::from_str::<Value>(&s).is_ok() => {
            AttrValue::Str(Value::String(s).to_string())
        }
        Value::String(s) => AttrValue::Str(s),
        Value::Bool(b) => AttrValue::Bool(b),
        Value::Number(n) => match n.as_i64() {
            Some(i) => AttrValue::Int(i),
            None => AttrValue::Double(n.as_f64()?),
        },
        Value::Null | Value::Array(_) | Value::Object(_) => {
            AttrValue::Str(pyjson::dumps(raw.get())?)
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get<'a>(attrs: &'a [(String, AttrValue)], key: &str) -> Option<&'a AttrValue> {
        attrs.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    #[test]
    fn chat_parameters_become_attributes_without_the_messages() {
        // The keys and values tests/fixtures/autolog/ shows for chat_stream_usage
        // and chat_plain.
        let body = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"Hi"}],
            "stream":true,"stream_options":{"include_usage":true},"temperature":0.2,
            "max_tokens":50,"tools":[{"type":"function","function":{"name":"f","parameters":{}}}]}"#;
        let attrs = attributes(body);
        let keys: Vec<&str> = attrs.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(
            keys,
            [
                "max_tokens",
                "model",
                "stream",
                "stream_options",
                "temperature",
                "tools"
            ]
        );
        assert_eq!(get(&attrs, "model"), Some(&AttrValue::from("gpt-4o-mini")));
        assert_eq!(get(&attrs, "stream"), Some(&AttrValue::Bool(true)));
        assert_eq!(get(&attrs, "max_tokens"), Some(&AttrValue::Int(50)));
        assert_eq!(get(&attrs, "temperature"), Some(&AttrValue::Double(0.2)));
        assert_eq!(
            get(&attrs, "stream_options"),
            Some(&AttrValue::from(r#"{"include_usage": true}"#))
        );
        assert_eq!(
            get(&attrs, "tools"),
            Some(&AttrValue::from(
                r#"[{"type": "function", "function": {"name": "f", "parameters": {}}}]"#
            ))
        );
    }

    #[test]
    fn responses_input_is_skipped_and_json_looking_strings_are_quoted() {
        let body = br#"{"model":"gpt-4o-mini","input":"Say hello","instructions":"Be brief","user":"42","metadata":null,"mlflow.spanType":"x"}"#;
        let attrs = attributes(body);
        assert_eq!(get(&attrs, "input"), None);
        assert_eq!(get(&attrs, "mlflow.spanType"), None);
        assert_eq!(
            get(&attrs, "instructions"),
            Some(&AttrValue::from("Be brief"))
        );
        // "42" would be decoded to the number 42 by the server: sent as "\"42\"".
        assert_eq!(get(&attrs, "user"), Some(&AttrValue::from("\"42\"")));
        assert_eq!(get(&attrs, "metadata"), Some(&AttrValue::from("null")));
    }

    #[test]
    fn not_an_object_gives_nothing_and_the_count_is_capped() {
        assert!(attributes(b"[1,2]").is_empty());
        assert!(attributes(b"not json").is_empty());
        let many: String = (0..100).map(|i| format!("\"k{i}\":{i},")).collect();
        let body = format!("{{{}\"model\":\"m\"}}", many);
        assert_eq!(attributes(body.as_bytes()).len(), MAX_PARAMS);
        assert!(recorded(Api::Responses) && !recorded(Api::Messages));
    }
}
