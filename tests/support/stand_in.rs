//! A provider stand-in answering like OpenAI and Anthropic, for tests that
//! drive the real SDKs (tests/support/python/autolog_traces.py): it picks
//! the reply by path and body as the real APIs would — chat (plain, tools,
//! streams with and without `stream_options.include_usage`), Responses,
//! embeddings (base64 vectors when the SDK asks for them, as it does by
//! default), Anthropic Messages (plain and streamed) — and the model names
//! `err-429` / `err-400` get each provider's real error: its status, body
//! shape and request-id header. Bodies are llmtap's recorded fixtures.
//! Use with [`super::fake_provider::FakeProvider::start`]`(stand_in::answer)`.
#![allow(dead_code)]

use base64::Engine;
use serde_json::Value;

use super::fake_provider::{Reply, Seen};

fn fixture(rel: &str) -> Vec<u8> {
    let p = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(rel);
    std::fs::read(&p).unwrap_or_else(|e| panic!("fixture {}: {e}", p.display()))
}

/// The reply to one request.
pub fn answer(seen: &Seen) -> Reply {
    let path = seen.uri.split('?').next().unwrap_or("");
    let body: Value = serde_json::from_slice(&seen.body).unwrap_or(Value::Null);
    let anthropic = path.ends_with("/v1/messages");
    match body["model"].as_str() {
        Some("err-429") => return error(anthropic, 429),
        Some("err-400") => return error(anthropic, 400),
        _ => {}
    }
    let stream = body["stream"] == true;
    if anthropic {
        return match stream {
            true => Reply::sse(&fixture("anthropic/stream_text.sse"))
                .header("request-id", "req_011CUJ5Kq9tLwYvB3mNcX8dA"),
            false => Reply::json(200, fixture("anthropic/plain.json"))
                .header("request-id", "req_011CUJ5Kq9tLwYvB3mNcX8dB"),
        };
    }
    if path.ends_with("/chat/completions") {
        let usage = body["stream_options"]["include_usage"] == true;
        let tools = body["tools"].as_array().is_some_and(|t| !t.is_empty());
        return match (stream, usage, tools) {
            (true, true, _) => Reply::sse(&fixture("openai_chat/stream_include_usage.sse")),
            (true, false, _) => Reply::sse(&fixture("openai_chat/stream_basic.sse")),
            (false, _, true) => Reply::json(200, fixture("openai_chat/plain_tools.json")),
            (false, _, false) => Reply::json(200, fixture("openai_chat/plain.json")),
        };
    }
    if path.ends_with("/responses") {
        return match stream {
            true => Reply::sse(&fixture("openai_responses/stream_text.sse")),
            false => Reply::json(200, fixture("openai_responses/plain.json")),
        };
    }
    if path.ends_with("/embeddings") {
        return embeddings(body["encoding_format"] == "base64");
    }
    Reply::json(
        404,
        r#"{"error":{"message":"Invalid URL","type":"invalid_request_error","param":null,"code":null}}"#,
    )
}

/// The embeddings fixture; with `base64`, each vector as OpenAI sends it
/// then: little-endian f32s, base64-encoded.
fn embeddings(base64: bool) -> Reply {
    let mut v: Value = serde_json::from_slice(&fixture("openai_embeddings/plain.json")).unwrap();
    if base64 {
        for item in v["data"].as_array_mut().into_iter().flatten() {
            let floats = item["embedding"].as_array().cloned().unwrap_or_default();
            let bytes: Vec<u8> = floats
                .iter()
                .flat_map(|f| (f.as_f64().unwrap_or(0.0) as f32).to_le_bytes())
                .collect();
            item["embedding"] = base64::engine::general_purpose::STANDARD
                .encode(bytes)
                .into();
        }
    }
    Reply::json(200, v.to_string())
}

/// Each provider's error, as its API sends it.
fn error(anthropic: bool, status: u16) -> Reply {
    match (anthropic, status) {
        (true, 429) => Reply::json(429, fixture("anthropic/error_rate_limit.json"))
            .header("request-id", "req_011CUJ5Kq9tLwYvB3mNcX8dF")
            .header("retry-after", "1")
            .header("x-should-retry", "true"),
        (true, _) => Reply::json(400, fixture("anthropic/error_invalid_request.json"))
            .header("request-id", "req_011CUJ5Kq9tLwYvB3mNcX8dE")
            .header("x-should-retry", "false"),
        (false, 429) => Reply::json(429, fixture("openai_chat/error_429.json"))
            .header("x-request-id", "req_8e1a2b3c4d5e6f708192a3b4c5d6e7f8")
            .header("retry-after", "1")
            .header("x-ratelimit-remaining-tokens", "0"),
        (false, _) => Reply::json(400, fixture("openai_responses/error_400.json"))
            .header("x-request-id", "req_9f0a1b2c3d4e5f60718293a4b5c6d7e8"),
    }
}
