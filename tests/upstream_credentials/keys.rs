//! `env:` and `file:` keys: added, kept, overridden, by provider, rotated,
//! refused at start; the official SDKs; a 401 and a dead upstream.

use super::*;

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

    let metrics = tap::get(&bin.admin_url("/metrics")).await.body;
    let metrics = String::from_utf8_lossy(&metrics);
    for line in [
        "llmtap_upstream_credential_total{outcome=\"added\"} 2",
        "llmtap_upstream_credential_total{outcome=\"agent\"} 1",
    ] {
        assert!(metrics.contains(line), "no {line:?} in the metrics");
    }

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
