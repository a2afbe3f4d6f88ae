//! Usage on every stream, routes to several upstreams, and provider path
//! shapes (Azure, Databricks), in-process against fake providers.

#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/tap.rs"]
mod tap;

use fake_provider::{FakeProvider, Reply, Seen};
use serde_json::{json, Value};
use tap::{fixture, post, Tap};

const CHAT: &str = "/v1/chat/completions";

/// What OpenAI sends for a chat stream, with or without `include_usage`.
fn openai_stream(include_usage: bool) -> Vec<u8> {
    let with = String::from_utf8(fixture("openai_chat/stream_include_usage.sse")).unwrap();
    if include_usage {
        return with.into_bytes();
    }
    // Without the option OpenAI sends no "usage":null members and no usage-only chunk.
    with.split("\n\n")
        .filter(|e| !e.contains("\"choices\":[]"))
        .map(|e| e.replace(",\"usage\":null", ""))
        .collect::<Vec<_>>()
        .join("\n\n")
        .into_bytes()
}

fn asks_for_usage(seen: &Seen) -> bool {
    let v: Value = serde_json::from_slice(&seen.body).unwrap_or(Value::Null);
    v["stream_options"]["include_usage"] == true
}

/// A provider that streams like OpenAI, honouring `include_usage`.
async fn openai_like() -> FakeProvider {
    FakeProvider::start(|seen| Reply::sse(&openai_stream(asks_for_usage(seen)))).await
}

fn stream_request(extra: Value) -> Vec<u8> {
    let mut v = json!({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "Capital of France?"}], "stream": true});
    for (k, val) in extra.as_object().unwrap() {
        v[k] = val.clone();
    }
    serde_json::to_vec(&v).unwrap()
}

#[tokio::test]
async fn a_stream_without_usage_gets_usage_in_the_trace_and_the_client_sees_no_difference() {
    let provider = openai_like().await;
    let tap = Tap::start(&provider.url(), &[]).await;
    let request = stream_request(json!({}));
    let got = post(&tap.url(CHAT), &request, &[]).await;
    assert_eq!(
        got.body,
        openai_stream(false),
        "exactly the stream the client asked for"
    );
    assert!(
        asks_for_usage(&provider.seen()[0]),
        "llmtap asked the provider for usage"
    );
    let sent: Value = serde_json::from_slice(&provider.seen()[0].body).unwrap();
    let mut expected: Value = serde_json::from_slice(&request).unwrap();
    expected["stream_options"] = json!({"include_usage": true});
    assert_eq!(sent, expected, "nothing else in the request changed");

    let span = tap.span(&got.trace_id()).await;
    assert_eq!(
        span.json("mlflow.chat.tokenUsage").unwrap(),
        json!({"input_tokens": 1342, "output_tokens": 8, "total_tokens": 1350, "cache_read_input_tokens": 1280})
    );
    assert_eq!(
        span.json("mlflow.spanInputs").unwrap(),
        serde_json::from_slice::<Value>(&request).unwrap(),
        "the trace shows what the client sent"
    );
    assert_eq!(span.status_code(), 1);
}

#[tokio::test]
async fn a_stream_that_asks_for_usage_is_untouched() {
    let provider = openai_like().await;
    let tap = Tap::start(&provider.url(), &[]).await;
    let request = stream_request(json!({"stream_options": {"include_usage": true}}));
    let got = post(&tap.url(CHAT), &request, &[]).await;
    assert_eq!(provider.seen()[0].body, request);
    assert_eq!(got.body, openai_stream(true));
}

#[tokio::test]
async fn injection_off_never_touches_the_body_and_records_no_usage() {
    let provider = openai_like().await;
    let tap = Tap::start(&provider.url(), &[("LLMTAP_INJECT_STREAM_USAGE", "false")]).await;
    let request = stream_request(json!({}));
    let got = post(&tap.url(CHAT), &request, &[]).await;
    assert_eq!(provider.seen()[0].body, request);
    assert_eq!(got.body, openai_stream(false));
    let span = tap.span(&got.trace_id()).await;
    assert!(
        span.attr("mlflow.chat.tokenUsage").is_none(),
        "unknown, never zero"
    );
    assert!(span.attr("gen_ai.usage.input_tokens").is_none());
}

#[tokio::test]
async fn non_stream_requests_are_never_rewritten() {
    let plain = fixture("openai_chat/plain.json");
    let provider = FakeProvider::start(move |_| Reply::json(200, plain.clone())).await;
    let tap = Tap::start(&provider.url(), &[]).await;
    let request = br#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
    post(&tap.url(CHAT), request, &[]).await;
    assert_eq!(&provider.seen()[0].body[..], &request[..]);
}

