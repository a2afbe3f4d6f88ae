//! The span mapping and the wire rules, on spans built by llmtap's own trace
//! builder from the recorded provider exchanges in `tests/fixtures/`.

use std::time::{Duration, Instant, UNIX_EPOCH};

use bytes::Bytes;
use opentelemetry_proto::tonic::common::v1::any_value::Value as V;
use opentelemetry_proto::tonic::trace::v1::{span, status, Span};
use serde_json::{json, Value};

use super::config::{Protocol, Semconv};
use super::encode::{classify, convert, partial_success};
use super::genai::Attrs;
use crate::exchange::{CapturedBody, Exchange, ResponseHead};
use crate::route::Api;
use crate::sinks::Verdict;
use crate::tee::{BodyEnd, Capture};

const CAP: usize = 1 << 20;

fn fixture(path: &str) -> Vec<u8> {
    let p = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&p).unwrap_or_else(|e| panic!("{p}: {e}"))
}

fn body(bytes: &[u8], ctype: &str) -> CapturedBody {
    CapturedBody {
        capture: Capture::whole(&Bytes::copy_from_slice(bytes), CAP),
        end: BodyEnd::Complete,
        content_type: Some(ctype.into()),
        content_encoding: None,
    }
}

/// The canonical span of one call, as the pipeline would hand it over.
fn canonical(api: Api, provider: &'static str, req: &str, status: u16, resp: &[u8]) -> Span {
    let started = Instant::now();
    let ctype = if resp.starts_with(b"event:") || resp.starts_with(b"data:") {
        "text/event-stream"
    } else {
        "application/json"
    };
    let ex = Exchange {
        trace_id: [0x5b; 16],
        span_id: [0x05; 8],
        api,
        provider,
        deployment: None,
        method: "POST".into(),
        path: "/v1/x".into(),
        started_wall: UNIX_EPOCH + Duration::from_secs(1_764_000_000),
        started,
        ended: started + Duration::from_millis(900),
        request: Some(body(req.as_bytes(), "application/json")),
        response_head: Some(ResponseHead {
            status,
            content_type: Some(ctype.into()),
            content_encoding: None,
            at: started,
            request_id: None,
        }),
        response: Some(body(resp, ctype)),
        proxy_error: None,
        proxy_status: None,
        usage_hiding_failed: None,
        context: Default::default(),
        privacy: Default::default(),
    };
    crate::otlp::to_span(&crate::trace::build(&ex, CAP).0)
}

/// The span the sink sends with `semconv`.
fn mapped(s: &Span, semconv: Semconv) -> Span {
    let req = crate::otlp::request("llmtap", vec![s.clone()]);
    convert(&req, semconv).resource_spans[0].scope_spans[0].spans[0].clone()
}

fn genai(s: &Span) -> Span {
    let out = mapped(s, Semconv::Genai);
    let keys: Vec<&str> = out.attributes.iter().map(|kv| kv.key.as_str()).collect();
    assert!(
        !keys.iter().any(|k| k.starts_with("mlflow.")),
        "mlflow.* noise: {keys:?}"
    );
    let mut dedup = keys.clone();
    dedup.sort_unstable();
    dedup.dedup();
    assert_eq!(dedup.len(), keys.len(), "duplicate keys: {keys:?}");
    assert_eq!(out.kind, span::SpanKind::Client as i32);
    out
}

fn json_attr(s: &Span, key: &str) -> Value {
    let text = Attrs(&s.attributes)
        .str(key)
        .unwrap_or_else(|| panic!("no {key}"));
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{key}: {e}"))
}

fn get<'a>(s: &'a Span, key: &str) -> Option<&'a V> {
    s.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref()?.value.as_ref())
}

fn int(s: &Span, key: &str) -> i64 {
    match get(s, key) {
        Some(V::IntValue(i)) => *i,
        other => panic!("{key}: {other:?}"),
    }
}

fn text<'a>(s: &'a Span, key: &str) -> &'a str {
    Attrs(&s.attributes)
        .str(key)
        .unwrap_or_else(|| panic!("no string {key}"))
}

