//! Production context from headers (issue 10, item 1, first part): the
//! `x-llmtap-*` headers name the user, session, trace name, tags and
//! metadata of a call; none of them reaches the provider; the trace carries
//! them, with the agent's request id and traceparent.

#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/tap.rs"]
mod tap;

use fake_provider::{FakeProvider, Reply};
use tap::{fixture, post, Tap};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn context_headers_reach_the_trace_and_never_the_provider() {
    let plain = fixture("openai_chat/plain.json");
    let provider = FakeProvider::start(move |_| Reply::json(200, plain.clone())).await;
    let tap = Tap::start(&provider.url(), &[]).await;
    let body = br#"{"model":"gpt-4o-mini","user":"body-user","messages":[{"role":"user","content":"hi"}]}"#;
    let got = post(
        &tap.url("/v1/chat/completions"),
        body,
        &[
            ("x-llmtap-user", "alice"),
            ("x-llmtap-session", "sess-42"),
            ("x-llmtap-trace-name", "triage"),
            ("x-llmtap-tag-env", "prod"),
            ("x-llmtap-metadata-ticket", "T-1"),
            ("x-request-id", "req-7"),
        ],
    )
    .await;
    assert_eq!(got.status, 200);
    let seen = provider.seen();
    let sent = &seen.last().expect("the provider got the call").headers;
    let ours: Vec<_> = sent
        .keys()
        .filter(|k| k.as_str().starts_with("x-llmtap-"))
        .collect();
    assert!(ours.is_empty(), "llmtap headers went upstream: {ours:?}");
    assert_eq!(
        sent.get("x-request-id").unwrap(),
        "req-7",
        "the agent's own id goes on"
    );

    let span = tap.span(&got.trace_id()).await;
    let s = |k: &str| span.str(k);
    assert_eq!(
        s("user.id").as_deref(),
        Some("alice"),
        "the header names the user"
    );
    assert_eq!(s("session.id").as_deref(), Some("sess-42"));
    assert_eq!(
        s("mlflow.traceTag.mlflow.traceName").as_deref(),
        Some("triage")
    );
    assert_eq!(s("mlflow.traceTag.env").as_deref(), Some("prod"));
    assert_eq!(s("llmtap.metadata.ticket").as_deref(), Some("T-1"));
    assert_eq!(
        s("mlflow.traceTag.llmtap.client_request_id").as_deref(),
        Some("req-7")
    );
    tap.running.shutdown().await;
}
