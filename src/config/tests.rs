//! Config layering and validation.

use super::*;
pub(super) use crate::sinks::file::FileSinkConfig;
pub(super) use crate::sinks::mlflow::config::{ExperimentRef, MlflowAuth, MlflowConfig};

/// The one sink a configuration has, the way these tests compare it.
#[derive(Debug, PartialEq)]
pub(super) enum SinkConfig {
    Disabled,
    Mlflow(MlflowConfig),
    File(FileSinkConfig),
}

impl Config {
    /// The configuration's only sink (these tests configure at most one).
    pub(super) fn sink(&self) -> SinkConfig {
        match self.sinks.as_slice() {
            [] => SinkConfig::Disabled,
            [e] => match &e.spec {
                SinkSpec::Mlflow(m) => SinkConfig::Mlflow(m.clone()),
                SinkSpec::File(f) => SinkConfig::File(f.clone()),
                other => panic!("unexpected sink {other:?}"),
            },
            more => panic!("{} sinks configured", more.len()),
        }
    }
}

/// An environment of `pairs` (shared by the config tests).
pub(super) fn env(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn defaults_without_anything() {
    let c = resolve(&Flags::default(), &Env::new(), None).unwrap();
    assert_eq!(c.listen.to_string(), DEFAULT_LISTEN);
    assert_eq!(c.admin_listen.to_string(), DEFAULT_ADMIN_LISTEN);
    assert_eq!(c.upstream.to_string(), "https://api.openai.com/");
    assert_eq!(c.max_capture_bytes, 10 << 20);
    assert_eq!(c.request_timeout, None);
    assert!(matches!(c.sink(), SinkConfig::File(ref f) if f.dir == Path::new("llmtap-traces")));
}

use std::path::Path;

#[test]
fn flag_beats_env_beats_file() {
    let file = "[server]\nlisten = \"127.0.0.1:1001\"\nadmin_listen = \"127.0.0.1:1002\"\n[upstream]\nurl = \"http://file:1\"\n";
    let e = env(&[
        ("LLMTAP_LISTEN", "127.0.0.1:2001"),
        ("LLMTAP_UPSTREAM", "http://env:2"),
    ]);
    let flags = Flags {
        listen: Some("127.0.0.1:3001".into()),
        ..Flags::default()
    };
    let c = resolve(&flags, &e, Some(file)).unwrap();
    assert_eq!(c.listen.port(), 3001, "flag wins");
    assert_eq!(
        c.upstream.authority().unwrap().as_str(),
        "env:2",
        "env beats file"
    );
    assert_eq!(c.admin_listen.port(), 1002, "file beats default");
}

#[test]
fn every_bad_field_is_named() {
    let file = r#"
[server]
listen = "nope"
bogus = 1
[upstream]
url = "ftp://x"
idle_timeout = "5 parsecs"
[capture]
max_body_bytes = "lots"
[nonsense]
"#;
    let err = resolve(&Flags::default(), &Env::new(), Some(file)).unwrap_err();
    let text = err.to_string();
    for needle in [
        "server.bogus",
        "listen",
        "upstream",
        "upstream.idle_timeout",
        "capture.max_body_bytes",
        "[nonsense]",
    ] {
        assert!(text.contains(needle), "{needle} missing from:\n{text}");
    }
    assert!(err.0.len() >= 6, "{:?}", err.0);
}

#[test]
fn malformed_toml_is_reported() {
    let err = resolve(&Flags::default(), &Env::new(), Some("[server\nlisten=")).unwrap_err();
    assert!(err.to_string().contains("config file"));
}

#[test]
fn mlflow_sink_from_env_with_auth() {
    let e = env(&[
        ("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000/"),
        ("MLFLOW_EXPERIMENT_NAME", "agents"),
        ("MLFLOW_TRACKING_TOKEN", "s3cret"),
    ]);
    let c = resolve(&Flags::default(), &e, None).unwrap();
    let SinkConfig::Mlflow(m) = c.sink() else {
        panic!("expected mlflow sink")
    };
    assert_eq!(m.tracking_uri, "http://127.0.0.1:5000");
    assert_eq!(m.experiment, ExperimentRef::Name("agents".into()));
    assert_eq!(m.auth, MlflowAuth::Bearer("s3cret".into()));
    assert!(
        !format!("{:?}", m.auth).contains("s3cret"),
        "debug output redacts"
    );
}

#[test]
fn experiment_id_beats_name_and_basic_auth() {
    let e = env(&[
        ("MLFLOW_TRACKING_URI", "https://mlflow.example"),
        ("MLFLOW_EXPERIMENT_ID", "7"),
        ("MLFLOW_EXPERIMENT_NAME", "ignored"),
        ("MLFLOW_TRACKING_USERNAME", "u"),
        ("MLFLOW_TRACKING_PASSWORD", "p"),
    ]);
    let SinkConfig::Mlflow(m) = resolve(&Flags::default(), &e, None).unwrap().sink() else {
        panic!()
    };
    assert_eq!(m.experiment, ExperimentRef::Id("7".into()));
    assert_eq!(
        m.auth,
        MlflowAuth::Basic {
            user: "u".into(),
            password: "p".into()
        }
    );
}

#[test]
fn tracing_can_be_disabled() {
    let e = env(&[
        ("ENABLE_MLFLOW_TRACING", "false"),
        ("MLFLOW_TRACKING_URI", "http://x"),
    ]);
    let c = resolve(&Flags::default(), &e, None).unwrap();
    assert_eq!(c.sink(), SinkConfig::Disabled);
    let bad = resolve(
        &Flags::default(),
        &env(&[("ENABLE_MLFLOW_TRACING", "maybe")]),
        None,
    );
    assert!(bad
        .unwrap_err()
        .to_string()
        .contains("ENABLE_MLFLOW_TRACING"));
}

#[test]
fn durations_and_sizes() {
    assert_eq!(
        parse_duration_opt("250ms").unwrap(),
        Some(Duration::from_millis(250))
    );
    assert_eq!(
        parse_duration_opt("2m").unwrap(),
        Some(Duration::from_secs(120))
    );
    assert_eq!(parse_duration_opt("none").unwrap(), None);
    assert!(parse_duration_opt("3 fortnights").is_err());
    assert_eq!(parse_bytes("10MiB").unwrap(), 10 << 20);
    assert_eq!(parse_bytes("1024").unwrap(), 1024);
    assert!(parse_bytes("-1").is_err());
}

#[test]
fn example_file_is_valid_and_complete() {
    let text = include_str!("../../config/llmtap.example.toml");
    let c = resolve(&Flags::default(), &Env::new(), Some(text));
    assert!(c.is_ok(), "{:?}", c.err());
    for (table, keys) in KNOWN {
        for key in *keys {
            let needle = format!("{key} =");
            assert!(
                text.contains(&format!("[{table}]")) && text.contains(&needle),
                "example config does not document {table}.{key}"
            );
        }
    }
}

/// A file under a fresh temp dir holding `text`.
fn temp_file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ca.pem");
    std::fs::write(&path, text).unwrap();
    (dir, path.display().to_string())
}