const CHAT_REQ: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"system","content":"Be brief."},{"role":"user","name":"ann","content":[{"type":"text","text":"What is in this image?"},{"type":"image_url","image_url":{"url":"https://example.com/cat.png"}}]}],"temperature":0.2,"top_p":0.9,"max_completion_tokens":50,"seed":7,"stop":["END"],"n":2,"frequency_penalty":0.5,"response_format":{"type":"json_object"},"user":"u-42"}"#;

#[test]
fn chat_completion_follows_the_genai_conventions() {
    let s = genai(&canonical(
        Api::ChatCompletions,
        "openai",
        CHAT_REQ,
        200,
        &fixture("openai_chat/plain.json"),
    ));
    assert_eq!(s.name, "chat gpt-4o-mini");
    assert_eq!(text(&s, "gen_ai.operation.name"), "chat");
    assert_eq!(text(&s, "gen_ai.provider.name"), "openai");
    assert_eq!(text(&s, "gen_ai.response.model"), "gpt-4o-mini-2024-07-18");
    assert_eq!(
        text(&s, "gen_ai.response.id"),
        "chatcmpl-9nR6pLaInJsOnReSpOnSe00000abc"
    );
    assert_eq!(int(&s, "gen_ai.usage.input_tokens"), 19);
    assert_eq!(int(&s, "gen_ai.usage.output_tokens"), 9);
    assert_eq!(int(&s, "gen_ai.usage.cache_read.input_tokens"), 0);
    assert_eq!(int(&s, "gen_ai.request.max_tokens"), 50);
    assert_eq!(int(&s, "gen_ai.request.seed"), 7);
    assert_eq!(int(&s, "gen_ai.request.choice.count"), 2);
    assert_eq!(text(&s, "gen_ai.output.type"), "json");
    assert_eq!(text(&s, "user.id"), "u-42");
    assert!(
        matches!(get(&s, "gen_ai.request.frequency_penalty"), Some(V::DoubleValue(f)) if *f == 0.5)
    );
    match get(&s, "gen_ai.request.stop_sequences") {
        Some(V::ArrayValue(a)) => assert_eq!(a.values.len(), 1),
        other => panic!("stop_sequences: {other:?}"),
    }
    assert_eq!(
        json_attr(&s, "gen_ai.input.messages"),
        json!([
            {"role": "system", "parts": [{"type": "text", "content": "Be brief."}]},
            {"role": "user", "name": "ann", "parts": [
                {"type": "text", "content": "What is in this image?"},
                {"type": "uri", "modality": "image", "uri": "https://example.com/cat.png"}
            ]}
        ])
    );
    assert_eq!(
        json_attr(&s, "gen_ai.output.messages"),
        json!([{"role": "assistant", "finish_reason": "stop",
                "parts": [{"type": "text", "content": "Hello! How can I assist you today?"}]}])
    );
    // Status, events, ids and times pass unchanged.
    let c = canonical(
        Api::ChatCompletions,
        "openai",
        CHAT_REQ,
        200,
        &fixture("openai_chat/plain.json"),
    );
    assert_eq!(
        (s.trace_id.clone(), s.span_id.clone()),
        (c.trace_id, c.span_id)
    );
    assert_eq!(
        (s.start_time_unix_nano, s.end_time_unix_nano),
        (c.start_time_unix_nano, c.end_time_unix_nano)
    );
    assert_eq!(s.status, c.status);
    // llmtap's own facts stay.
    assert!(get(&s, "llmtap.stream").is_some());
}

