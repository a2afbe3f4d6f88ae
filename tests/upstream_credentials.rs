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

#[path = "support/bin.rs"]
mod bin;
#[path = "support/databricks.rs"]
mod databricks;
#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/mlflow.rs"]
mod mlflow;
#[path = "support/tap.rs"]
mod tap;

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_key_is_added_when_the_agent_sends_none_and_the_agents_own_wins() {
    let p = provider().await;
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("TEAM_OPENAI_KEY", CANARY),
        ("LLMTAP_UPSTREAM_CREDENTIAL", "env:TEAM_OPENAI_KEY"),
    ];
    let bin = start(&p.url(), dir.path(), "", &env).await;

    let got = call(&bin, CHAT, CHAT_BODY, &[]).await;
    assert_eq!(got.status, 200);
    let seen = last(&p);
    assert_eq!(values(&seen, "authorization"), [format!("Bearer {CANARY}")]);
    assert_eq!(&seen.body[..], CHAT_BODY.as_bytes(), "the body untouched");

    let own = call(
        &bin,
        CHAT,
        CHAT_BODY,
        &[("authorization", "Bearer sk-agent-own")],
    )
    .await;
    assert_eq!(own.status, 200);
    assert_eq!(values(&last(&p), "authorization"), ["Bearer sk-agent-own"]);

    // A path llmtap does not trace gets the key too (listing models).
    let models = tokio::time::timeout(LIMIT, tap::get(&bin.url("/v1/models")))
        .await
        .unwrap();
    assert_eq!(models.status, 200);
    assert_eq!(
        values(&last(&p), "authorization"),
        [format!("Bearer {CANARY}")]
    );

    let ids = [got.trace_id(), own.trace_id()];
    assert_nowhere(&bin, &[CANARY], &ids, &[got.body, own.body, models.body]).await;
}

const OVERRIDE: &str = r#"
[upstream]
credential = "env:TEAM_OPENAI_KEY"
credential_override = true
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_override_the_key_replaces_every_agent_credential() {
    let p = provider().await;
    let dir = tempfile::tempdir().unwrap();
    let bin = start(
        &p.url(),
        dir.path(),
        OVERRIDE,
        &[("TEAM_OPENAI_KEY", CANARY)],
    )
    .await;
    let got = call(
        &bin,
        CHAT,
        CHAT_BODY,
        &[
            ("authorization", "Bearer placeholder"),
            ("api-key", "placeholder"),
            ("openai-organization", "org-1"),
        ],
    )
    .await;
    assert_eq!(got.status, 200);
    let seen = last(&p);
    assert_eq!(values(&seen, "authorization"), [format!("Bearer {CANARY}")]);
    assert!(values(&seen, "api-key").is_empty(), "{:?}", seen.headers);
    assert_eq!(values(&seen, "openai-organization"), ["org-1"]);
    assert_nowhere(&bin, &[CANARY], &[got.trace_id()], &[got.body]).await;
}

