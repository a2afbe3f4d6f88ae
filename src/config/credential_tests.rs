//! Parsing `credential*` settings: sources, headers, the env shortcut, and
//! errors that name the setting without ever echoing a key.

use super::*;
use crate::config::{resolve, Config, ConfigError, Flags};

const KEY: &str = "sk-CANARY-0123456789";

fn env(pairs: &[(&str, &str)]) -> Env {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn load(vars: &[(&str, &str)], file: &str) -> Result<Config, ConfigError> {
    resolve(&Flags::default(), &env(vars), Some(file))
}

fn errors(vars: &[(&str, &str)], file: &str) -> String {
    let e = load(vars, file).expect_err("a config error").to_string();
    assert!(!e.contains("CANARY"), "a key was echoed: {e}");
    e
}

fn bearer(c: &CredentialConfig) -> HeaderValue {
    match &c.source {
        CredentialSource::Env { key, .. } | CredentialSource::File { key, .. } => {
            key.value(&CredentialHeader::Bearer)
        }
        CredentialSource::Databricks { .. } => panic!("no key"),
    }
}

#[test]
fn env_credential_on_a_route_with_defaults() {
    let cfg = load(
        &[("ANTHROPIC_API_KEY", KEY)],
        r#"
[[routes]]
prefix = "/anthropic"
upstream = "https://api.anthropic.com"
credential = "env:ANTHROPIC_API_KEY"
"#,
    )
    .unwrap();
    let c = cfg.routes[0].credential.as_ref().unwrap();
    assert_eq!(c.source.describe(), "env:ANTHROPIC_API_KEY");
    assert_eq!(c.header, None, "chosen per call by provider");
    assert!(!c.override_agent, "the agent's header wins by default");
    assert_eq!(bearer(c), format!("Bearer {KEY}").as_str());
    assert!(bearer(c).is_sensitive());
    assert_eq!(cfg.upstream_credential, None);
}

#[test]
fn default_upstream_from_the_table_and_the_env_shortcut() {
    let file = r#"
[upstream]
url = "https://api.openai.com"
credential = "env:TEAM_OPENAI_KEY"
credential_header = "api-key"
credential_override = true
"#;
    let cfg = load(&[("TEAM_OPENAI_KEY", KEY)], file).unwrap();
    let c = cfg.upstream_credential.unwrap();
    assert_eq!(c.source.describe(), "env:TEAM_OPENAI_KEY");
    assert_eq!(
        c.header,
        Some(CredentialHeader::Raw(HeaderName::from_static("api-key")))
    );
    assert!(c.override_agent);

    // Each variable wins over its key in the file.
    let cfg = load(
        &[
            ("OPENAI_API_KEY", KEY),
            ("LLMTAP_UPSTREAM_CREDENTIAL", "env:OPENAI_API_KEY"),
            ("LLMTAP_UPSTREAM_CREDENTIAL_HEADER", "Authorization"),
            ("LLMTAP_UPSTREAM_CREDENTIAL_OVERRIDE", "false"),
        ],
        file,
    )
    .unwrap();
    let c = cfg.upstream_credential.unwrap();
    assert_eq!(c.source.describe(), "env:OPENAI_API_KEY");
    assert_eq!(c.header, Some(CredentialHeader::Bearer));
    assert!(!c.override_agent);
}

#[test]
fn a_key_in_the_environment_is_never_picked_up_unasked() {
    let cfg = load(&[("OPENAI_API_KEY", KEY), ("ANTHROPIC_API_KEY", KEY)], "").unwrap();
    assert_eq!(cfg.upstream_credential, None);
}

#[test]
fn debug_output_never_shows_the_key() {
    let cfg = load(
        &[
            ("OPENAI_API_KEY", KEY),
            ("LLMTAP_UPSTREAM_CREDENTIAL", "env:OPENAI_API_KEY"),
        ],
        "",
    )
    .unwrap();
    let shown = format!("{cfg:?} {:#?}", cfg.upstream_credential);
    assert!(shown.contains("OPENAI_API_KEY"), "{shown}");
    assert!(!shown.contains("CANARY"), "{shown}");
}

#[test]
fn a_pasted_key_is_refused_without_being_echoed() {
    let e = errors(&[], "[upstream]\ncredential = \"sk-CANARY-0123456789\"\n");
    assert!(e.contains("upstream.credential: expected env:VAR"), "{e}");
    let e = errors(&[("LLMTAP_UPSTREAM_CREDENTIAL", KEY)], "");
    assert!(
        e.contains("LLMTAP_UPSTREAM_CREDENTIAL: expected env:VAR"),
        "{e}"
    );
}

#[test]
fn bad_env_sources_name_the_variable() {
    let e = errors(&[("LLMTAP_UPSTREAM_CREDENTIAL", "env:NOPE_KEY")], "");
    assert!(
        e.contains("LLMTAP_UPSTREAM_CREDENTIAL: environment variable NOPE_KEY is not set"),
        "{e}"
    );
    let e = errors(
        &[
            ("LLMTAP_UPSTREAM_CREDENTIAL", "env:EMPTY_KEY"),
            ("EMPTY_KEY", " \n"),
        ],
        "",
    );
    assert!(e.contains("environment variable EMPTY_KEY is empty"), "{e}");
    let e = errors(
        &[
            ("LLMTAP_UPSTREAM_CREDENTIAL", "env:BAD_KEY"),
            ("BAD_KEY", "sk-CANARY\u{7}x"),
        ],
        "",
    );
    assert!(e.contains("BAD_KEY holds characters"), "{e}");
    let e = errors(&[("LLMTAP_UPSTREAM_CREDENTIAL", "env:")], "");
    assert!(e.contains("env: needs a variable name"), "{e}");
}

#[test]
fn every_bad_field_of_a_route_is_reported() {
    let e = errors(
        &[],
        r#"
[[routes]]
prefix = "/a"
upstream = "https://api.anthropic.com"
credential = "env:MISSING_KEY"
credential_header = "content-length"
credential_override = "yes"
credential_check_interval = "1s"
[[routes]]
prefix = "/b"
upstream = "https://api.openai.com"
credential_override = true
[[routes]]
prefix = "/c"
upstream = "https://api.openai.com"
credential = 7
"#,
    );
    for needle in [
        "routes[0].credential: environment variable MISSING_KEY is not set",
        "routes[0].credential_header: \"content-length\" cannot carry a credential",
        "routes[0].credential_override: expected true or false",
        "routes[0].credential_check_interval: only a file: credential is checked",
        "routes[1].credential_override: set without a credential",
        "routes[2].credential: unexpected integer",
    ] {
        assert!(e.contains(needle), "{needle} in {e}");
    }
}

#[test]
fn headers_by_name() {
    assert_eq!(
        CredentialHeader::parse("Authorization"),
        Ok(CredentialHeader::Bearer)
    );
    assert_eq!(
        CredentialHeader::parse("bearer"),
        Ok(CredentialHeader::Bearer)
    );
    assert_eq!(
        CredentialHeader::parse("X-Api-Key").map(|h| h.name()),
        Ok(HeaderName::from_static("x-api-key"))
    );
    assert!(CredentialHeader::parse("host").is_err());
    assert!(CredentialHeader::parse("bad header").is_err());
}

#[test]
fn file_credential_is_read_trimmed_and_checked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openai");
    std::fs::write(&path, format!("{KEY}\n")).unwrap();
    let file = format!(
        "[upstream]\ncredential = \"file:{}\"\ncredential_check_interval = \"250ms\"\n",
        path.display()
    );
    let c = load(&[], &file).unwrap().upstream_credential.unwrap();
    assert_eq!(c.check_interval, Duration::from_millis(250));
    assert_eq!(bearer(&c), format!("Bearer {KEY}").as_str());
    assert_eq!(
        c.source.describe(),
        format!("file:{}", path.display()),
        "the path, for logs"
    );

    let default = format!("[upstream]\ncredential = \"file:{}\"\n", path.display());
    let c = load(&[], &default).unwrap().upstream_credential.unwrap();
    assert_eq!(c.check_interval, DEFAULT_CHECK_INTERVAL);

    let fast = file.replace("250ms", "10ms");
    assert!(errors(&[], &fast).contains("must be at least 100ms"));
}

