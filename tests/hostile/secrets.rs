//! Credentials in URLs, private files, the dead-letter cap.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn userinfo_in_an_upstream_is_refused_without_printing_it() {
    const PW: &str = "upstream-PW-SECRET-93ab";
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://user:{PW}@127.0.0.1:9");
    let mut cmd = command(dir.path(), &[]);
    cmd.args(["--upstream", &url]);
    let out = run_to_exit(cmd, Duration::from_secs(15));
    assert_eq!(
        out.code,
        Some(2),
        "--upstream with a password must be refused (exit 2):\n{}",
        out.output
    );
    assert!(
        !out.output.contains(PW),
        "the password was printed:\n{}",
        out.output
    );
    assert!(
        out.output.contains("upstream"),
        "the error names the setting:\n{}",
        out.output
    );

    // A route's upstream, from the config file.
    let config = dir.path().join("routes.toml");
    std::fs::write(
        &config,
        format!("[[routes]]\nprefix = \"/anthropic\"\nupstream = \"{url}\"\n"),
    )
    .unwrap();
    let cfg = config.display().to_string();
    let out = run_to_exit(
        command(
            dir.path(),
            &[
                ("LLMTAP_CONFIG", &cfg),
                ("LLMTAP_UPSTREAM", "http://127.0.0.1:9"),
            ],
        ),
        Duration::from_secs(15),
    );
    assert_eq!(
        out.code,
        Some(2),
        "a route upstream with a password must be refused:\n{}",
        out.output
    );
    assert!(
        !out.output.contains(PW),
        "the password was printed:\n{}",
        out.output
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn mlflow_userinfo_becomes_basic_auth_and_is_never_printed() {
    const PW: &str = "mlflow-PW-SECRET-2c7d";
    let mlflow = mlflow_stand_in(200).await;
    let provider = provider(|_, _| None).await;
    let dir = tempfile::tempdir().unwrap();
    let uri = format!("http://alice:{PW}@{}", mlflow.addr);
    let env = [
        ("MLFLOW_TRACKING_URI", uri.as_str()),
        ("MLFLOW_EXPERIMENT_ID", "1"),
        ("RUST_LOG", "debug"),
    ];
    let (mut bin, idle) = start(&provider.url(), dir.path(), &env).await;
    assert_serves(&mut bin, "with MLflow userinfo", SERVE_LIMIT).await;
    let exported = || {
        mlflow
            .seen()
            .into_iter()
            .find(|s| s.uri.ends_with("/v1/traces"))
    };
    wait_until("an export to the MLflow stand-in", SERVE_LIMIT, || {
        exported().is_some()
    })
    .await;
    use base64::Engine;
    let want = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("alice:{PW}"))
    );
    assert_eq!(
        header(&exported().unwrap(), "authorization"),
        Some(want.as_str())
    );
    let base = format!("{}", mlflow.addr);
    for s in mlflow.seen() {
        let host = header(&s, "host").unwrap_or("");
        assert_eq!(host, base, "the MLflow request's Host carries no userinfo");
    }
    finish(
        &mut bin,
        idle,
        Limits::new(16),
        &[PW],
        "with MLflow userinfo",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn query_secrets_reach_the_provider_and_nothing_else() {
    const Q: &str = "query-KEY-SECRET-e41f";
    let provider = provider(|_, _| None).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut bin, idle) = start(&provider.url(), dir.path(), &[("RUST_LOG", "debug")]).await;
    let url = bin.url(&format!("{CHAT}?key={Q}&api-version=2024-10-21"));
    let got = kit::post(&url, kit::chat_body(false), &[], SERVE_LIMIT).await;
    assert_eq!(got.status, 200);
    let id = got.headers["x-llmtap-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    assert!(
        provider
            .seen()
            .iter()
            .any(|s| s.uri.contains(&format!("key={Q}"))),
        "the query goes upstream untouched"
    );
    kit::assert_traced(&bin, &[id], SERVE_LIMIT, "the call with a query secret").await;

    // llmtap's own 502 names the upstream without query or userinfo.
    // Port 1: refused, and never handed out by bind(0) — a port released by
    // this test could be taken by a concurrent test's listener that never
    // answers (a full CI run once saw no answer within 20 s here).
    let dead = "http://127.0.0.1:1".to_string();
    let dir2 = tempfile::tempdir().unwrap();
    let (mut dead_bin, _) = start(&dead, dir2.path(), &[("RUST_LOG", "debug")]).await;
    let got = kit::post(
        &dead_bin.url(&format!("{CHAT}?key={Q}")),
        kit::chat_body(false),
        &[],
        SERVE_LIMIT,
    )
    .await;
    assert_eq!(got.status, 502);
    assert!(
        !kit::contains(&got.body, Q.as_bytes()),
        "a 502 body printed the query secret"
    );
    assert!(dead_bin.alive());
    assert_no_secret(&dead_bin, &[Q], "502 with a query secret").await;
    finish(
        &mut bin,
        idle,
        Limits::new(16),
        &[Q],
        "after a call with a query secret",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spool_journal_trace_and_dead_letter_files_are_private() {
    let provider = provider(|_, _| None).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut bin, idle) = start(&provider.url(), dir.path(), &[]).await;
    finish(&mut bin, idle, Limits::new(16), &[], "file sink").await;
    assert_private(&dir.path().join("spool"));
    assert_private(&dir.path().join("traces"));

    // A sink that refuses every batch: they go to the dead-letter file.
    let mlflow = mlflow_stand_in(400).await;
    let dir2 = tempfile::tempdir().unwrap();
    let uri = mlflow.url();
    let env = [
        ("MLFLOW_TRACKING_URI", uri.as_str()),
        ("MLFLOW_EXPERIMENT_ID", "1"),
    ];
    let (mut bin2, idle2) = start(&provider.url(), dir2.path(), &env).await;
    assert_serves(&mut bin2, "refusing sink", SERVE_LIMIT).await;
    let dead = dir2.path().join("dead-letter");
    wait_until("a dead-letter file", SERVE_LIMIT, || {
        !tap::files_under(&dead).is_empty()
    })
    .await;
    assert_private(&dead);
    assert_private(&dir2.path().join("spool"));
    assert_rss_bounded(&bin2, idle2, Limits::new(16), "refusing sink");
    assert_no_secret(&bin2, &[], "refusing sink").await;
}

/// Settings of the dead-letter test: one span per batch, dead-letter files
/// of 64 KiB, two kept besides the one being written.
const DEAD_LETTER_CONFIG: &str = r#"
[server]
shutdown_grace = "5s"
[export]
batch_interval = "20ms"
batch_max_spans = 1
retry_initial = "50ms"
retry_max = "1s"
dead_letter_max_file_bytes = "64KiB"
dead_letter_max_files = 2
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dead_letter_file_is_capped_and_rotated() {
    const CALLS: usize = 24;
    const FILE_CAP: u64 = 64 * 1024;
    let mlflow = mlflow_stand_in(400).await;
    let provider = provider(|_, _| None).await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("dead-letter.toml");
    std::fs::write(&config, DEAD_LETTER_CONFIG).unwrap();
    let (cfg, uri) = (config.display().to_string(), mlflow.url());
    let env = [
        ("LLMTAP_CONFIG", cfg.as_str()),
        ("MLFLOW_TRACKING_URI", uri.as_str()),
        ("MLFLOW_EXPERIMENT_ID", "1"),
    ];
    let (mut bin, idle) = start(&provider.url(), dir.path(), &env).await;
    let content = "x".repeat(40_000);
    for _ in 0..CALLS {
        let body =
            serde_json::json!({"model": "m", "messages": [{"role": "user", "content": content}]});
        let got = kit::post(
            &bin.url(CHAT),
            serde_json::to_vec(&body).unwrap(),
            &[],
            SERVE_LIMIT,
        )
        .await;
        assert_eq!(got.status, 200);
    }
    let refused = || {
        mlflow
            .seen()
            .iter()
            .filter(|s| s.uri.ends_with("/v1/traces"))
            .count()
    };
    wait_until("every batch refused by the sink", SERVE_LIMIT, || {
        refused() >= CALLS
    })
    .await;
    let dead = dir.path().join("dead-letter");
    let sizes = || -> Vec<u64> {
        tap::files_under(&dead)
            .iter()
            .map(|f| std::fs::metadata(f).map_or(0, |m| m.len()))
            .collect()
    };
    // Writes happen off the request path: wait until the files stop changing.
    let (mut last, start) = (Vec::new(), Instant::now());
    loop {
        let now = sizes();
        if !now.is_empty() && now == last {
            break;
        }
        assert!(
            start.elapsed() < SERVE_LIMIT,
            "the dead-letter files never settled"
        );
        last = now;
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let sizes = sizes();
    eprintln!("dead-letter files after {CALLS} refused ~40 KB spans: {sizes:?}");
    assert!(
        sizes.len() <= 3,
        "at most 2 rotated files and the current one: {sizes:?}"
    );
    for s in &sizes {
        assert!(
            *s <= 2 * FILE_CAP,
            "a dead-letter file of {s} B with a cap of {FILE_CAP} B"
        );
    }
    assert_private(&dead);
    finish(
        &mut bin,
        idle,
        Limits::new(16),
        &[],
        "after a refusing sink",
    )
    .await;
}

/// An upstream credential llmtap adds itself (`credential = "file:..."`,
/// overriding the agent's): it reaches the provider in place of the agent's
/// keys, and no log line (debug included), trace, spool or journal file,
/// dead letter or `/metrics` holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_injected_credential_reaches_the_provider_and_nothing_else() {
    const KEY: &str = "injected-KEY-SECRET-0c4e9a";
    let provider = provider(|_, _| None).await;
    let dir = tempfile::tempdir().unwrap();
    let secrets = tempfile::tempdir().unwrap();
    let file = secrets.path().join("openai");
    std::fs::write(&file, format!("{KEY}\n")).unwrap();
    let source = format!("file:{}", file.display());
    let env = [
        ("LLMTAP_UPSTREAM_CREDENTIAL", source.as_str()),
        ("LLMTAP_UPSTREAM_CREDENTIAL_OVERRIDE", "true"),
        ("RUST_LOG", "debug"),
    ];
    let (mut bin, idle) = start(&provider.url(), dir.path(), &env).await;
    finish(
        &mut bin,
        idle,
        Limits::new(16),
        &[KEY],
        "with an injected credential",
    )
    .await;
    let seen = provider.seen();
    assert!(!seen.is_empty());
    let want = format!("Bearer {KEY}");
    for s in &seen {
        assert_eq!(header(s, "authorization"), Some(want.as_str()));
        assert_eq!(header(s, "api-key"), None, "the agent's key was replaced");
    }
}
