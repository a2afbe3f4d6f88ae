//! The hostile-client suite (issue 8): every attack a client (or a hostile
//! provider reply) can make, run against the llmtap binary, each ending with
//! the proof a sidecar owes its agent — real calls (plain and streamed)
//! answered with the provider's exact bytes, `/healthz` answering, the
//! process alive, its peak RSS under the bound its settings allow
//! ([`kit::rss_bound`]), and no planted secret in any log line, trace,
//! spool, journal or dead-letter file.
//!
//! Runs the test profile's binary, or the one `LLMTAP_HOSTILE_BIN` names:
//!
//! ```sh
//! cargo build --release --locked
//! LLMTAP_HOSTILE_BIN=$PWD/target/release/llmtap cargo test --test hostile
//! ```
//!
//! (`.ci/run` does that.) Every test is bounded: each wait has a limit, a
//! test takes well under 30 s when llmtap holds up, the suite about a minute
//! on 2 cores. Every llmtap runs with a 1 MiB capture cap and a 16 MiB
//! in-flight capture budget (`kit::CAPTURE_ENV`). `docs/security.md` says
//! what each attack is and what llmtap does about it.

mod bombs;
mod config;
mod connections;
mod secrets;
mod targets;
mod usage_filter;

#[path = "../support/bin.rs"]
mod bin;
#[path = "../support/fake_provider.rs"]
mod fake_provider;
#[path = "../support/hostile_kit.rs"]
mod kit;
#[path = "../support/tap.rs"]
mod tap;

use std::io::Write;
use std::net::SocketAddr;
use std::path::Path;
use std::time::{Duration, Instant};

use bin::{run_to_exit, Bin, Keep, Launch};
use bytes::Bytes;
use fake_provider::{FakeProvider, Reply, Seen, Step};
use http_body_util::BodyExt;
use kit::{assert_no_secret, assert_rss_bounded, assert_serves, Limits, CHAT, MIB};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const SERVE_LIMIT: Duration = Duration::from_secs(20);

/// The llmtap binary as the suite runs it: the spool under its dir, every
/// log line (for the secret sweep) up to a bound a flood of per-connection
/// lines cannot pass, and `LLMTAP_HOSTILE_BIN` naming another binary (CI:
/// the release build).
const HOSTILE: Launch = Launch {
    keep: Keep::First(50_000),
    bin_var: Some("LLMTAP_HOSTILE_BIN"),
    ..Launch::DEFAULT
};

/// A command for the binary with the suite's settings, `env` on top.
fn command(dir: &Path, env: &[(&str, &str)]) -> std::process::Command {
    HOSTILE.command(dir, env)
}

// ----- shared steps ---------------------------------------------------------------------------

/// Starts llmtap in `dir` with the suite's capture settings and `env`, and
/// returns it with its idle RSS.
async fn start(upstream: &str, dir: &Path, env: &[(&str, &str)]) -> (Bin, u64) {
    let mut all: Vec<(&str, &str)> = kit::CAPTURE_ENV.to_vec();
    all.extend_from_slice(env);
    let bin = HOSTILE.start(upstream, dir, &all).await;
    let idle = bin.rss();
    (bin, idle)
}

/// The proof every test ends with.
async fn finish(bin: &mut Bin, idle: u64, limits: Limits, secrets: &[&str], what: &str) {
    let ids = assert_serves(bin, what, SERVE_LIMIT).await;
    if bin.traces_to_files {
        kit::assert_traced(bin, &ids, SERVE_LIMIT, what).await;
    }
    assert_rss_bounded(bin, idle, limits, what);
    assert_no_secret(bin, secrets, what).await;
}

/// A header of a request the provider saw.
fn header<'a>(seen: &'a Seen, name: &str) -> Option<&'a str> {
    seen.headers.get(name).and_then(|v| v.to_str().ok())
}

/// A provider answering requests tagged `x-attack: NAME` with `attack(NAME)`
/// (when it has an answer) and every other request as a real provider would.
async fn provider(
    attack: impl Fn(&str, &Seen) -> Option<Reply> + Send + Sync + 'static,
) -> FakeProvider {
    FakeProvider::start(move |seen| {
        header(seen, "x-attack")
            .and_then(|a| attack(a, seen))
            .unwrap_or_else(|| kit::real_reply(seen))
    })
    .await
}