#[test]
fn bad_credential_files_are_errors_at_start() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let e = errors(
        &[(
            "LLMTAP_UPSTREAM_CREDENTIAL",
            &format!("file:{}", missing.display()),
        )],
        "",
    );
    assert!(
        e.contains(&format!(
            "LLMTAP_UPSTREAM_CREDENTIAL: cannot read {}",
            missing.display()
        )),
        "{e}"
    );

    let big = dir.path().join("big");
    std::fs::write(&big, "CANARY".repeat(FILE_MAX_BYTES)).unwrap();
    let e = errors(
        &[(
            "LLMTAP_UPSTREAM_CREDENTIAL",
            &format!("file:{}", big.display()),
        )],
        "",
    );
    assert!(e.contains("is larger than 64 KiB"), "{e}");

    let empty = dir.path().join("empty");
    std::fs::write(&empty, "\n").unwrap();
    let e = errors(
        &[(
            "LLMTAP_UPSTREAM_CREDENTIAL",
            &format!("file:{}", empty.display()),
        )],
        "",
    );
    assert!(e.contains(&format!("{} is empty", empty.display())), "{e}");
}

#[test]
fn databricks_source_resolves_the_workspace_and_guards_its_host() {
    let pat = [
        ("DATABRICKS_HOST", "adb-1.azuredatabricks.net"),
        ("DATABRICKS_TOKEN", "dapi-CANARY-1"),
        ("LLMTAP_UPSTREAM_CREDENTIAL", "databricks"),
    ];
    let ok = load(
        &[
            pat[0],
            pat[1],
            pat[2],
            (
                "LLMTAP_UPSTREAM",
                "https://adb-1.azuredatabricks.net:443/serving-endpoints",
            ),
        ],
        "",
    )
    .unwrap();
    let c = ok.upstream_credential.unwrap();
    assert_eq!(c.source.describe(), "databricks");
    let CredentialSource::Databricks { workspace, profile } = &c.source else {
        panic!("{c:?}");
    };
    assert_eq!(workspace.host, "https://adb-1.azuredatabricks.net");
    assert_eq!(profile, &None);
    assert!(!format!("{c:?}").contains("CANARY"));

    // The token never goes to another host, nor in clear text.
    for other in [
        "https://api.openai.com",
        "http://adb-1.azuredatabricks.net",
        "https://adb-1.azuredatabricks.net:8443",
    ] {
        let e = errors(&[pat[0], pat[1], pat[2], ("LLMTAP_UPSTREAM", other)], "");
        assert!(
            e.contains("upstream: a Databricks token goes only to its workspace https://adb-1.azuredatabricks.net"),
            "{other}: {e}"
        );
    }
    let route = r#"
[[routes]]
prefix = "/dbx"
upstream = "https://elsewhere.example"
credential = "databricks"
"#;
    let e = errors(&[pat[0], pat[1]], route);
    assert!(
        e.contains("routes[0]: a Databricks token goes only to its workspace"),
        "{e}"
    );

    // What the workspace resolution misses is reported under the setting.
    let e = errors(
        &[
            ("LLMTAP_UPSTREAM_CREDENTIAL", "databricks"),
            ("HOME", "/nonexistent"),
        ],
        "",
    );
    assert!(
        e.contains("LLMTAP_UPSTREAM_CREDENTIAL: no Databricks host"),
        "{e}"
    );
}

