//! Every API an agent speaks, through llmtap into a real MLflow server:
//! OpenAI chat (tools, streams with and without usage requested), Responses,
//! legacy completions, embeddings, Anthropic Messages, Azure and Databricks
//! path shapes — plain and streamed. For each: the client got exactly the
//! provider's bytes, and MLflow's trace has the provider's token usage, the
//! right span type and name, outputs, and no API key.

#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/mlflow.rs"]
mod mlflow;
#[path = "support/tap.rs"]
mod tap;

use std::time::Duration;

use fake_provider::{FakeProvider, Reply, Seen};
use serde_json::{json, Value};
use tap::{fixture, post, Tap};

const KEY: &str = "sk-apis-SECRET-31415926";

/// What an OpenAI stream looks like when usage was not asked for.
fn without_usage(stream: &[u8]) -> Vec<u8> {
    String::from_utf8(stream.to_vec())
        .unwrap()
        .split("\n\n")
        .filter(|e| !e.contains("\"choices\":[]"))
        .map(|e| e.replace(",\"usage\":null", ""))
        .collect::<Vec<_>>()
        .join("\n\n")
        .into_bytes()
}

fn wants_usage(seen: &Seen) -> bool {
    let v: Value = serde_json::from_slice(&seen.body).unwrap_or(Value::Null);
    v["stream_options"]["include_usage"] == true
}

fn wants_stream(seen: &Seen) -> bool {
    let v: Value = serde_json::from_slice(&seen.body).unwrap_or(Value::Null);
    v["stream"] == true
}

/// One provider for every API, answering by path and body like the real ones.
fn answer(seen: &Seen) -> Reply {
    let path = seen.uri.split('?').next().unwrap_or("");
    let stream = wants_stream(seen);
    let usage = wants_usage(seen);
    let pick = |with_usage: &str| {
        let full = fixture(with_usage);
        Reply::sse(&if usage { full } else { without_usage(&full) })
    };
    if path.ends_with("/chat/completions") || path.ends_with("/invocations") {
        match (stream, seen.body.windows(7).any(|w| w == b"\"tools\"")) {
            (true, _) => pick("openai_chat/stream_include_usage.sse"),
            (false, true) => Reply::json(200, fixture("openai_chat/plain_tools.json")),
            (false, false) => Reply::json(200, fixture("openai_chat/plain.json")),
        }
    } else if path.ends_with("/responses") {
        if stream {
            Reply::sse(&fixture("openai_responses/stream_text.sse"))
        } else {
            Reply::json(200, fixture("openai_responses/plain.json"))
        }
    } else if path.ends_with("/completions") {
        if stream {
            pick("openai_completions/stream_include_usage.sse")
        } else {
            Reply::json(200, fixture("openai_completions/plain.json"))
        }
    } else if path.ends_with("/embeddings") {
        Reply::json(200, fixture("openai_embeddings/plain.json"))
    } else if path.ends_with("/messages") {
        if stream {
            Reply::sse(&fixture("anthropic/stream_text.sse"))
        } else {
            Reply::json(200, fixture("anthropic/plain.json"))
        }
    } else {
        Reply::json(404, "{}")
    }
}

struct Case {
    name: &'static str,
    path: &'static str,
    body: Value,
    headers: &'static [(&'static str, &'static str)],
    /// The bytes the client must receive.
    expect_body: fn() -> Vec<u8>,
    span_name: &'static str,
    span_type: &'static str,
    usage: Value,
}