#[test]
fn tool_calls_and_tool_results_are_parts() {
    let req = r#"{"model":"gpt-4o","tools":[{"type":"function","function":{"name":"get_weather","parameters":{"type":"object"}}}],"messages":[{"role":"user","content":"Weather?"},{"role":"assistant","content":null,"tool_calls":[{"id":"call_1","type":"function","function":{"name":"get_weather","arguments":"{\"location\":\"Paris\"}"}}]},{"role":"tool","tool_call_id":"call_1","content":"rainy, 57F"}]}"#;
    let s = genai(&canonical(
        Api::ChatCompletions,
        "openai",
        req,
        200,
        &fixture("openai_chat/plain_tools.json"),
    ));
    let input = json_attr(&s, "gen_ai.input.messages");
    assert_eq!(
        input[1],
        json!({"role": "assistant", "parts": [{"type": "tool_call", "id": "call_1",
               "name": "get_weather", "arguments": {"location": "Paris"}}]})
    );
    assert_eq!(
        input[2],
        json!({"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_1", "response": "rainy, 57F"}]})
    );
    let output = json_attr(&s, "gen_ai.output.messages");
    assert_eq!(output[0]["finish_reason"], "tool_call");
    assert_eq!(output[0]["parts"].as_array().unwrap().len(), 2);
    assert_eq!(
        output[0]["parts"][1]["arguments"],
        json!({"location": "Tokyo, JP", "unit": "celsius"})
    );
    // Tool definitions in the schema's flat shape.
    assert_eq!(
        json_attr(&s, "gen_ai.tool.definitions"),
        json!([{"type": "function", "name": "get_weather", "parameters": {"type": "object"}}])
    );
}

#[test]
fn a_stream_maps_from_its_rebuilt_response() {
    let req = r#"{"model":"gpt-4o-mini","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"Hi"}]}"#;
    let s = genai(&canonical(
        Api::ChatCompletions,
        "openai",
        req,
        200,
        &fixture("openai_chat/stream_include_usage.sse"),
    ));
    assert!(matches!(
        get(&s, "gen_ai.request.stream"),
        Some(V::BoolValue(true))
    ));
    let out = json_attr(&s, "gen_ai.output.messages");
    assert_eq!(out[0]["role"], "assistant");
    assert!(
        out[0]["parts"][0]["content"]
            .as_str()
            .is_some_and(|t| !t.is_empty()),
        "{out}"
    );
    assert!(int(&s, "gen_ai.usage.output_tokens") > 0);
}

#[test]
fn responses_api_instructions_items_and_function_calls() {
    let req = r#"{"model":"o4-mini","instructions":"Answer with tools.","input":[{"role":"user","content":[{"type":"input_text","text":"Weather in Paris?"}]},{"type":"function_call","call_id":"call_0","name":"get_weather","arguments":"{}"},{"type":"function_call_output","call_id":"call_0","output":"sunny"}],"max_output_tokens":300,"conversation":"conv_123"}"#;
    let s = genai(&canonical(
        Api::Responses,
        "openai",
        req,
        200,
        &fixture("openai_responses/plain_function_call.json"),
    ));
    assert_eq!(s.name, "chat o4-mini");
    assert_eq!(
        json_attr(&s, "gen_ai.system_instructions"),
        json!([{"type": "text", "content": "Answer with tools."}])
    );
    let input = json_attr(&s, "gen_ai.input.messages");
    assert_eq!(
        input[0],
        json!({"role": "user", "parts": [{"type": "text", "content": "Weather in Paris?"}]})
    );
    assert_eq!(input[1]["parts"][0]["type"], "tool_call");
    assert_eq!(
        input[2],
        json!({"role": "tool", "parts": [{"type": "tool_call_response", "id": "call_0", "response": "sunny"}]})
    );
    let out = json_attr(&s, "gen_ai.output.messages");
    assert_eq!(out.as_array().unwrap().len(), 1, "one choice");
    assert_eq!(out[0]["finish_reason"], "tool_call");
    assert_eq!(out[0]["parts"][0]["name"], "get_weather");
    assert_eq!(out[0]["parts"][0]["arguments"]["location"], "Paris, France");
    assert_eq!(int(&s, "gen_ai.request.max_tokens"), 300);
    assert_eq!(text(&s, "gen_ai.conversation.id"), "conv_123");
}

