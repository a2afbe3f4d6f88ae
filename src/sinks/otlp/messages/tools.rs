//! A request's `tools` as `gen_ai.tool.definitions`: the conventions'
//! schema (`gen-ai-tool-definitions.json`) wants flat objects with `type`
//! and `name` (a function adds `description` and `parameters`), and a
//! reader that validates it (Arize Phoenix does) drops the whole list when
//! one entry lacks them. So:
//!
//! - OpenAI Chat `{"type":"function","function":{name, description, parameters}}`
//!   is flattened;
//! - Anthropic `{name, description, input_schema}` becomes a `function` with
//!   `parameters`; its server tools keep their `type` (`web_search_20250305`);
//! - Responses API function tools are already flat; a built-in tool with no
//!   name (`{"type":"web_search"}`) is named after its type;
//!
//! and every other field the provider sent stays, as the conventions allow.

use serde_json::{Map, Value};

/// The definitions, or `None` when the request names no tool.
pub fn definitions(req: &Value) -> Option<Value> {
    let tools = req.get("tools")?.as_array().filter(|t| !t.is_empty())?;
    Some(Value::Array(tools.iter().filter_map(definition).collect()))
}

fn definition(tool: &Value) -> Option<Value> {
    let mut out: Map<String, Value> = tool.as_object()?.clone();
    if let Some(Value::Object(f)) = out.remove("function") {
        // OpenAI Chat: the function's fields, flat.
        out.extend(f);
    }
    if let Some(schema) = out.remove("input_schema") {
        out.entry("parameters").or_insert(schema);
    }
    let kind = match out.get("type").and_then(Value::as_str) {
        None | Some("custom") => "function".to_string(),
        Some(t) => t.to_string(),
    };
    if !out.get("name").is_some_and(Value::is_string) {
        out.insert("name".into(), Value::String(kind.clone()));
    }
    out.insert("type".into(), Value::String(kind));
    Some(Value::Object(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_provider_shape_becomes_the_flat_schema() {
        let chat = json!({"tools": [{"type": "function", "function": {"name": "get_weather",
            "description": "Weather", "parameters": {"type": "object"}, "strict": true}}]});
        assert_eq!(
            definitions(&chat).unwrap(),
            json!([{"type": "function", "name": "get_weather", "description": "Weather",
                    "parameters": {"type": "object"}, "strict": true}])
        );
        let anthropic = json!({"tools": [
            {"name": "lookup", "description": "Find", "input_schema": {"type": "object"}},
            {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}
        ]});
        assert_eq!(
            definitions(&anthropic).unwrap(),
            json!([{"type": "function", "name": "lookup", "description": "Find",
                    "parameters": {"type": "object"}},
                   {"type": "web_search_20250305", "name": "web_search", "max_uses": 3}])
        );
        let responses = json!({"tools": [{"type": "web_search"},
            {"type": "function", "name": "f", "parameters": {}}]});
        assert_eq!(
            definitions(&responses).unwrap(),
            json!([{"type": "web_search", "name": "web_search"},
                   {"type": "function", "name": "f", "parameters": {}}])
        );
        assert_eq!(definitions(&json!({"tools": []})), None);
        assert_eq!(definitions(&json!({})), None);
    }
}
