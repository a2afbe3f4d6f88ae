//! Upstream credentials added by llmtap (`credential = "env:..."` /
//! `"file:..."`), against the binary and a fake provider that records what
//! it received: the key goes in when the agent sends none, the agent's own
//! wins unless `credential_override`, Anthropic gets `x-api-key` (and no
//! invented `anthropic-version`), a rotated file is picked up while running,
//! a missing file stops llmtap at start with a clear message, the official
//! SDKs (which insist on a key) work with a placeholder and the override, and
//! the key appears nowhere but at the provider: not in a log line, a trace,
//! the spool or journal, `/metrics`, or an answer's body. `databricks`: a PAT
//! or an OAuth token from the Databricks workspace stand-in reaches a model
//! serving endpoint on that workspace, the token cached, and refreshed after
//! a 401.

#[path = "../support/bin.rs"]
mod bin;
#[path = "../support/databricks.rs"]
mod databricks;
#[path = "../support/fake_provider.rs"]
mod fake_provider;
#[path = "../support/mlflow.rs"]
mod mlflow;
#[path = "../support/tap.rs"]
mod tap;

mod keys;
mod serving;

use std::path::Path;
use std::time::{Duration, Instant};

use bin::{run_to_exit, Bin, Keep, Launch};
use bytes::Bytes;
use fake_provider::{FakeProvider, Reply, Seen};
use http_body_util::{BodyExt, Full};

const CHAT: &str = "/v1/chat/completions";
const CHAT_BODY: &str = r#"{"model":"gpt-4o-mini","messages":[{"role":"user","content":"hi"}]}"#;
const MESSAGES_BODY: &str =
    r#"{"model":"claude-sonnet-4-5","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;
/// The key llmtap holds; it must reach the provider and nothing else.
const CANARY: &str = "sk-llmtap-CANARY-4b1d0e";
const LIMIT: Duration = Duration::from_secs(20);

/// Every log line, down to trace level (hyper's and h2's included), for the
/// canary sweep.
const LAUNCH: Launch = Launch {
    env: &[("RUST_LOG", "trace")],
    keep: Keep::First(50_000),
    ..Launch::DEFAULT
};

/// A provider answering chat and messages calls as the real ones do.
async fn provider() -> FakeProvider {
    FakeProvider::start(|seen| {
        if seen.uri.contains("/messages") {
            Reply::json(200, tap::fixture("anthropic/plain.json"))
        } else {
            Reply::json(200, tap::fixture("openai_chat/plain.json"))
        }
    })
    .await
}

/// POSTs `body` to `path` with exactly `headers` (and a content type).
async fn call(bin: &Bin, path: &str, body: &str, headers: &[(&str, &str)]) -> tap::Got {
    let mut req = http::Request::post(bin.url(path)).header("content-type", "application/json");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(Bytes::from(body.to_string()))).unwrap();
    let resp = tokio::time::timeout(LIMIT, tap::client().request(req))
        .await
        .expect("an answer in time")
        .expect("a call through llmtap");
    let (parts, body) = resp.into_parts();
    let body = body.collect().await.expect("the body").to_bytes();
    tap::Got {
        status: parts.status,
        headers: parts.headers,
        body,
    }
}

/// Every value of header `name` the provider got on request `seen`.
fn values(seen: &Seen, name: &str) -> Vec<String> {
    seen.headers
        .get_all(name)
        .iter()
        .map(|v| v.to_str().unwrap().to_string())
        .collect()
}

/// A chat call without a credential of the agent's; its trace id.
async fn chat_ok(bin: &Bin) -> String {
    let got = call(bin, CHAT, CHAT_BODY, &[]).await;
    assert_eq!(got.status, 200);
    got.trace_id()
}

fn last(p: &FakeProvider) -> Seen {
    p.seen().pop().expect("the provider got a request")
}

/// Starts llmtap against `upstream` with `config` (TOML, after the fast
/// defaults) and `env`.
async fn start(upstream: &str, dir: &Path, config: &'static str, env: &[(&str, &str)]) -> Bin {
    let launch = Launch {
        config_extra: config,
        ..LAUNCH
    };
    launch.start(upstream, dir, env).await
}

/// Waits until `f` holds (20 s at most).
async fn until(what: &str, mut f: impl FnMut() -> bool) {
    let start = Instant::now();
    while !f() {
        assert!(start.elapsed() < LIMIT, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits for the trace of each call, then checks that none of `secrets` is
/// in a log line, a file under the llmtap's dir (traces, spool, journal,
/// dead letters), `/metrics`, or any answer body in `bodies`.
async fn assert_nowhere(bin: &Bin, secrets: &[&str], ids: &[String], bodies: &[Bytes]) {
    let traces = bin.dir.join("traces");
    until("the traces of every call", || {
        let spans = tap::spans_in(&traces);
        ids.iter().all(|id| {
            let hex = id.trim_start_matches("tr-");
            spans.iter().any(|s| s["traceId"] == hex)
        })
    })
    .await;
    let metrics = tap::get(&bin.admin_url("/metrics")).await.body;
    let log = bin.log();
    assert!(log.contains("llmtap adds the upstream credential"), "{log}");
    for s in secrets {
        let s = s.as_bytes();
        let found = |hay: &[u8]| hay.windows(s.len()).any(|w| w == s);
        if let Some(line) = log.lines().find(|l| found(l.as_bytes())) {
            panic!("the key is in a log line: {line}");
        }
        assert!(!found(&metrics), "the key is in /metrics");
        for b in bodies {
            assert!(!found(b), "the key is in an answer: {b:?}");
        }
        let files = tap::files_under(&bin.dir);
        assert!(
            files
                .iter()
                .any(|f| f.to_string_lossy().contains("exchanges")),
            "the journal was written: {files:?}"
        );
        for f in files {
            let bytes = std::fs::read(&f).unwrap_or_default();
            assert!(!found(&bytes), "the key is in {}", f.display());
        }
    }
}
