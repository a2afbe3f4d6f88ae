//! Privacy end to end (issue 10, item 5): the llmtap binary between a
//! provider stand-in and a real `mlflow server`. Each test reads what
//! reached MLflow, the bytes of every file llmtap wrote (spool, exchange
//! journal, dead letters, trace files) and its log, and what the client got:
//!
//! - redaction: secrets in the prompt and in a streamed answer (split across
//!   deltas) reach neither MLflow nor the disk; the client's answer is the
//!   provider's, byte for byte;
//! - `metadata` capture (by route, by header): the trace has the model,
//!   usage and status, and no prompt or answer text anywhere;
//! - `none`: no trace and nothing on disk;
//! - sampling 0: only the failed call is traced, the others are counted;
//! - a batch MLflow refuses for good: the dead-letter file is redacted too;
//! - spool off (in process, trace files): the parse worker applies privacy.

#[path = "support/bin.rs"]
mod bin;
#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/mlflow.rs"]
mod mlflow;
#[path = "support/tap.rs"]
mod tap;

use std::time::Duration;

use bin::{Bin, Launch};
use fake_provider::{FakeProvider, Reply};
use serde_json::{json, Value};
use tap::{files_under, get, post};

const CHAT: &str = "/v1/chat/completions";
const WAIT: Duration = Duration::from_secs(60);

// Secrets in the prompt.
const EMAIL: &str = "alice.smith@example.com";
const CARD: &str = "4111 1111 1111 1111";
const KEY: &str = "sk-proj-Zx9Qw8Er7Ty6Ui5Op4As3Df2";
const PHONE: &str = "+44 20 7946 0958";
/// Looks like a card, fails the Luhn check: kept.
const ORDER: &str = "order 1234567890123";
/// A streamed answer whose secrets are split across deltas.
const DELTAS: [&str; 4] = [
    "Reach bob.",
    "jones@exa",
    "mple.org or use sk-ant-api03-",
    "Qm8Nn7Bb6Vv5Cc4Xx3Zz2 today.",
];
/// Every secret, and fragments of them, that must be nowhere.
const NEVER: [&str; 12] = [
    EMAIL,
    "alice.smith",
    CARD,
    "4111 1111",
    KEY,
    "Zx9Qw8Er7",
    "bob.jones",
    "jones@exa",
    "mple.org",
    "Qm8Nn7Bb6",
    PHONE,
    "7946 0958",
];

fn chat_chunk(content: Option<&str>, usage: Option<Value>) -> String {
    let choices = match content {
        Some(c) => json!([{"index": 0, "delta": {"content": c}, "finish_reason": null}]),
        None => json!([]),
    };
    let mut v = json!({"id": "chatcmpl-s1", "object": "chat.completion.chunk",
        "created": 1, "model": "gpt-4o-mini", "choices": choices});
    if let Some(u) = usage {
        v["usage"] = u;
    }
    format!("data: {v}\n\n")
}

/// The provider's streamed answer: `deltas`, then usage, then `[DONE]`.
fn stream_body(deltas: &[&str]) -> String {
    let mut s: String = deltas.iter().map(|d| chat_chunk(Some(d), None)).collect();
    let usage = json!({"prompt_tokens": 21, "completion_tokens": 9, "total_tokens": 30});
    s.push_str(&chat_chunk(None, Some(usage)));
    s.push_str("data: [DONE]\n\n");
    s
}

fn plain_body(content: &str) -> String {
    json!({"id": "chatcmpl-p1", "object": "chat.completion", "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "finish_reason": "stop",
            "message": {"role": "assistant", "content": content}}],
        "usage": {"prompt_tokens": 17, "completion_tokens": 8, "total_tokens": 25}})
    .to_string()
}

/// A provider answering like OpenAI chat: `answer` (streamed as `deltas`
/// when asked), a 500 to a prompt that says "please fail".
async fn provider(answer: &'static str, deltas: &'static [&'static str]) -> FakeProvider {
    FakeProvider::start(move |seen| {
        let req: Value = serde_json::from_slice(&seen.body).unwrap_or(Value::Null);
        if String::from_utf8_lossy(&seen.body).contains("please fail") {
            Reply::json(500, r#"{"error":{"message":"boom","type":"server_error"}}"#)
        } else if req["stream"] == true {
            Reply::sse(stream_body(deltas).as_bytes())
        } else {
            Reply::json(200, plain_body(answer))
        }
    })
    .await
}

fn request(prompt: &str, stream: bool) -> Vec<u8> {
    let mut v = json!({"model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": prompt}]});
    if stream {
        // Usage asked for: nothing is injected, the answer passes untouched.
        v["stream"] = json!(true);
        v["stream_options"] = json!({"include_usage": true});
    }
    v.to_string().into_bytes()
}

