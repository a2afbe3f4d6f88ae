//! Configuration maxima, the cached readiness probe, the spool lock.

use super::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absurd_capture_cap_is_refused_naming_the_maximum() {
    let dir = tempfile::tempdir().unwrap();
    let cmd = command(
        dir.path(),
        &[
            ("LLMTAP_MAX_CAPTURE_BYTES", "100GiB"),
            ("LLMTAP_UPSTREAM", "http://127.0.0.1:9"),
        ],
    );
    let out = run_to_exit(cmd, Duration::from_secs(15));
    assert_eq!(
        out.code,
        Some(2),
        "a 100 GiB capture cap must be refused:\n{}",
        out.output
    );
    // The setting as the operator gave it: here the variable.
    assert!(
        out.output.contains("LLMTAP_MAX_CAPTURE_BYTES"),
        "the error names the setting:\n{}",
        out.output
    );
    // The maximum is a size other than the one refused: "1GiB", "1073741824 bytes".
    let sizes = sizes_in(&out.output);
    let says_max = sizes.iter().any(|s| *s != 100.0 * MIB as f64 * 1024.0);
    assert!(
        says_max,
        "the error says what the maximum is:\n{}",
        out.output
    );
}

/// The byte sizes written in `text` ("10MiB", "1 GiB", "1073741824 bytes"),
/// in bytes.
fn sizes_in(text: &str) -> Vec<f64> {
    let words: Vec<&str> = text
        .split(|c: char| c.is_whitespace() || "\"',;:()=<>".contains(c))
        .filter(|w| !w.is_empty())
        .collect();
    let unit = |u: &str| -> Option<f64> {
        let k = match u {
            "B" | "bytes" => 1.0,
            "KiB" => 1024.0,
            "MiB" => 1024.0 * 1024.0,
            "GiB" => 1024.0 * 1024.0 * 1024.0,
            "TiB" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
            "KB" => 1e3,
            "MB" => 1e6,
            "GB" => 1e9,
            "TB" => 1e12,
            _ => return None,
        };
        Some(k)
    };
    let mut out = Vec::new();
    for (i, w) in words.iter().enumerate() {
        let digits = w.trim_end_matches(|c: char| c.is_ascii_alphabetic());
        let Ok(n) = digits.parse::<f64>() else {
            continue;
        };
        let suffix = &w[digits.len()..];
        let k = match suffix {
            "" => words.get(i + 1).and_then(|u| unit(u)),
            s => unit(s),
        };
        out.extend(k.map(|k| n * k));
    }
    out
}

#[test]
fn sizes_are_read_from_error_messages() {
    let gib = 1024.0 * 1024.0 * 1024.0;
    assert_eq!(
        sizes_in("llmtap: capture.max_body_bytes: \"100GiB\" is over the maximum (1 GiB, 1073741824 bytes)"),
        vec![100.0 * gib, gib, gib]
    );
    assert!(sizes_in("capture.max_body_bytes: too large").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_hits_are_answered_from_a_cached_probe() {
    let mlflow = mlflow_stand_in(200).await;
    let provider = provider(|_, _| None).await;
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("MLFLOW_TRACKING_URI", mlflow.url()),
        ("MLFLOW_EXPERIMENT_ID", "1".into()),
    ];
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
    let (mut bin, idle) = start(&provider.url(), dir.path(), &env).await;
    let probes = || {
        mlflow
            .seen()
            .iter()
            .filter(|s| s.uri.ends_with("/health"))
            .count()
    };
    assert_eq!(
        kit::get_status(&bin.admin_url("/readyz"), SERVE_LIMIT).await,
        200
    );
    let (before, start) = (probes(), Instant::now());
    for _ in 0..20 {
        let mut round = tokio::task::JoinSet::new();
        for _ in 0..10 {
            let url = bin.admin_url("/readyz");
            round.spawn(async move { kit::get_status(&url, SERVE_LIMIT).await });
        }
        while let Some(s) = round.join_next().await {
            assert_eq!(s.unwrap(), 200);
        }
    }
    let (made, secs) = (probes() - before, start.elapsed().as_secs_f64());
    eprintln!("200 /readyz hits in {secs:.2} s made {made} MLflow probes");
    assert!(
        made as f64 <= secs.ceil() + 2.0,
        "200 /readyz hits in {secs:.2} s made {made} MLflow /health probes: the probe is not cached"
    );
    finish(
        &mut bin,
        idle,
        Limits::new(16),
        &[],
        "after a /readyz flood",
    )
    .await;
}

/// Whether `text` names a lock or a spool already in use.
fn says_in_use(text: &str) -> bool {
    let t = text.to_ascii_lowercase();
    ["lock", "in use", "another"].iter().any(|w| t.contains(w))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_process_per_spool_dir_and_replay_refuses_a_live_spool() {
    let provider = provider(|_, _| None).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut bin, idle) = start(&provider.url(), dir.path(), &[]).await;
    let spool = dir.path().join("spool").display().to_string();

    let dir2 = tempfile::tempdir().unwrap();
    match HOSTILE
        .try_start(
            &provider.url(),
            dir2.path(),
            &[("LLMTAP_SPOOL_DIR", &spool)],
        )
        .await
    {
        Err(out) => {
            assert!(
                out.code.is_some_and(|c| c != 0),
                "the second process: {out:?}"
            );
            assert!(
                says_in_use(&out.output),
                "the refusal says the spool is in use:\n{}",
                out.output
            );
        }
        Ok(second) => {
            let loud = second
                .log()
                .lines()
                .any(|l| (l.contains("\"WARN\"") || l.contains("\"ERROR\"")) && says_in_use(l));
            assert!(
                loud,
                "a second process on a live spool dir started without saying so:\n{}",
                second.log()
            );
        }
    }

    let mut cmd = command(&dir2.path().join("replay"), &[]);
    cmd.args(["replay", &spool]);
    let out = run_to_exit(cmd, Duration::from_secs(20));
    assert!(
        out.code.is_some_and(|c| c != 0),
        "replay on a live spool must refuse: {out:?}"
    );
    assert!(says_in_use(&out.output), "replay says why:\n{}", out.output);
    finish(
        &mut bin,
        idle,
        Limits::new(16),
        &[],
        "beside a second process and a replay",
    )
    .await;
}