fn ca_pem() -> String {
    rcgen::generate_simple_self_signed(vec!["localhost".to_string()])
        .unwrap()
        .cert
        .pem()
}

#[test]
fn ca_files_are_read_from_env_or_file() {
    let (_d, path) = temp_file(&format!("{}{}", ca_pem(), ca_pem()));
    let c = resolve(
        &Flags::default(),
        &env(&[("LLMTAP_UPSTREAM_CA_FILE", &path)]),
        None,
    )
    .unwrap();
    assert_eq!(c.upstream_ca.certs.len(), 2);
    assert_eq!(c.upstream_ca.path.as_deref(), Some(Path::new(&path)));
    assert_eq!(
        format!("{:?}", c.upstream_ca),
        format!("{path} (2 certificates)")
    );

    let file = format!(
        "[upstream]\nca_file = {path:?}\n[mlflow]\ntracking_uri = \"https://mlflow.internal\"\ntracking_server_cert_path = {path:?}\n"
    );
    let c = resolve(&Flags::default(), &Env::new(), Some(&file)).unwrap();
    assert_eq!(c.upstream_ca.certs.len(), 2);
    let SinkConfig::Mlflow(m) = c.sink() else {
        panic!("expected mlflow sink")
    };
    assert_eq!(m.server_ca.certs.len(), 2);

    let d = resolve(&Flags::default(), &Env::new(), None).unwrap();
    assert_eq!(d.upstream_ca, ExtraRoots::default(), "none by default");
}