/// llmtap (spool on) tracing into a fresh experiment.
struct Scene {
    bin: Bin,
    experiment: String,
    dir: tempfile::TempDir,
}

impl Scene {
    async fn start(
        mlflow: &mlflow::Mlflow,
        provider: &FakeProvider,
        config_extra: &'static str,
        env: &[(&str, &str)],
    ) -> Scene {
        let (name, experiment) = mlflow.unique_experiment("privacy").await;
        let dir = tempfile::tempdir().unwrap();
        let launch = Launch {
            config_extra,
            ..Launch::DEFAULT
        };
        let mut all = vec![
            ("MLFLOW_TRACKING_URI", mlflow.uri()),
            ("MLFLOW_EXPERIMENT_NAME", name.as_str()),
        ];
        all.extend_from_slice(env);
        let bin = launch.start(&provider.url(), dir.path(), &all).await;
        Scene {
            bin,
            experiment,
            dir,
        }
    }

    /// The bytes of every file llmtap wrote (its config file aside), by path.
    fn disk(&self) -> Vec<(String, Vec<u8>)> {
        files_under(self.dir.path())
            .into_iter()
            .filter(|p| p.file_name().is_none_or(|n| n != "llmtap.toml"))
            .map(|p| {
                (
                    p.display().to_string(),
                    std::fs::read(&p).unwrap_or_default(),
                )
            })
            .collect()
    }

    /// Panics naming the file when any of `texts` is in a file on disk;
    /// returns how many files were read.
    fn assert_not_on_disk(&self, texts: &[&str]) -> usize {
        let files = self.disk();
        for (path, bytes) in &files {
            for t in texts {
                assert!(!contains(bytes, t), "{t:?} is on disk in {path}");
            }
        }
        files.len()
    }

    /// True when some file on disk holds `text` (the positive control of
    /// [`Scene::assert_not_on_disk`]).
    fn on_disk(&self, text: &str) -> bool {
        self.disk().iter().any(|(_, b)| contains(b, text))
    }

    async fn metric(&self, name: &str) -> f64 {
        let got = get(&self.bin.admin_url("/metrics")).await;
        let text = String::from_utf8_lossy(&got.body).to_string();
        text.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {name} in /metrics:\n{text}"))
    }
}

fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|w| w == needle.as_bytes())
}

/// The whole trace as MLflow returns it (info and spans), as text.
async fn trace_text(mlflow: &mlflow::Mlflow, trace_id: &str) -> (Value, String) {
    let info = mlflow.wait_trace(trace_id, WAIT).await;
    let full = mlflow
        .get_trace_with_spans(trace_id)
        .await
        .unwrap_or_else(|| panic!("{trace_id} has no spans"));
    let text = format!("{info}\n{full}");
    (info, text)
}

fn assert_absent(text: &str, texts: &[&str], what: &str) {
    for t in texts {
        assert!(!text.contains(t), "{t:?} reached {what}:\n{text}");
    }
}