#[tokio::test]
async fn routes_send_a_prefix_to_another_upstream() {
    let openai = FakeProvider::start(|s| {
        Reply::json(200, format!("{{\"who\":\"openai\",\"uri\":\"{}\"}}", s.uri))
    })
    .await;
    let other = FakeProvider::start(|s| {
        Reply::json(200, format!("{{\"who\":\"other\",\"uri\":\"{}\"}}", s.uri))
    })
    .await;
    let other_url: http::Uri = other.url().parse().unwrap();
    let tap = Tap::start_with(&openai.url(), &[], |c| {
        c.routes = vec![
            llmtap::config::RouteConfig {
                prefix: Some("/other".into()),
                host: None,
                upstream: other_url.clone(),
                strip_prefix: true,
                credential: None,
            },
            llmtap::config::RouteConfig {
                prefix: Some("/kept".into()),
                host: None,
                upstream: other_url,
                strip_prefix: false,
                credential: None,
            },
        ];
    })
    .await;
    let got = post(&tap.url("/other/v1/chat/completions?x=1"), b"{}", &[]).await;
    assert_eq!(
        got.body,
        "{\"who\":\"other\",\"uri\":\"/v1/chat/completions?x=1\"}"
    );
    assert_eq!(other.seen()[0].headers["host"], other.addr.to_string());
    let got = post(&tap.url("/kept/v1/chat/completions"), b"{}", &[]).await;
    assert_eq!(
        got.body,
        "{\"who\":\"other\",\"uri\":\"/kept/v1/chat/completions\"}"
    );
    let got = post(&tap.url("/v1/chat/completions"), b"{}", &[]).await;
    assert_eq!(
        got.body,
        "{\"who\":\"openai\",\"uri\":\"/v1/chat/completions\"}"
    );
    let span = tap.span(&got.trace_id()).await;
    assert_eq!(
        span.str("url.path").as_deref(),
        Some("/v1/chat/completions")
    );
}

#[tokio::test]
async fn routes_from_the_config_file() {
    let other =
        FakeProvider::start(|s| Reply::json(200, format!("{{\"uri\":\"{}\"}}", s.uri))).await;
    let file = format!(
        "[[routes]]\nprefix = \"/anthropic\"\nupstream = \"{}\"\nstrip_prefix = true\n",
        other.url()
    );
    let env: llmtap::config::Env = [
        ("LLMTAP_UPSTREAM", "http://127.0.0.1:9"),
        ("LLMTAP_LISTEN", "127.0.0.1:0"),
        ("LLMTAP_ADMIN_LISTEN", "127.0.0.1:0"),
        ("ENABLE_MLFLOW_TRACING", "false"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    let cfg = llmtap::config::resolve(&Default::default(), &env, Some(&file)).unwrap();
    let running = llmtap::start(cfg).await.unwrap();
    let got = post(
        &format!("http://{}/anthropic/v1/messages", running.addr),
        b"{}",
        &[],
    )
    .await;
    assert_eq!(got.body, "{\"uri\":\"/v1/messages\"}");
}

#[tokio::test]
async fn azure_deployment_path_names_the_model_and_keeps_the_api_key_out() {
    let body = br#"{"id":"chatcmpl-az","object":"chat.completion","choices":[{"index":0,"message":{"role":"assistant","content":"ok"},"finish_reason":"stop"}],"usage":{"prompt_tokens":3,"completion_tokens":1,"total_tokens":4}}"#;
    let provider = FakeProvider::start(move |_| Reply::json(200, &body[..])).await;
    let tap = Tap::start(&provider.url(), &[]).await;
    let path = "/openai/deployments/gpt4o-prod/chat/completions?api-version=2024-10-21";
    let got = post(
        &tap.url(path),
        br#"{"messages":[{"role":"user","content":"hi"}]}"#,
        &[("api-key", "azure-SECRET-key-123")],
    )
    .await;
    assert_eq!(provider.seen()[0].uri, path);
    assert_eq!(
        provider.seen()[0].headers["api-key"],
        "azure-SECRET-key-123"
    );
    let span = tap.span(&got.trace_id()).await;
    assert_eq!(span.str("mlflow.llm.model").as_deref(), Some("gpt4o-prod"));
    assert_eq!(
        span.str("mlflow.llm.provider").as_deref(),
        Some("azure.ai.openai")
    );
    assert_eq!(
        span.str("url.path").as_deref(),
        Some("/openai/deployments/gpt4o-prod/chat/completions")
    );
    assert_eq!(
        span.json("mlflow.chat.tokenUsage").unwrap()["total_tokens"],
        4
    );
    assert!(
        !span.0.to_string().contains("azure-SECRET"),
        "api-key never exported"
    );
}

#[tokio::test]
async fn databricks_invocations_with_a_chat_payload_trace_as_chat() {
    let plain = fixture("openai_chat/plain.json");
    let provider = FakeProvider::start(move |_| Reply::json(200, plain.clone())).await;
    let tap = Tap::start(&provider.url(), &[]).await;
    let got = post(
        &tap.url("/serving-endpoints/my-llm/invocations"),
        br#"{"messages":[{"role":"user","content":"hi"}]}"#,
        &[],
    )
    .await;
    let span = tap.span(&got.trace_id()).await;
    assert_eq!(span.0["name"], "Completions");
    assert_eq!(span.str("mlflow.spanType").as_deref(), Some("CHAT_MODEL"));
    assert_eq!(
        span.str("mlflow.llm.provider").as_deref(),
        Some("databricks")
    );
    assert_eq!(
        span.json("mlflow.chat.tokenUsage").unwrap()["input_tokens"],
        19
    );
    let got = post(
        &tap.url("/serving-endpoints/chat/completions"),
        br#"{"model":"databricks-claude","messages":[]}"#,
        &[],
    )
    .await;
    let span = tap.span(&got.trace_id()).await;
    assert_eq!(
        span.str("mlflow.llm.provider").as_deref(),
        Some("databricks")
    );
}