#[test]
fn bad_ca_files_name_the_setting_and_the_path() {
    let (_d, not_pem) = temp_file("just some text\n");
    let (_k, key_only) = temp_file(&rcgen::KeyPair::generate().unwrap().serialize_pem());
    let (_g, garbage) = temp_file("-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n");
    let missing = "/nonexistent/llmtap-ca.pem";
    let error = |e: Env, file: Option<&str>| {
        resolve(&Flags::default(), &e, file)
            .unwrap_err()
            .to_string()
    };
    for (path, why) in [
        (missing, "cannot read"),
        (not_pem.as_str(), "no PEM certificate"),
        (key_only.as_str(), "no PEM certificate"),
        (garbage.as_str(), "certificate 1"),
    ] {
        let mlflow = env(&[
            ("MLFLOW_TRACKING_URI", "https://mlflow.internal"),
            ("MLFLOW_TRACKING_SERVER_CERT_PATH", path),
        ]);
        for (err, setting) in [
            (
                error(env(&[("LLMTAP_UPSTREAM_CA_FILE", path)]), None),
                "LLMTAP_UPSTREAM_CA_FILE: ",
            ),
            (
                error(
                    Env::new(),
                    Some(&format!("[upstream]\nca_file = {path:?}\n")),
                ),
                "upstream.ca_file: ",
            ),
            (error(mlflow, None), "MLFLOW_TRACKING_SERVER_CERT_PATH: "),
        ] {
            assert!(
                err.contains(setting) && err.contains(path) && err.contains(why),
                "{setting} {why}: {err}"
            );
        }
    }
    assert!(error(Env::new(), Some("[upstream]\nca_file = 1\n"))
        .contains("upstream.ca_file: expected a string"));
}

#[test]
fn mlflow_cert_path_is_read_only_for_the_mlflow_sink() {
    // Without a tracking server the variable (perhaps meant for another tool)
    // is not llmtap's business.
    let e = env(&[("MLFLOW_TRACKING_SERVER_CERT_PATH", "/nonexistent/ca.pem")]);
    let c = resolve(&Flags::default(), &e, None).unwrap();
    assert!(matches!(c.sink(), SinkConfig::File(_)));
}

#[test]
fn spool_settings_defaults_env_and_errors() {
    let c = resolve(&Flags::default(), &Env::new(), None).unwrap();
    let s = c.spool.expect("on by default");
    assert_eq!(s.dir, Path::new("llmtap-spool"));
    assert_eq!(s.fsync_interval, Some(Duration::from_millis(100)));
    assert_eq!(s.max_bytes, 1 << 30);
    assert_eq!(s.max_hold, Duration::from_secs(2));

    let e = env(&[
        ("LLMTAP_SPOOL_DIR", "/var/lib/llmtap/spool"),
        ("LLMTAP_SPOOL_FSYNC", "always"),
        ("LLMTAP_SPOOL_MAX_BYTES", "64MiB"),
        ("LLMTAP_SPOOL_MAX_HOLD", "500ms"),
    ]);
    let s = resolve(&Flags::default(), &e, None).unwrap().spool.unwrap();
    assert_eq!(s.dir, Path::new("/var/lib/llmtap/spool"));
    assert_eq!(s.fsync_interval, None, "always");
    assert_eq!(s.max_bytes, 64 << 20);
    assert_eq!(s.max_hold, Duration::from_millis(500));

    let file = "[spool]\nmax_hold = \"1s\"\nfsync = \"250ms\"\n";
    let s = resolve(&Flags::default(), &Env::new(), Some(file))
        .unwrap()
        .spool
        .unwrap();
    assert_eq!(s.max_hold, Duration::from_secs(1));
    assert_eq!(s.fsync_interval, Some(Duration::from_millis(250)));

    let off = env(&[("LLMTAP_SPOOL", "false")]);
    assert!(resolve(&Flags::default(), &off, None)
        .unwrap()
        .spool
        .is_none());

    let bad = env(&[
        ("LLMTAP_SPOOL_MAX_HOLD", "soon"),
        ("LLMTAP_SPOOL_FSYNC", "sometimes"),
    ]);
    let err = resolve(&Flags::default(), &bad, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("LLMTAP_SPOOL_MAX_HOLD"), "{err}");
    assert!(err.contains("LLMTAP_SPOOL_FSYNC"), "{err}");
}