fn cases() -> Vec<Case> {
    let msgs = json!([{"role": "user", "content": "Capital of France?"}]);
    let weather_tool = json!([{"type": "function", "function": {"name": "get_weather", "parameters": {"type": "object", "properties": {"city": {"type": "string"}}}}}]);
    vec![
        Case {
            name: "chat with tools",
            path: "/v1/chat/completions",
            body: json!({"model": "gpt-4o-mini", "messages": msgs, "tools": weather_tool}),
            headers: &[],
            expect_body: || fixture("openai_chat/plain_tools.json"),
            span_name: "Completions",
            span_type: "CHAT_MODEL",
            usage: json!({"input_tokens": 82, "output_tokens": 51, "total_tokens": 133, "cache_read_input_tokens": 0}),
        },
        Case {
            name: "chat stream, usage not requested",
            path: "/v1/chat/completions",
            body: json!({"model": "gpt-4o-mini", "messages": msgs, "stream": true}),
            headers: &[],
            expect_body: || without_usage(&fixture("openai_chat/stream_include_usage.sse")),
            span_name: "Completions",
            span_type: "CHAT_MODEL",
            usage: json!({"input_tokens": 1342, "output_tokens": 8, "total_tokens": 1350, "cache_read_input_tokens": 1280}),
        },
        Case {
            name: "chat stream, usage requested",
            path: "/v1/chat/completions",
            body: json!({"model": "gpt-4o-mini", "messages": msgs, "stream": true, "stream_options": {"include_usage": true}}),
            headers: &[],
            expect_body: || fixture("openai_chat/stream_include_usage.sse"),
            span_name: "Completions",
            span_type: "CHAT_MODEL",
            usage: json!({"input_tokens": 1342, "output_tokens": 8, "total_tokens": 1350, "cache_read_input_tokens": 1280}),
        },
        Case {
            name: "responses",
            path: "/v1/responses",
            body: json!({"model": "gpt-4o", "input": "Capital of France?"}),
            headers: &[],
            expect_body: || fixture("openai_responses/plain.json"),
            span_name: "Responses",
            span_type: "CHAT_MODEL",
            usage: json!({"input_tokens": 1247, "output_tokens": 38, "total_tokens": 1285, "cache_read_input_tokens": 1152}),
        },
        Case {
            name: "responses stream",
            path: "/v1/responses",
            body: json!({"model": "gpt-4o", "input": "Capital of France?", "stream": true}),
            headers: &[],
            expect_body: || fixture("openai_responses/stream_text.sse"),
            span_name: "Responses",
            span_type: "CHAT_MODEL",
            usage: json!({"input_tokens": 1310, "output_tokens": 14, "total_tokens": 1324, "cache_read_input_tokens": 1152}),
        },
        Case {
            name: "legacy completions",
            path: "/v1/completions",
            body: json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test"}),
            headers: &[],
            expect_body: || fixture("openai_completions/plain.json"),
            span_name: "Completions",
            span_type: "LLM",
            usage: json!({"input_tokens": 5, "output_tokens": 10, "total_tokens": 15}),
        },
        Case {
            name: "legacy completions stream, usage not requested",
            path: "/v1/completions",
            body: json!({"model": "gpt-3.5-turbo-instruct", "prompt": "Say this is a test", "stream": true}),
            headers: &[],
            expect_body: || without_usage(&fixture("openai_completions/stream_include_usage.sse")),
            span_name: "Completions",
            span_type: "LLM",
            usage: json!({"input_tokens": 7, "output_tokens": 8, "total_tokens": 15}),
        },
        Case {
            name: "embeddings",
            path: "/v1/embeddings",
            body: json!({"model": "text-embedding-3-small", "input": ["The food was delicious", "and the waiter..."]}),
            headers: &[],
            expect_body: || fixture("openai_embeddings/plain.json"),
            span_name: "Embeddings",
            span_type: "EMBEDDING",
            usage: json!({"input_tokens": 13, "output_tokens": 0, "total_tokens": 13}),
        },
        Case {
            name: "anthropic messages",
            path: "/v1/messages",
            body: json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": msgs}),
            headers: &[("x-api-key", KEY), ("anthropic-version", "2023-06-01")],
            expect_body: || fixture("anthropic/plain.json"),
            span_name: "Messages.create",
            span_type: "CHAT_MODEL",
            usage: json!({"input_tokens": 12, "output_tokens": 12, "total_tokens": 24, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0, "cache_creation_input_tokens_above_1hr": 0}),
        },
        Case {
            name: "anthropic messages stream",
            path: "/v1/messages",
            body: json!({"model": "claude-sonnet-4-5", "max_tokens": 1024, "messages": msgs, "stream": true}),
            headers: &[("x-api-key", KEY), ("anthropic-version", "2023-06-01")],
            expect_body: || fixture("anthropic/stream_text.sse"),
            span_name: "Messages.create",
            span_type: "CHAT_MODEL",
            // The stream's message_start carries `cache_creation`: MLflow's
            // autologging records its 1h part (0) too.
            usage: json!({"input_tokens": 12, "output_tokens": 12, "total_tokens": 24, "cache_read_input_tokens": 0, "cache_creation_input_tokens": 0, "cache_creation_input_tokens_above_1hr": 0}),
        },
        Case {
            name: "azure deployment",
            path: "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21",
            body: json!({"messages": msgs}),
            headers: &[("api-key", KEY)],
            expect_body: || fixture("openai_chat/plain.json"),
            span_name: "Completions",
            span_type: "CHAT_MODEL",
            usage: json!({"input_tokens": 19, "output_tokens": 9, "total_tokens": 28, "cache_read_input_tokens": 0}),
        },
        Case {
            name: "databricks invocations",
            path: "/serving-endpoints/my-llm/invocations",
            body: json!({"messages": msgs}),
            headers: &[],
            expect_body: || fixture("openai_chat/plain.json"),
            span_name: "Completions",
            span_type: "CHAT_MODEL",
            usage: json!({"input_tokens": 19, "output_tokens": 9, "total_tokens": 28, "cache_read_input_tokens": 0}),
        },
    ]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_api_lands_in_mlflow_with_the_providers_usage() {
    let mlflow = mlflow::shared().await;
    let provider = FakeProvider::start(answer).await;
    let tap = Tap::start(
        &provider.url(),
        &[
            ("MLFLOW_TRACKING_URI", mlflow.uri()),
            ("MLFLOW_EXPERIMENT_NAME", "e2e-every-api"),
        ],
    )
    .await;
    let mut traced = Vec::new();
    for case in cases() {
        let mut headers = vec![("authorization", "Bearer sk-apis-SECRET-31415926")];
        headers.extend_from_slice(case.headers);
        let got = post(
            &tap.url(case.path),
            &serde_json::to_vec(&case.body).unwrap(),
            &headers,
        )
        .await;
        assert_eq!(got.status, 200, "{}", case.name);
        assert_eq!(
            got.body,
            (case.expect_body)(),
            "{}: the client gets exactly the provider's bytes",
            case.name
        );
        traced.push((case, got.trace_id()));
    }
    let ids: Vec<&str> = traced.iter().map(|(_, id)| id.as_str()).collect();
    for (case, id) in &traced {
        let trace = mlflow.wait_trace(id, Duration::from_secs(60)).await;
        let info = &trace["trace_info"];
        assert_eq!(info["state"], "OK", "{}: {trace}", case.name);
        let usage: Value = serde_json::from_str(
            info["trace_metadata"]["mlflow.trace.tokenUsage"]
                .as_str()
                .unwrap_or_else(|| panic!("{}: no usage in {trace}", case.name)),
        )
        .unwrap();
        assert_eq!(usage, case.usage, "{}", case.name);
        assert_eq!(
            info["tags"]["mlflow.traceName"], case.span_name,
            "{}",
            case.name
        );
        assert!(
            info["response_preview"]
                .as_str()
                .is_some_and(|p| !p.is_empty()),
            "{}: response preview",
            case.name
        );
    }
    let spans = mlflow.spans(&ids).await;
    for (case, id) in &traced {
        let span = &spans[id.as_str()][0];
        assert_eq!(span["name"], case.span_name, "{}", case.name);
        assert_eq!(span["span_type"], case.span_type, "{}", case.name);
        let outputs = &span["attributes"]["mlflow.spanOutputs"];
        assert!(
            outputs.is_object(),
            "{}: outputs are structured JSON: {outputs}",
            case.name
        );
    }
    // Streams are reconstructed; embeddings carry no vectors.
    let by_name = |n: &str| {
        &spans[traced.iter().find(|(c, _)| c.name == n).unwrap().1.as_str()][0]["attributes"]
    };
    assert_eq!(
        by_name("chat stream, usage not requested")["mlflow.spanOutputs"]["choices"][0]["message"]
            ["content"],
        "The capital of France is Paris."
    );
    assert_eq!(
        by_name("anthropic messages stream")["mlflow.spanOutputs"]["type"],
        "message"
    );
    assert_eq!(
        by_name("anthropic messages stream")["mlflow.message.format"],
        "anthropic"
    );
    assert_eq!(
        by_name("responses stream")["mlflow.spanOutputs"]["status"],
        "completed"
    );
    assert!(by_name("embeddings")["mlflow.spanOutputs"]
        .to_string()
        .contains("omitted"));
    assert_eq!(
        by_name("azure deployment")["mlflow.llm.provider"],
        "azure.ai.openai"
    );
    assert_eq!(
        by_name("databricks invocations")["mlflow.llm.provider"],
        "databricks"
    );
    assert_eq!(
        by_name("anthropic messages")["mlflow.llm.provider"],
        "anthropic"
    );
    assert_eq!(
        by_name("chat with tools")["mlflow.chat.tools"][0]["function"]["name"],
        "get_weather"
    );
    assert!(
        !spans.to_string().contains(KEY),
        "no API key in any stored span"
    );
    for id in &ids {
        assert!(!mlflow
            .get_trace_with_spans(id)
            .await
            .unwrap()
            .to_string()
            .contains(KEY));
    }
    tap.running.shutdown().await;
}