const ANTHROPIC_ROUTE: &str = r#"
[[routes]]
prefix = "/anthropic"
upstream = "UPSTREAM"
strip_prefix = true
credential = "env:ANTHROPIC_API_KEY"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_anthropic_route_gets_x_api_key_and_no_invented_version() {
    let anthropic = provider().await;
    let openai = provider().await;
    let dir = tempfile::tempdir().unwrap();
    let config: &'static str = ANTHROPIC_ROUTE.replace("UPSTREAM", &anthropic.url()).leak();
    let bin = start(
        &openai.url(),
        dir.path(),
        config,
        &[("ANTHROPIC_API_KEY", CANARY)],
    )
    .await;

    let sdk_like = [("anthropic-version", "2023-06-01")];
    let got = call(&bin, "/anthropic/v1/messages", MESSAGES_BODY, &sdk_like).await;
    assert_eq!(got.status, 200);
    let seen = last(&anthropic);
    assert_eq!(seen.uri, "/v1/messages");
    assert_eq!(values(&seen, "x-api-key"), [CANARY]);
    assert!(values(&seen, "authorization").is_empty());
    assert_eq!(values(&seen, "anthropic-version"), ["2023-06-01"]);

    // An untraced Anthropic path: the same header; no version made up.
    let count = call(
        &bin,
        "/anthropic/v1/messages/count_tokens",
        MESSAGES_BODY,
        &[],
    )
    .await;
    assert_eq!(count.status, 200);
    let seen = last(&anthropic);
    assert_eq!(values(&seen, "x-api-key"), [CANARY]);
    assert!(values(&seen, "anthropic-version").is_empty());

    // The default upstream has no credential: nothing is added there.
    let plain = call(&bin, CHAT, CHAT_BODY, &[]).await;
    assert_eq!(plain.status, 200);
    let seen = last(&openai);
    assert!(values(&seen, "authorization").is_empty());
    assert!(values(&seen, "x-api-key").is_empty());

    let ids = [got.trace_id(), plain.trace_id()];
    assert_nowhere(&bin, &[CANARY], &ids, &[got.body, count.body]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_rotated_key_file_is_picked_up_and_a_broken_one_keeps_the_last_key() {
    const NEXT: &str = "sk-llmtap-CANARY-rotated-77c2";
    let p = provider().await;
    let dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let key = secrets.path().join("openai");
    std::fs::write(&key, format!("{CANARY}\n")).unwrap();
    let source = format!("file:{}", key.display());
    let env = [
        ("LLMTAP_UPSTREAM_CREDENTIAL", source.as_str()),
        ("LLMTAP_UPSTREAM_CREDENTIAL_CHECK_INTERVAL", "200ms"),
    ];
    let bin = start(&p.url(), dir.path(), "", &env).await;
    let mut ids = Vec::new();
    ids.push(chat_ok(&bin).await);
    assert_eq!(
        values(&last(&p), "authorization"),
        [format!("Bearer {CANARY}")],
        "the trailing newline is trimmed"
    );

    // Rotated the way a Kubernetes secret volume does it: a new file renamed over.
    let tmp = secrets.path().join(".openai.new");
    std::fs::write(&tmp, format!("{NEXT}\n")).unwrap();
    std::fs::rename(&tmp, &key).unwrap();
    let rotated = Instant::now();
    loop {
        ids.push(chat_ok(&bin).await);
        if values(&last(&p), "authorization") == [format!("Bearer {NEXT}")] {
            break;
        }
        assert!(rotated.elapsed() < LIMIT, "the new key was never used");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(bin.logged("credential file changed").len() == 1);

    // Gone: the last good key stays in use, with one warning.
    std::fs::remove_file(&key).unwrap();
    until("the warning", || {
        !bin.logged("credential file unusable").is_empty()
    })
    .await;
    ids.push(chat_ok(&bin).await);
    assert_eq!(
        values(&last(&p), "authorization"),
        [format!("Bearer {NEXT}")]
    );
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(
        bin.logged("credential file unusable").len(),
        1,
        "one warning per failing streak"
    );
    let warning = &bin.logged("credential file unusable")[0];
    assert!(
        warning["error"].as_str().unwrap().contains("cannot read"),
        "{warning}"
    );
    assert_nowhere(&bin, &[CANARY, NEXT], &ids, &[]).await;
}

#[test]
fn a_missing_key_file_or_variable_stops_llmtap_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("no-such-secret");
    let source = format!("file:{}", missing.display());
    let out = run_to_exit(
        LAUNCH.command(
            dir.path(),
            &[
                ("LLMTAP_UPSTREAM", "http://127.0.0.1:9"),
                ("LLMTAP_UPSTREAM_CREDENTIAL", &source),
            ],
        ),
        LIMIT,
    );
    assert_eq!(out.code, Some(2), "{}", out.output);
    let want = format!(
        "LLMTAP_UPSTREAM_CREDENTIAL: cannot read {}: No such file or directory",
        missing.display()
    );
    assert!(out.output.contains(&want), "{}", out.output);
    assert!(!out.output.contains("llmtap listening"), "{}", out.output);

    let out = run_to_exit(
        LAUNCH.command(
            dir.path(),
            &[
                ("LLMTAP_UPSTREAM", "http://127.0.0.1:9"),
                ("LLMTAP_UPSTREAM_CREDENTIAL", "env:NOT_SET_ANYWHERE"),
            ],
        ),
        LIMIT,
    );
    assert_eq!(out.code, Some(2), "{}", out.output);
    assert!(
        out.output.contains(
            "LLMTAP_UPSTREAM_CREDENTIAL: environment variable NOT_SET_ANYWHERE is not set"
        ),
        "{}",
        out.output
    );

    // A key pasted in place of a source is refused and not printed.
    let out = run_to_exit(
        LAUNCH.command(
            dir.path(),
            &[
                ("LLMTAP_UPSTREAM", "http://127.0.0.1:9"),
                ("LLMTAP_UPSTREAM_CREDENTIAL", CANARY),
            ],
        ),
        LIMIT,
    );
    assert_eq!(out.code, Some(2), "{}", out.output);
    assert!(out.output.contains("expected env:VAR"), "{}", out.output);
    assert!(!out.output.contains(CANARY), "{}", out.output);
}

/// A 401 to llmtap's key reaches the agent as the provider sent it, and is
/// logged (without the key); an unreachable upstream's 502 does not hold it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_key_and_a_dead_upstream_show_no_key() {
    let p = FakeProvider::start(|_| {
        Reply::json(401, r#"{"error":{"message":"Incorrect API key provided","type":"invalid_request_error","code":"invalid_api_key"}}"#)
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("TEAM_OPENAI_KEY", CANARY),
        ("LLMTAP_UPSTREAM_CREDENTIAL", "env:TEAM_OPENAI_KEY"),
    ];
    let bin = start(&p.url(), dir.path(), "", &env).await;
    let refused = call(&bin, CHAT, CHAT_BODY, &[]).await;
    assert_eq!(refused.status, 401);
    assert!(String::from_utf8_lossy(&refused.body).contains("invalid_api_key"));
    assert_eq!(p.seen().len(), 1, "not retried");
    until("the warning", || {
        !bin.logged("the upstream refused llmtap's credential")
            .is_empty()
    })
    .await;
    assert_nowhere(
        &bin,
        &[CANARY],
        &[refused.trace_id()],
        std::slice::from_ref(&refused.body),
    )
    .await;

    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let dead = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let dir2 = tempfile::tempdir().unwrap();
    let bin2 = start(&dead, dir2.path(), "", &env).await;
    let got = call(&bin2, CHAT, CHAT_BODY, &[]).await;
    assert_eq!(got.status, 502);
    assert_nowhere(&bin2, &[CANARY], &[got.trace_id()], &[got.body]).await;
}

/// The official OpenAI and Anthropic SDKs refuse to run without a key: an
/// agent gives them a placeholder, and `credential_override = true` puts
/// llmtap's key in its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_sdks_with_a_placeholder_key_get_llmtaps_key() {
    let python = tokio::task::spawn_blocking(mlflow::ensure_venv)
        .await
        .unwrap();
    let p = provider().await;
    let dir = tempfile::tempdir().unwrap();
    let config: &'static str = format!(
        "{OVERRIDE}{}credential_override = true\n",
        ANTHROPIC_ROUTE.replace("UPSTREAM", &p.url())
    )
    .leak();
    let env = [("TEAM_OPENAI_KEY", CANARY), ("ANTHROPIC_API_KEY", CANARY)];
    let bin = start(&p.url(), dir.path(), config, &env).await;
    let script = r#"
import os, sys, openai, anthropic
base = os.environ["TAP"]
openai.OpenAI(base_url=base + "/v1", api_key="placeholder").chat.completions.create(
    model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}])