#[test]
fn legacy_completions_prompt_and_text() {
    let req = r#"{"model":"gpt-3.5-turbo-instruct","prompt":"Say this is a test","max_tokens":10}"#;
    let s = genai(&canonical(
        Api::Completions,
        "openai",
        req,
        200,
        &fixture("openai_completions/plain.json"),
    ));
    assert_eq!(s.name, "text_completion gpt-3.5-turbo-instruct");
    assert_eq!(
        json_attr(&s, "gen_ai.input.messages")[0]["parts"][0]["content"],
        "Say this is a test"
    );
    let out = json_attr(&s, "gen_ai.output.messages");
    assert_eq!(out[0]["finish_reason"], "length");
    assert_eq!(
        out[0]["parts"][0]["content"],
        "\n\nThis is indeed a test of the emergency broadcast"
    );
}

#[test]
fn embeddings_carry_no_messages() {
    let req = r#"{"model":"text-embedding-3-small","input":"hello","encoding_format":"float","dimensions":256}"#;
    let s = genai(&canonical(
        Api::Embeddings,
        "openai",
        req,
        200,
        &fixture("openai_embeddings/plain.json"),
    ));
    assert_eq!(s.name, "embeddings text-embedding-3-small");
    assert_eq!(int(&s, "gen_ai.embeddings.dimension.count"), 256);
    assert!(get(&s, "gen_ai.request.encoding_formats").is_some());
    assert!(get(&s, "gen_ai.input.messages").is_none());
    assert!(get(&s, "gen_ai.output.messages").is_none());
}

#[test]
fn anthropic_system_thinking_cache_and_tool_use() {
    let req = r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"top_k":5,"stop_sequences":["@@"],"system":[{"type":"text","text":"You read contracts."}],"metadata":{"user_id":"u-7"},"messages":[{"role":"user","content":[{"type":"text","text":"Summarise"},{"type":"image","source":{"type":"base64","media_type":"image/png","data":"iVBORw0KGgo="}}]},{"role":"assistant","content":[{"type":"tool_use","id":"toolu_1","name":"lookup","input":{"q":"x"}}]},{"role":"user","content":[{"type":"tool_result","tool_use_id":"toolu_1","content":[{"type":"text","text":"clause 4"}]}]}]}"#;
    let s = genai(&canonical(
        Api::Messages,
        "anthropic",
        req,
        200,
        &fixture("anthropic/plain_cache.json"),
    ));
    assert_eq!(s.name, "chat claude-sonnet-4-5");
    assert_eq!(text(&s, "gen_ai.provider.name"), "anthropic");
    assert_eq!(
        json_attr(&s, "gen_ai.system_instructions"),
        json!([{"type": "text", "content": "You read contracts."}])
    );
    let input = json_attr(&s, "gen_ai.input.messages");
    assert_eq!(
        input[0]["parts"][1],
        json!({"type": "blob", "modality": "image", "mime_type": "image/png", "content": "iVBORw0KGgo="})
    );
    assert_eq!(
        input[1]["parts"][0],
        json!({"type": "tool_call", "id": "toolu_1", "name": "lookup", "arguments": {"q": "x"}})
    );
    assert_eq!(
        input[2]["parts"][0],
        json!({"type": "tool_call_response", "id": "toolu_1", "response": "clause 4"})
    );
    let out = json_attr(&s, "gen_ai.output.messages");
    assert_eq!(out[0]["finish_reason"], "stop");
    assert_eq!(out[0]["parts"][0]["type"], "reasoning");
    assert_eq!(out[0]["parts"][1]["type"], "text");
    // Input tokens include the cache buckets, as the conventions want.
    assert_eq!(int(&s, "gen_ai.usage.input_tokens"), 3 + 248 + 1812);
    assert_eq!(int(&s, "gen_ai.usage.cache_read.input_tokens"), 1812);
    assert_eq!(int(&s, "gen_ai.usage.cache_creation.input_tokens"), 248);
    assert!(matches!(get(&s, "gen_ai.request.top_k"), Some(V::DoubleValue(k)) if *k == 5.0));
    assert_eq!(text(&s, "user.id"), "u-7");
}

