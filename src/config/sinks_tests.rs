//! `[[sinks]]` entries and the shortcuts: which sinks a configuration gets.

use super::tests::{env, FileSinkConfig, MlflowAuth};
use super::*;

fn sinks(e: &[(&str, &str)], file: Option<&str>) -> Vec<SinkEntry> {
    resolve(&Flags::default(), &env(e), file).unwrap().sinks
}

fn errors(e: &[(&str, &str)], file: &str) -> String {
    resolve(&Flags::default(), &env(e), Some(file))
        .unwrap_err()
        .to_string()
}

fn names(s: &[SinkEntry]) -> Vec<(&str, &str)> {
    s.iter().map(|e| (e.name.as_str(), e.spec.kind())).collect()
}

#[test]
fn several_sinks_from_the_file_each_with_its_own_rate() {
    let file = r#"
[[sinks]]
kind = "mlflow"
tracking_uri = "http://mlflow:5000"
experiment_id = "7"
token_env = "TEAM_MLFLOW_TOKEN"
max_traces_per_second = 50

[[sinks]]
kind = "file"
name = "archive"
dir = "/var/traces"
max_files = 3
"#;
    let s = sinks(&[("TEAM_MLFLOW_TOKEN", "t0k")], Some(file));
    assert_eq!(names(&s), [("mlflow", "mlflow"), ("archive", "file")]);
    assert_eq!(s[0].max_traces_per_second, Some(50.0));
    assert_eq!(s[1].max_traces_per_second, None);
    let SinkSpec::Mlflow(m) = &s[0].spec else {
        panic!("{s:?}")
    };
    assert_eq!(m.tracking_uri, "http://mlflow:5000");
    assert_eq!(m.auth, MlflowAuth::Bearer("t0k".into()));
    let SinkSpec::File(f) = &s[1].spec else {
        panic!("{s:?}")
    };
    assert_eq!(
        f,
        &FileSinkConfig {
            dir: "/var/traces".into(),
            max_file_bytes: 64 << 20,
            max_files: 3
        }
    );
}

#[test]
fn entries_add_to_the_shortcuts_and_the_files_are_only_the_fallback() {
    let file = "[[sinks]]\nkind = \"file\"\nname = \"copy\"\ndir = \"/t\"\n";
    let e = [("MLFLOW_TRACKING_URI", "http://m:5000")];
    assert_eq!(
        names(&sinks(&e, Some(file))),
        [("copy", "file"), ("mlflow", "mlflow")]
    );
    // LLMTAP_TRACE_DIR alone (set in the Docker image) adds no second sink.
    let e = [
        ("MLFLOW_TRACKING_URI", "http://m:5000"),
        ("LLMTAP_TRACE_DIR", "/t"),
    ];
    assert_eq!(names(&sinks(&e, None)), [("mlflow", "mlflow")]);
    assert_eq!(names(&sinks(&[], None)), [("file", "file")]);
}

#[test]
fn llmtap_sinks_names_the_shortcuts_to_use() {
    let e = [
        ("LLMTAP_SINKS", "mlflow, file"),
        ("MLFLOW_TRACKING_URI", "http://m:5000"),
        ("LLMTAP_TRACE_DIR", "/t"),
    ];
    assert_eq!(
        names(&sinks(&e, None)),
        [("mlflow", "mlflow"), ("file", "file")]
    );
    let e = [
        ("LLMTAP_SINKS", "file"),
        ("MLFLOW_TRACKING_URI", "http://m:5000"),
    ];
    assert_eq!(names(&sinks(&e, None)), [("file", "file")]);
    let bad = resolve(&Flags::default(), &env(&[("LLMTAP_SINKS", "kafka")]), None)
        .unwrap_err()
        .to_string();
    assert!(
        bad.contains("LLMTAP_SINKS: unknown sink kind \"kafka\""),
        "{bad}"
    );
}

#[test]
fn tracing_off_means_no_sink_whatever_is_listed() {
    let file = "[[sinks]]\nkind = \"file\"\ndir = \"/t\"\n";
    assert!(sinks(&[("ENABLE_MLFLOW_TRACING", "false")], Some(file)).is_empty());
}

#[test]
fn bad_entries_are_each_reported() {
    let file = r#"
[[sinks]]
kind = "kafka"

[[sinks]]
name = "x"

[[sinks]]
kind = "file"
dir = "/a"
colour = "blue"

[[sinks]]
kind = "file"
name = "same"
dir = "/a"

[[sinks]]
kind = "file"
name = "same"
dir = "/b"

[[sinks]]
kind = "file"
name = "../up"
dir = "/c"

[[sinks]]
kind = "mlflow"
name = "m"
max_traces_per_second = -1
"#;
    let e = errors(&[], file);
    for want in [
        "sinks[0].kind: unknown sink kind \"kafka\"",
        "sinks[1].kind: required",
        "sinks.file.colour: unknown key",
        "two sinks are named \"same\"",
        "name \"../up\" must be",
        "sinks.m.tracking_uri: required",
        "sinks.m.max_traces_per_second",
    ] {
        assert!(e.contains(want), "missing {want:?} in:\n{e}");
    }
}

#[test]
fn a_token_in_the_table_is_refused_and_never_echoed() {
    let file =
        "[[sinks]]\nkind = \"mlflow\"\ntracking_uri = \"http://m\"\ntoken = \"s3cr3t-value\"\n";
    let e = errors(&[], file);
    assert!(e.contains("sinks.mlflow.token: unknown key"), "{e}");
    assert!(!e.contains("s3cr3t-value"), "{e}");
}

#[test]
fn the_example_files_sinks_entries_are_valid() {
    let text = include_str!("../../config/llmtap.example.toml");
    let start = text.find("# [[sinks]]").expect("[[sinks]] examples");
    let end = text[start..].find("\n[export]").expect("then [export]") + start;
    let entries: String = text[start..end]
        .lines()
        .map(|l| l.strip_prefix("# ").unwrap_or(l.trim_start_matches('#')))
        // The example CA file does not exist here.
        .filter(|l| !l.starts_with("tracking_server_cert_path"))
        .collect::<Vec<_>>()
        .join("\n");
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("databrickscfg");
    std::fs::write(
        &cfg,
        "[prod]\nhost = https://adb-1.azuredatabricks.net\ntoken = dapi-x\n",
    )
    .unwrap();
    let e = [
        ("TEAM_MLFLOW_TOKEN", "t"),
        ("PHOENIX_OTLP_HEADERS", "authorization=Bearer%20x"),
        ("DATABRICKS_CONFIG_FILE", cfg.to_str().unwrap()),
        ("DATABRICKS_HOST", "https://adb-1.azuredatabricks.net"),
        ("DATABRICKS_TOKEN", "dapi-x"),
    ];
    let got = resolve(&Flags::default(), &env(&e), Some(&entries));
    let s = got.unwrap_or_else(|err| panic!("{err}\n{entries}")).sinks;
    assert_eq!(
        names(&s),
        [
            ("team", "mlflow"),
            ("phoenix", "otlp"),
            ("dbx", "databricks"),
            ("uc", "databricks_table"),
            ("archive", "file"),
        ]
    );
}