/// Every numeric setting, a value just past its maximum, and the maximum as
/// the error shows it.
const PAST_MAX: &[(&str, &str, &str, &str)] = &[
    ("server", "shutdown_grace", "61m", "1h"),
    ("server", "max_connections", "1000001", "1000000"),
    ("server", "admin_max_connections", "1000001", "1000000"),
    ("server", "header_read_timeout", "61m", "1h"),
    ("server", "keepalive_timeout", "61m", "1h"),
    ("server", "client_write_timeout", "61m", "1h"),
    ("upstream", "connect_timeout", "11m", "10m"),
    ("upstream", "idle_timeout", "25h", "24h"),
    ("upstream", "request_timeout", "25h", "24h"),
    ("capture", "max_body_bytes", "100GiB", "1GiB"),
    ("capture", "max_inflight_bytes", "65GiB", "64GiB"),
    ("file_sink", "max_file_bytes", "17GiB", "16GiB"),
    ("file_sink", "max_files", "10001", "10000"),
    ("spool", "fsync", "11m", "10m"),
    ("spool", "max_bytes", "65TiB", "64TiB"),
    ("spool", "segment_bytes", "2GiB", "1GiB"),
    ("spool", "max_hold", "61s", "1m"),
    ("export", "queue_capacity", "1000001", "1000000"),
    ("export", "queue_max_bytes", "17GiB", "16GiB"),
    ("export", "batch_max_spans", "100001", "100000"),
    ("export", "batch_max_bytes", "2GiB", "1GiB"),
    ("export", "batch_interval", "2h", "1h"),
    ("export", "retry_initial", "2h", "1h"),
    ("export", "retry_max", "2h", "1h"),
    ("export", "max_attempts", "1001", "1000"),
    ("export", "timeout", "2h", "1h"),
    ("export", "parse_workers", "65", "64"),
    ("export", "max_traces_per_second", "2000000", "1000000"),
    ("export", "dead_letter_max_file_bytes", "17GiB", "16GiB"),
    ("export", "dead_letter_max_files", "10001", "10000"),
    ("sessions", "ttl", "721h", "720h"),
    ("sessions", "max_histories", "1000001", "1000000"),
    ("sessions", "max_responses", "1000001", "1000000"),
    ("feedback", "max_pending", "1000001", "1000000"),
    ("feedback", "max_pending_bytes", "5GiB", "4GiB"),
    ("feedback", "max_wait", "169h", "168h"),
];

#[test]
fn a_value_past_its_maximum_names_the_field_and_the_maximum() {
    for (table, key, value, max) in PAST_MAX {
        let file = format!("[{table}]\n{key} = \"{value}\"\n");
        let err = resolve(&Flags::default(), &Env::new(), Some(&file))
            .expect_err(&format!("{table}.{key} = {value} accepted"))
            .to_string();
        assert!(
            err.contains(&format!(
                "{table}.{key}: \"{value}\" is above the maximum of {max}"
            )),
            "{err}"
        );
    }
    // From the environment, the variable is named.
    let e = env(&[("LLMTAP_MAX_CAPTURE_BYTES", "100GiB")]);
    let err = resolve(&Flags::default(), &e, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains(
            "LLMTAP_MAX_CAPTURE_BYTES=\"100GiB\": \"100GiB\" is above the maximum of 1GiB"
        ),
        "{err}"
    );
}