#[test]
fn anthropic_stream_with_tool_use() {
    let req = r#"{"model":"claude-sonnet-4-5","max_tokens":1024,"stream":true,"messages":[{"role":"user","content":"Weather in SF?"}]}"#;
    let s = genai(&canonical(
        Api::Messages,
        "anthropic",
        req,
        200,
        &fixture("anthropic/stream_tool_use.sse"),
    ));
    let out = json_attr(&s, "gen_ai.output.messages");
    assert_eq!(out[0]["finish_reason"], "tool_call", "{out}");
    let parts = out[0]["parts"].as_array().unwrap();
    assert!(
        parts
            .iter()
            .any(|p| p["type"] == "tool_call" && p["arguments"].is_object()),
        "{out}"
    );
}

#[test]
fn errors_carry_error_type_status_and_event() {
    let s = genai(&canonical(
        Api::Messages,
        "anthropic",
        r#"{"model":"claude-sonnet-4-5","max_tokens":5,"messages":[]}"#,
        529,
        &fixture("anthropic/error_overloaded.json"),
    ));
    assert_eq!(text(&s, "error.type"), "overloaded_error");
    assert_eq!(
        s.status.as_ref().unwrap().code,
        status::StatusCode::Error as i32
    );
    assert!(s.events.iter().any(|e| e.name == "exception"));
    assert!(get(&s, "gen_ai.output.messages").is_none());
    let s = genai(&canonical(
        Api::ChatCompletions,
        "openai",
        CHAT_REQ,
        429,
        &fixture("openai_chat/error_429.json"),
    ));
    assert_eq!(text(&s, "error.type"), "rate_limit_exceeded");
    // A failure with no provider error body: the HTTP status.
    let s = genai(&canonical(
        Api::ChatCompletions,
        "openai",
        CHAT_REQ,
        502,
        b"bad gateway",
    ));
    assert_eq!(text(&s, "error.type"), "502");
}

#[test]
fn openinference_adds_what_phoenix_cannot_derive() {
    let c = canonical(
        Api::Messages,
        "anthropic",
        r#"{"model":"claude-sonnet-4-5","max_tokens":9,"messages":[{"role":"user","content":"Hi"}]}"#,
        200,
        &fixture("anthropic/plain_cache.json"),
    );
    let s = mapped(&c, Semconv::GenaiOpenInference);
    assert_eq!(text(&s, "openinference.span.kind"), "LLM");
    assert_eq!(text(&s, "llm.provider"), "anthropic");
    assert_eq!(text(&s, "llm.system"), "anthropic");
    assert_eq!(text(&s, "llm.model_name"), "claude-sonnet-4-5-20250929");
    assert_eq!(int(&s, "llm.token_count.prompt"), 2063);
    assert_eq!(int(&s, "llm.token_count.completion"), 96);
    assert_eq!(int(&s, "llm.token_count.total"), 2159);
    assert_eq!(int(&s, "llm.token_count.prompt_details.cache_read"), 1812);
    assert_eq!(int(&s, "llm.token_count.prompt_details.cache_write"), 248);
    assert_eq!(text(&s, "input.mime_type"), "application/json");
    assert!(text(&s, "output.value").contains("msg_01Hd7rCVJUMxWcnkQ3rVfY2p"));
    // Phoenix's message namespaces are left to its own derivation.
    assert!(!s
        .attributes
        .iter()
        .any(|kv| kv.key.starts_with("llm.input_messages")));
    let keys: Vec<&str> = s.attributes.iter().map(|kv| kv.key.as_str()).collect();
    assert!(!keys.iter().any(|k| k.starts_with("mlflow.")), "{keys:?}");
}

#[test]
fn semconv_mlflow_sends_the_canonical_span() {
    let c = canonical(
        Api::ChatCompletions,
        "openai",
        CHAT_REQ,
        200,
        &fixture("openai_chat/plain.json"),
    );
    assert_eq!(mapped(&c, Semconv::Mlflow), c);
}