/// `n` bytes in frames of one shared 64 KiB buffer of `fill`.
fn frames(n: usize, fill: u8) -> Vec<Step> {
    let chunk = Bytes::from(vec![fill; 64 * 1024]);
    let mut out = Vec::new();
    let mut left = n;
    while left > 0 {
        let k = left.min(chunk.len());
        out.push(Step::Send(chunk.slice(..k)));
        left -= k;
    }
    out
}

/// A 200 reply of `content_type` made of `steps`, without a content-length.
fn streamed(content_type: &str, steps: Vec<Step>) -> Reply {
    Reply {
        status: 200,
        headers: vec![("content-type".into(), content_type.into())],
        steps,
        head_delay: Duration::ZERO,
    }
}

/// Reads `body` to its end within `limit`, checking each byte against
/// `want(offset)` as it comes (so 64 MiB need not be held twice); returns the
/// length.
async fn read_exact_stream(
    mut body: hyper::body::Incoming,
    want: impl Fn(usize) -> u8,
    limit: Duration,
    what: &str,
) -> usize {
    let read = async {
        let mut at = 0;
        while let Some(frame) = body.frame().await {
            let frame = frame.unwrap_or_else(|e| panic!("{what}: body failed at byte {at}: {e}"));
            if let Ok(data) = frame.into_data() {
                for (i, b) in data.iter().enumerate() {
                    assert_eq!(*b, want(at + i), "{what}: byte {} differs", at + i);
                }
                at += data.len();
            }
        }
        at
    };
    tokio::time::timeout(limit, read)
        .await
        .unwrap_or_else(|_| panic!("{what}: the body did not end within {limit:?}"))
}

/// POSTs a chat request tagged `x-attack: attack` and returns the response
/// head's status and its body unread.
async fn post_attack(bin: &Bin, attack: &str, body: Vec<u8>) -> (u16, hyper::body::Incoming) {
    let req = http::Request::post(bin.url(CHAT))
        .header("content-type", "application/json")
        .header("authorization", format!("Bearer {}", kit::SECRET_AUTH))
        .header("x-attack", attack)
        .body(http_body_util::Full::new(Bytes::from(body)))
        .unwrap();
    let resp = tokio::time::timeout(SERVE_LIMIT, tap::client().request(req))
        .await
        .expect("a response head within the limit")
        .expect("request through llmtap");
    (resp.status().as_u16(), resp.into_body())
}

/// Waits (up to `limit`) for the first body byte; true when one came.
async fn first_byte(body: &mut hyper::body::Incoming, limit: Duration) -> Option<Bytes> {
    let wait = async {
        while let Some(Ok(frame)) = body.frame().await {
            if let Ok(d) = frame.into_data() {
                if !d.is_empty() {
                    return Some(d);
                }
            }
        }
        None
    };
    tokio::time::timeout(limit, wait).await.ok().flatten()
}

/// An MLflow stand-in: `/health` answers 200, `/v1/traces` answers
/// `traces_status`; every request is recorded.
async fn mlflow_stand_in(traces_status: u16) -> FakeProvider {
    FakeProvider::start(move |seen| {
        if seen.uri.ends_with("/v1/traces") {
            Reply::json(
                traces_status,
                if traces_status == 200 {
                    ""
                } else {
                    "{\"error_code\":\"INVALID_PARAMETER_VALUE\"}"
                },
            )
            .header("content-type", "application/x-protobuf")
        } else if seen.uri.ends_with("/health") {
            Reply::json(200, "OK")
        } else {
            Reply::json(404, "{}")
        }
    })
    .await
}

/// Polls `ok` every 50 ms; fails the test after `limit`.
async fn wait_until(what: &str, limit: Duration, mut ok: impl FnMut() -> bool) {
    let start = Instant::now();
    while !ok() {
        assert!(
            start.elapsed() < limit,
            "timed out after {limit:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every directory under `root` (itself included) is 0700 and every file 0600.
fn assert_private(root: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert!(root.is_dir(), "{} was not created", root.display());
    let mut todo = vec![root.to_path_buf()];
    while let Some(d) = todo.pop() {
        assert_eq!(
            mode(&d),
            0o700,
            "directory {} is {:o}",
            d.display(),
            mode(&d)
        );
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                todo.push(p);
            } else {
                assert_eq!(mode(&p), 0o600, "file {} is {:o}", p.display(), mode(&p));
            }
        }
    }
}