anthropic.Anthropic(base_url=base + "/anthropic", api_key="placeholder").messages.create(
    model="claude-sonnet-4-5", max_tokens=16, messages=[{"role": "user", "content": "hi"}])
"#;
    let mut cmd = std::process::Command::new(python);
    cmd.arg("-c")
        .arg(script)
        .env("TAP", bin.base())
        .env_remove("OPENAI_API_KEY")
        .env_remove("ANTHROPIC_API_KEY");
    let out = tokio::task::spawn_blocking(move || cmd.output().unwrap())
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "the SDK calls failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let seen = p.seen();
    assert_eq!(seen.len(), 2, "one call each");
    let (chat, messages) = (&seen[0], &seen[1]);
    assert_eq!(chat.uri, CHAT);
    assert_eq!(values(chat, "authorization"), [format!("Bearer {CANARY}")]);
    assert_eq!(messages.uri, "/v1/messages");
    assert_eq!(values(messages, "x-api-key"), [CANARY]);
    assert!(values(messages, "authorization").is_empty());
    assert_eq!(
        values(messages, "anthropic-version").len(),
        1,
        "the SDK's own"
    );
    for s in &seen {
        let all = format!("{:?}", s.headers);
        assert!(!all.contains("placeholder"), "{all}");
    }
}

// ----- Databricks ---------------------------------------------------------------------------