#[test]
fn every_numeric_setting_has_a_maximum_and_every_default_is_within_it() {
    // The example file states every default; it passes the bounded parsers
    // and gives the same settings as no file at all.
    let text = include_str!("../../config/llmtap.example.toml");
    let example = resolve(&Flags::default(), &Env::new(), Some(text)).unwrap();
    let defaults = resolve(&Flags::default(), &Env::new(), None).unwrap();
    assert_eq!(example.export, defaults.export);
    assert_eq!(example.spool, defaults.spool);
    assert_eq!(example.max_capture_bytes, defaults.max_capture_bytes);
    assert_eq!(
        (
            example.connect_timeout,
            example.idle_timeout,
            example.request_timeout
        ),
        (
            defaults.connect_timeout,
            defaults.idle_timeout,
            defaults.request_timeout
        )
    );
    assert_eq!(example.shutdown_grace, defaults.shutdown_grace);
    assert_eq!(example.sink(), defaults.sink());
    assert_eq!(example.feedback, defaults.feedback);
    assert_eq!(example.privacy, defaults.privacy);
    // Every numeric key of the file is in the table above.
    let numeric = text.lines().filter_map(|line| {
        let (key, value) = line.split_once(" = ").filter(|_| !line.starts_with('#'))?;
        let value = value.trim_matches('"');
        let first = value.chars().next()?;
        (first.is_ascii_digit() && !value.contains(':')).then_some(key.trim())
    });
    // ready_threshold and sample are fractions, 0 to 1, checked by their own parsers.
    for key in numeric.filter(|k| *k != "ready_threshold" && *k != "sample") {
        assert!(
            PAST_MAX.iter().any(|(_, k, _, _)| *k == key),
            "{key} has no maximum in PAST_MAX"
        );
    }
}

#[test]
fn inflight_capture_budget_defaults_env_file_and_errors() {
    let c = resolve(&Flags::default(), &Env::new(), None).unwrap();
    assert_eq!(c.max_inflight_capture_bytes, 256 << 20);
    let e = env(&[("LLMTAP_MAX_INFLIGHT_CAPTURE_BYTES", "64MiB")]);
    let c = resolve(&Flags::default(), &e, None).unwrap();
    assert_eq!(c.max_inflight_capture_bytes, 64 << 20);
    let file = "[capture]\nmax_body_bytes = \"1MiB\"\nmax_inflight_bytes = \"8MiB\"\n";
    let c = resolve(&Flags::default(), &Env::new(), Some(file)).unwrap();
    assert_eq!(c.max_inflight_capture_bytes, 8 << 20);

    let small = "[capture]\nmax_body_bytes = \"2MiB\"\nmax_inflight_bytes = \"1MiB\"\n";
    let err = resolve(&Flags::default(), &Env::new(), Some(small))
        .unwrap_err()
        .to_string();
    assert!(err.contains("capture.max_inflight_bytes"), "{err}");
    let bad = env(&[("LLMTAP_MAX_INFLIGHT_CAPTURE_BYTES", "plenty")]);
    let err = resolve(&Flags::default(), &bad, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("LLMTAP_MAX_INFLIGHT_CAPTURE_BYTES"), "{err}");
}

#[test]
fn the_access_log_is_off_by_default_and_set_by_file_or_env() {
    let c = resolve(&Flags::default(), &Env::new(), None).unwrap();
    assert!(!c.access_log);
    let file = "[server]\naccess_log = true\n";
    assert!(
        resolve(&Flags::default(), &Env::new(), Some(file))
            .unwrap()
            .access_log
    );
    let e = env(&[("LLMTAP_ACCESS_LOG", "false")]);
    assert!(
        !resolve(&Flags::default(), &e, Some(file))
            .unwrap()
            .access_log
    );
    let bad = env(&[("LLMTAP_ACCESS_LOG", "loud")]);
    let err = resolve(&Flags::default(), &bad, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("LLMTAP_ACCESS_LOG"), "{err}");
}

#[test]
fn chunk_events_are_off_by_default_and_set_by_file_or_env() {
    let c = resolve(&Flags::default(), &Env::new(), None).unwrap();
    assert!(!c.chunk_events);
    let file = "[trace]\nchunk_events = true\n";
    let c = resolve(&Flags::default(), &Env::new(), Some(file)).unwrap();
    assert!(c.chunk_events);
    let e = env(&[("LLMTAP_CHUNK_EVENTS", "false")]);
    let c = resolve(&Flags::default(), &e, Some(file)).unwrap();
    assert!(!c.chunk_events, "env beats file");
    let bad = env(&[("LLMTAP_CHUNK_EVENTS", "sometimes")]);
    let err = resolve(&Flags::default(), &bad, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("LLMTAP_CHUNK_EVENTS"), "{err}");
    let err = resolve(
        &Flags::default(),
        &Env::new(),
        Some("[trace]\nchunk_events = 3\n"),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("trace.chunk_events"), "{err}");
}