fn token_total(info: &Value) -> i64 {
    let usage = info["trace_info"]["trace_metadata"]["mlflow.trace.tokenUsage"]
        .as_str()
        .unwrap_or_else(|| panic!("no token usage in {info}"));
    serde_json::from_str::<Value>(usage).unwrap()["total_tokens"]
        .as_i64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redacted_secrets_reach_neither_mlflow_nor_the_disk() {
    let mlflow = mlflow::shared().await;
    let answer = "Your card 4111 1111 1111 1111 is noted; I wrote to alice.smith@example.com.";
    let provider = provider(answer, &DELTAS).await;
    let env = [("LLMTAP_REDACT_BUILTIN", "email,card,phone,api_key")];
    let mut scene = Scene::start(mlflow, &provider, "", &env).await;
    let prompt = format!(
        "What is the capital of France? I am {EMAIL}, card {CARD}, key {KEY}, phone {PHONE}, {ORDER}."
    );

    let plain = post(&scene.bin.url(CHAT), &request(&prompt, false), &[]).await;
    assert_eq!(plain.status, 200);
    assert_eq!(
        plain.body,
        plain_body(answer).as_bytes(),
        "the client's answer is untouched"
    );
    let streamed = post(&scene.bin.url(CHAT), &request(&prompt, true), &[]).await;
    assert_eq!(streamed.status, 200);
    assert_eq!(
        streamed.body,
        stream_body(&DELTAS).as_bytes(),
        "the stream is untouched"
    );

    for got in [&plain, &streamed] {
        let (info, text) = trace_text(mlflow, &got.trace_id()).await;
        assert_eq!(info["trace_info"]["state"], "OK");
        assert_absent(&text, &NEVER, "MLflow");
        // What is not secret is there, and so are the replacements.
        assert!(text.contains("capital of France"), "{text}");
        assert!(text.contains("[REDACTED:email]"), "{text}");
        assert!(text.contains("[REDACTED:card]"), "{text}");
        assert!(text.contains("[REDACTED:api_key]"), "{text}");
        assert!(text.contains("[REDACTED:phone]"), "{text}");
        assert!(
            text.contains(ORDER),
            "a number failing Luhn is kept: {text}"
        );
    }
    let (_, text) = trace_text(mlflow, &streamed.trace_id()).await;
    assert!(
        text.contains("Reach [REDACTED:email] or use [REDACTED:api_key] today."),
        "the streamed answer, redacted as one text: {text}"
    );
    assert!(scene.metric("llmtap_redactions_total").await >= 8.0);

    assert!(
        scene.on_disk("capital of France"),
        "the journal holds the calls"
    );
    scene.bin.stop().await;
    let files = scene.assert_not_on_disk(&NEVER);
    assert!(files > 0);
    assert_absent(&scene.bin.log(), &NEVER, "the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metadata_capture_by_route_and_by_header_keeps_no_text() {
    let mlflow = mlflow::shared().await;
    let provider = provider("metadata-answer-text", &["metadata-", "stream-text"]).await;
    let route = format!(
        "\n[[routes]]\nprefix = \"/meta\"\nupstream = \"{}\"\nstrip_prefix = true\ncapture = \"metadata\"\n",
        provider.url()
    );
    let route: &'static str = Box::leak(route.into_boxed_str());
    let mut scene = Scene::start(mlflow, &provider, route, &[]).await;
    let prompt = "metadata-prompt-text: the capital of France?";

    // By route (a header cannot turn full capture back on), then by header.
    let by_route = post(
        &scene.bin.url(&format!("/meta{CHAT}")),
        &request(prompt, false),
        &[("x-llmtap-capture", "full")],
    )
    .await;
    let by_header = post(
        &scene.bin.url(CHAT),
        &request(prompt, true),
        &[("x-llmtap-capture", "metadata")],
    )
    .await;
    assert_eq!(
        (by_route.status.as_u16(), by_header.status.as_u16()),
        (200, 200)
    );
    assert_eq!(by_route.body, plain_body("metadata-answer-text").as_bytes());
    assert!(String::from_utf8_lossy(&by_header.body).contains("stream-text"));
    for seen in provider.seen() {
        assert!(
            seen.headers.get("x-llmtap-capture").is_none(),
            "the header went upstream"
        );
    }

    let texts = [
        "metadata-prompt-text",
        "metadata-answer-text",
        "stream-text",
        "France",
    ];
    for (got, total) in [(&by_route, 25), (&by_header, 30)] {
        let (info, text) = trace_text(mlflow, &got.trace_id()).await;
        assert_eq!(info["trace_info"]["state"], "OK");
        assert_eq!(token_total(&info), total, "usage survives");
        assert!(text.contains("gpt-4o-mini"), "the model survives: {text}");
        assert_absent(&text, &texts, "MLflow");
    }
    assert!(scene.on_disk("gpt-4o-mini"), "the journal holds the calls");
    scene.bin.stop().await;
    scene.assert_not_on_disk(&texts);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn capture_none_leaves_no_trace_and_nothing_on_disk() {
    let mlflow = mlflow::shared().await;
    let provider = provider("none-answer-text", &["unused"]).await;
    let mut scene = Scene::start(mlflow, &provider, "", &[]).await;

    let none = post(
        &scene.bin.url(CHAT),
        &request("none-prompt-text", false),
        &[("x-llmtap-capture", "none")],
    )
    .await;
    assert_eq!(none.status, 200);
    assert_eq!(none.body, plain_body("none-answer-text").as_bytes());
    assert!(
        none.headers.get("x-llmtap-trace-id").is_none(),
        "no trace id: no trace"
    );
    // A traced call after it: once it is in MLflow, the first would be too.
    // (Streamed: its answer is not the first call's.)
    let traced = post(&scene.bin.url(CHAT), &request("traced-prompt", true), &[]).await;
    trace_text(mlflow, &traced.trace_id()).await;

    let traces = mlflow.search_traces(&scene.experiment).await;
    assert_eq!(traces.len(), 1, "only the traced call: {traces:?}");
    assert_eq!(scene.metric("llmtap_traces_not_captured_total").await, 1.0);
    assert!(scene.on_disk("traced-prompt"));
    scene.bin.stop().await;
    scene.assert_not_on_disk(&["none-prompt-text", "none-answer-text"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sampling_zero_traces_only_the_failed_call() {
    let mlflow = mlflow::shared().await;
    let provider = provider("sampled-answer-text", &["sampled-", "stream"]).await;
    let mut scene = Scene::start(mlflow, &provider, "", &[("LLMTAP_SAMPLE", "0")]).await;

    let mut ok_ids = Vec::new();
    for i in 0..4 {
        let prompt = format!("sampled-out-call-{i}");
        let got = post(&scene.bin.url(CHAT), &request(&prompt, i % 2 == 1), &[]).await;
        assert_eq!(got.status, 200);
        ok_ids.push(got.trace_id());
    }
    let failed = post(&scene.bin.url(CHAT), &request("please fail", false), &[]).await;
    assert_eq!(failed.status, 500);

    let (info, _) = trace_text(mlflow, &failed.trace_id()).await;
    assert_eq!(info["trace_info"]["state"], "ERROR");
    let traces = mlflow.search_traces(&scene.experiment).await;
    assert_eq!(traces.len(), 1, "only the failed call: {traces:?}");
    for id in &ok_ids {
        assert!(mlflow.get_trace(id).await.is_none(), "{id} was traced");
    }
    assert_eq!(scene.metric("llmtap_traces_unsampled_total").await, 4.0);
    assert!(scene.on_disk("please fail"), "the failed call was written");
    scene.bin.stop().await;
    scene.assert_not_on_disk(&["sampled-out-call", "sampled-answer-text"]);
}

/// Spool off (memory only), in process, into trace files: the parse worker
/// applies privacy before the span is built.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_off_redacts_and_reduces_before_the_trace_files() {
    let provider = provider("memory-answer-text", &DELTAS).await;
    let env = [
        ("LLMTAP_SPOOL", "false"),
        ("LLMTAP_REDACT_BUILTIN", "email,api_key"),
    ];
    let tap = tap::Tap::start(&provider.url(), &env).await;
    let prompt = format!("capital of France, says {EMAIL}");
    let streamed = post(&tap.url(CHAT), &request(&prompt, true), &[]).await;
    assert_eq!(streamed.body, stream_body(&DELTAS).as_bytes());
    let reduced = post(
        &tap.url(CHAT),
        &request("memory-prompt-text", false),
        &[("x-llmtap-capture", "metadata")],
    )
    .await;

    let span = tap.span(&streamed.trace_id()).await;
    let text = span.0.to_string();
    assert_absent(&text, &NEVER, "the trace file");
    assert!(
        text.contains("Reach [REDACTED:email] or use [REDACTED:api_key] today."),
        "{text}"
    );
    assert!(
        span.attr("llmtap.time_to_first_token_ms").is_some(),
        "arrival times survive the rewrite: {text}"
    );
    let span = tap.span(&reduced.trace_id()).await;
    assert_eq!(span.int("gen_ai.usage.input_tokens"), Some(17));
    assert_eq!(span.str("mlflow.llm.model").as_deref(), Some("gpt-4o-mini"));
    assert_absent(
        &span.0.to_string(),
        &["memory-prompt-text", "memory-answer-text"],
        "the trace file",
    );

    for path in files_under(tap._tmp.path()) {
        let bytes = std::fs::read(&path).unwrap_or_default();
        for t in NEVER
            .iter()
            .chain(&["memory-prompt-text", "memory-answer-text"])
        {
            assert!(!contains(&bytes, t), "{t:?} in {}", path.display());
        }
    }
    tap.running.shutdown().await;
}

/// A batch MLflow refuses for good (an experiment that does not exist) goes
/// to the dead-letter file: redacted like everything else.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_letters_hold_only_redacted_spans() {
    let mlflow = mlflow::shared().await;
    let provider = provider("dead-letter answer", &DELTAS).await;
    let env = [
        ("LLMTAP_REDACT_BUILTIN", "email,card,api_key"),
        ("MLFLOW_EXPERIMENT_ID", "987654321"),
    ];
    let mut scene = Scene::start(mlflow, &provider, "", &env).await;
    let prompt = format!("capital of France? {EMAIL} {CARD} {KEY}");
    let got = post(&scene.bin.url(CHAT), &request(&prompt, true), &[]).await;
    assert_eq!(got.status, 200);
    let dead = scene.dir.path().join("dead-letter");
    let start = std::time::Instant::now();
    while !files_under(&dead)
        .iter()
        .any(|p| std::fs::read(p).is_ok_and(|b| contains(&b, "capital of France")))
    {
        assert!(
            start.elapsed() < WAIT,
            "nothing dead-lettered:\n{}",
            scene.bin.log_tail(30)
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    assert!(scene.metric("llmtap_traces_dead_lettered_total").await >= 1.0);
    scene.bin.stop().await;
    scene.assert_not_on_disk(&NEVER);
}