/// A Databricks workspace serving a model: the workspace stand-in (host
/// metadata, OIDC, token grants and expiry, bearer rules) behind a front on
/// its own port that also answers `POST /serving-endpoints/{name}/invocations`
/// as model serving does — with the stand-in's own verdict on the bearer
/// token (an authenticated call to its API with the same header).
struct Workspace {
    dbx: databricks::Databricks,
    addr: std::net::SocketAddr,
    /// The `Authorization` of each serving call, and the status answered.
    served: std::sync::Arc<std::sync::Mutex<Vec<(String, u16)>>>,
}

impl Workspace {
    async fn start() -> Workspace {
        let dbx = databricks::Databricks::start().await;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let served = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let (behind, log) = (dbx.host(), served.clone());
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let (behind, log) = (behind.clone(), log.clone());
                let svc =
                    hyper::service::service_fn(move |req| front(req, behind.clone(), log.clone()));
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc),
                );
            }
        });
        Workspace { dbx, addr, served }
    }

    /// `http://127.0.0.1:PORT`: `DATABRICKS_HOST` and the upstream.
    fn host(&self) -> String {
        format!("http://{}", self.addr)
    }

    fn served(&self) -> Vec<(String, u16)> {
        self.served.lock().unwrap().clone()
    }
}

/// Serving calls answered here; everything else passed to the stand-in
/// (the `Host` kept, so the OIDC URLs it hands out point back here).
async fn front(
    req: http::Request<hyper::body::Incoming>,
    behind: String,
    served: std::sync::Arc<std::sync::Mutex<Vec<(String, u16)>>>,
) -> Result<http::Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let pass = |method: http::Method, pq: &str, auth: Option<&http::HeaderValue>, body: Bytes| {
        let mut out = http::Request::builder()
            .method(method)
            .uri(format!("{behind}{pq}"));
        for (k, v) in &parts.headers {
            // The body's length is this request's own (hyper sets it).
            let own = [http::header::AUTHORIZATION, http::header::CONTENT_LENGTH];
            if !own.contains(k) {
                out = out.header(k, v);
            }
        }
        if let Some(a) = auth {
            out = out.header(http::header::AUTHORIZATION, a);
        }
        tap::client().request(out.body(Full::new(body)).unwrap())
    };
    let auth = parts.headers.get(http::header::AUTHORIZATION);
    let (status, ctype, answer) = if parts.uri.path().starts_with("/serving-endpoints/") {
        let check = format!(
            "/api/2.0/mlflow/experiments/get?experiment_id={}",
            databricks::EXPERIMENT_ID
        );
        let verdict = pass(http::Method::GET, &check, auth, Bytes::new())
            .await
            .unwrap();
        let status = verdict.status().as_u16();
        let shown = auth.map_or(String::new(), |a| a.to_str().unwrap().to_string());
        served.lock().unwrap().push((shown, status));
        match status {
            200 => (
                200,
                "application/json",
                Bytes::from(tap::fixture("openai_chat/plain.json")),
            ),
            s => (
                s,
                "application/json",
                verdict.into_body().collect().await.unwrap().to_bytes(),
            ),
        }
    } else {
        let pq = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_string();
        let got = pass(parts.method.clone(), &pq, auth, body).await.unwrap();
        let status = got.status().as_u16();
        (
            status,
            "application/json",
            got.into_body().collect().await.unwrap().to_bytes(),
        )
    };
    let mut resp = http::Response::new(Full::new(answer));
    *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
    resp.headers_mut()
        .insert("content-type", http::HeaderValue::from_static(ctype));
    Ok(resp)
}