#[test]
fn databricks_profile_is_read_from_the_config_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("databrickscfg");
    std::fs::write(
        &cfg,
        "[prod]\nhost = https://adb-2.azuredatabricks.net\ntoken = dapi-CANARY-2\n",
    )
    .unwrap();
    let file = cfg.display().to_string();
    let vars = [
        ("DATABRICKS_CONFIG_FILE", file.as_str()),
        ("LLMTAP_UPSTREAM_CREDENTIAL", "databricks:prod"),
        ("LLMTAP_UPSTREAM", "https://adb-2.azuredatabricks.net"),
    ];
    let c = load(&vars, "").unwrap().upstream_credential.unwrap();
    assert_eq!(c.source.describe(), "databricks:prod");
    let e = errors(
        &[
            vars[0],
            ("LLMTAP_UPSTREAM_CREDENTIAL", "databricks:staging"),
            vars[2],
        ],
        "",
    );
    assert!(e.contains("LLMTAP_UPSTREAM_CREDENTIAL: "), "{e}");
    assert!(e.contains("staging"), "{e}");
}

#[test]
fn secrets_from_an_authorization_value() {
    let s = Secret::from_authorization(&HeaderValue::from_static("Bearer dapi123")).unwrap();
    assert_eq!(s.value(&CredentialHeader::Bearer), "Bearer dapi123");
    assert_eq!(
        s.value(&CredentialHeader::Raw(HeaderName::from_static("x-api-key"))),
        "dapi123"
    );
    assert_eq!(format!("{s:?}"), "<redacted>");
}