#[test]
fn retry_classes_follow_the_otlp_spec() {
    assert_eq!(classify(200, None), Verdict::Success);
    assert_eq!(classify(202, None), Verdict::Success);
    assert_eq!(
        classify(429, Some("3")),
        Verdict::Retry {
            after: Some(Duration::from_secs(3))
        }
    );
    for s in [502, 503, 504] {
        assert_eq!(classify(s, None), Verdict::Retry { after: None }, "{s}");
    }
    for s in [400, 401, 403, 404, 408, 415, 500, 501] {
        assert_eq!(classify(s, None), Verdict::DontRetry, "{s}");
    }
    assert_eq!(classify(413, None), Verdict::Split);
}

#[test]
fn partial_success_is_read_in_both_encodings() {
    use opentelemetry_proto::tonic::collector::trace::v1::{
        ExportTracePartialSuccess, ExportTraceServiceResponse,
    };
    use prost::Message;
    let resp = ExportTraceServiceResponse {
        partial_success: Some(ExportTracePartialSuccess {
            rejected_spans: 2,
            error_message: "spans too old".into(),
        }),
    };
    let pb = resp.encode_to_vec();
    assert_eq!(
        partial_success(&pb, Protocol::HttpProtobuf),
        Some((2, "spans too old".into()))
    );
    let js = br#"{"partialSuccess":{"rejectedSpans":"2","errorMessage":"spans too old"}}"#;
    assert_eq!(
        partial_success(js, Protocol::HttpJson),
        Some((2, "spans too old".into()))
    );
    assert_eq!(partial_success(b"", Protocol::HttpProtobuf), None);
    assert_eq!(partial_success(b"{}", Protocol::HttpJson), None);
    let empty = ExportTraceServiceResponse::default().encode_to_vec();
    assert_eq!(partial_success(&empty, Protocol::HttpProtobuf), None);
}

#[test]
fn json_body_follows_otlp_json_encoding() {
    let c = canonical(
        Api::ChatCompletions,
        "openai",
        CHAT_REQ,
        200,
        &fixture("openai_chat/plain.json"),
    );
    let req = crate::otlp::request("llmtap", vec![mapped(&c, Semconv::Genai)]);
    let (body, ctype) = super::encode::body(&req, Protocol::HttpJson);
    assert_eq!(ctype, "application/json");
    let v: Value = serde_json::from_slice(&body).unwrap();
    let span = &v["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
    assert_eq!(span["traceId"], "5b".repeat(16));
    assert_eq!(span["spanId"], "05".repeat(8));
    assert_eq!(span["kind"], 3, "enums are integers");
    // int64 / fixed64 values are strings in OTLP-JSON.
    assert!(span["startTimeUnixNano"].is_string(), "{span}");
    let attrs = span["attributes"].as_array().unwrap();
    let tokens = attrs
        .iter()
        .find(|a| a["key"] == "gen_ai.usage.input_tokens")
        .unwrap();
    assert_eq!(tokens["value"]["intValue"], "19", "{tokens}");
}

#[test]
fn a_responses_stream_maps_reasoning_and_text() {
    let req = r#"{"model":"o4-mini","stream":true,"reasoning":{"summary":"auto"},"input":"Which is larger, 9.11 or 9.9?"}"#;
    let s = genai(&canonical(
        Api::Responses,
        "openai",
        req,
        200,
        &fixture("openai_responses/stream_reasoning.sse"),
    ));
    let out = json_attr(&s, "gen_ai.output.messages");
    assert_eq!(out.as_array().unwrap().len(), 1, "{out}");
    assert_eq!(out[0]["finish_reason"], "stop");
    let parts = out[0]["parts"].as_array().unwrap();
    assert_eq!(parts[0]["type"], "reasoning", "{out}");
    assert!(parts[0]["content"]
        .as_str()
        .unwrap()
        .starts_with("**Comparing fractions**"));
    assert!(
        parts
            .iter()
            .any(|p| p["type"] == "text" && p["content"].as_str().is_some_and(|t| !t.is_empty())),
        "{out}"
    );
    assert_eq!(
        json_attr(&s, "gen_ai.input.messages"),
        json!([{"role": "user", "parts": [{"type": "text", "content": "Which is larger, 9.11 or 9.9?"}]}])
    );
}