const INVOCATIONS: &str = "/serving-endpoints/my-llm/invocations";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_databricks_oauth_token_is_added_cached_and_refreshed_after_a_401() {
    let ws = Workspace::start().await;
    let dir = tempfile::tempdir().unwrap();
    let host = ws.host();
    let env = [
        ("DATABRICKS_HOST", host.as_str()),
        ("DATABRICKS_CLIENT_ID", databricks::CLIENT_ID),
        ("DATABRICKS_CLIENT_SECRET", databricks::CLIENT_SECRET),
        ("LLMTAP_UPSTREAM_CREDENTIAL", "databricks"),
    ];
    let bin = start(&host, dir.path(), "", &env).await;
    let (mut ids, mut bodies) = (Vec::new(), Vec::new());
    // No token to be had (the workspace is down): llmtap's own 502, saying why.
    ws.dbx.set_outage(true);
    let down = call(&bin, INVOCATIONS, CHAT_BODY, &[]).await;
    assert_eq!(down.status, 502);
    let message = String::from_utf8_lossy(&down.body).into_owned();
    assert!(
        message.contains("llmtap could not get the upstream credential (databricks)"),
        "{message}"
    );
    assert!(ws.served().is_empty(), "nothing sent without a credential");
    ids.push(down.trace_id());
    bodies.push(down.body);
    ws.dbx.set_outage(false);

    let mut invoke = async |want: u16| {
        let got = call(&bin, INVOCATIONS, CHAT_BODY, &[]).await;
        assert_eq!(got.status.as_u16(), want, "{:?}", got.body);
        ids.push(got.trace_id());
        bodies.push(got.body);
    };

    invoke(200).await;
    invoke(200).await;
    let served = ws.served();
    let first = served[0].0.clone();
    assert!(first.starts_with("Bearer ") && first.len() > 20, "{first}");
    assert_eq!(served[1], (first.clone(), 200), "the token is cached");
    assert_eq!(ws.dbx.token_grants(), 1);

    // The workspace stops accepting the token: the call is answered 401 as
    // the workspace said (not retried); the next one gets a new token.
    ws.dbx.expire_all_tokens();
    invoke(401).await;
    until("the 401 warning", || {
        !bin.logged("the upstream refused llmtap's credential")
            .is_empty()
    })
    .await;
    invoke(200).await;
    let served = ws.served();
    assert_eq!(served.len(), 4, "{served:?}");
    assert_eq!(served[2], (first.clone(), 401));
    let second = served[3].0.clone();
    assert_ne!(second, first);
    assert_eq!(served[3].1, 200);
    assert_eq!(ws.dbx.token_grants(), 2, "one refresh");

    let t1 = first.trim_start_matches("Bearer ").to_string();
    let t2 = second.trim_start_matches("Bearer ").to_string();
    let secrets = [databricks::CLIENT_SECRET, t1.as_str(), t2.as_str()];
    assert_nowhere(&bin, &secrets, &ids, &bodies).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_databricks_pat_goes_to_its_workspace_and_the_agents_token_wins() {
    let ws = Workspace::start().await;
    let dir = tempfile::tempdir().unwrap();
    let host = ws.host();
    let env = [
        ("DATABRICKS_HOST", host.as_str()),
        ("DATABRICKS_TOKEN", databricks::PAT),
        ("LLMTAP_UPSTREAM_CREDENTIAL", "databricks"),
    ];
    let bin = start(&host, dir.path(), "", &env).await;
    let got = call(&bin, INVOCATIONS, CHAT_BODY, &[]).await;
    assert_eq!(got.status, 200);
    let agent = call(
        &bin,
        INVOCATIONS,
        CHAT_BODY,
        &[("authorization", "Bearer dapi-agent")],
    )
    .await;
    assert_eq!(agent.status, 401, "the agent's own (bad) token was sent");
    let served = ws.served();
    assert_eq!(
        served,
        [
            (format!("Bearer {}", databricks::PAT), 200),
            ("Bearer dapi-agent".to_string(), 401)
        ]
    );
    assert_eq!(ws.dbx.token_grants(), 0);
    assert!(
        bin.logged("the upstream refused llmtap's credential")
            .is_empty(),
        "the 401 was for the agent's token"
    );
    let ids = [got.trace_id(), agent.trace_id()];
    assert_nowhere(&bin, &[databricks::PAT], &ids, &[got.body, agent.body]).await;
}

/// With a key to spend, listening beyond loopback is worth a warning; the
/// default loopback listener gets none.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_key_behind_a_listener_beyond_loopback_is_warned_about() {
    const WARNING: &str = "listens beyond loopback";
    let p = provider().await;
    let env = [
        ("TEAM_OPENAI_KEY", CANARY),
        ("LLMTAP_UPSTREAM_CREDENTIAL", "env:TEAM_OPENAI_KEY"),
    ];
    let dir = tempfile::tempdir().unwrap();
    let quiet = start(&p.url(), dir.path(), "", &env).await;
    assert!(quiet.logged(WARNING).is_empty());

    let dir = tempfile::tempdir().unwrap();
    let open = [env[0], env[1], ("LLMTAP_LISTEN", "0.0.0.0:0")];
    let loud = start(&p.url(), dir.path(), "", &open).await;
    let warned = loud.logged(WARNING);
    assert_eq!(warned.len(), 1, "{}", loud.log());
    assert_eq!(warned[0]["level"], "WARN");
    assert!(!loud.log().contains(CANARY));
}
