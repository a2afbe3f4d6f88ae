//! Resolution: env only, profile file, precedence, missing pieces, bad
//! files, secrets never in errors or Debug.

use std::collections::HashMap;
use std::path::Path;

use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn with_file(
    e: &HashMap<String, String>,
    profile: Option<&str>,
    text: &str,
) -> Result<WorkspaceConfig, String> {
    resolve_with(
        e,
        profile,
        Some(Path::new("/home/u/.databrickscfg")),
        Some(text),
    )
}

const FILE: &str = "\
[DEFAULT]
host = https://default.cloud.databricks.com
token = dapi-default-secret

[sp]
host = adb-123.azuredatabricks.net/
client_id = sp-id
client_secret = sp-secret-value

[half]
host = https://half.example.com
";

#[test]
fn env_pat() {
    let c = resolve_with(
        &env(&[
            ("DATABRICKS_HOST", "https://x.cloud.databricks.com/"),
            ("DATABRICKS_TOKEN", "dapi-1"),
        ]),
        None,
        None,
        None,
    )
    .unwrap();
    assert_eq!(c.host, "https://x.cloud.databricks.com");
    assert_eq!(c.auth, AuthConfig::Pat(Secret::new("dapi-1")));
    assert_eq!(c.profile, None);
}

#[test]
fn env_oauth_m2m() {
    let e = env(&[
        ("DATABRICKS_HOST", "x.cloud.databricks.com"),
        ("DATABRICKS_CLIENT_ID", "id-1"),
        ("DATABRICKS_CLIENT_SECRET", "s3cr3t"),
    ]);
    let c = resolve_with(&e, None, None, None).unwrap();
    assert_eq!(c.host, "https://x.cloud.databricks.com");
    assert_eq!(
        c.auth,
        AuthConfig::OAuthM2M {
            client_id: "id-1".into(),
            client_secret: Secret::new("s3cr3t")
        }
    );
}

#[test]
fn default_profile_when_env_has_nothing() {
    let c = with_file(&env(&[]), None, FILE).unwrap();
    assert_eq!(c.host, "https://default.cloud.databricks.com");
    assert_eq!(c.auth, AuthConfig::Pat(Secret::new("dapi-default-secret")));
    assert_eq!(c.profile.as_deref(), Some("DEFAULT"));
}

#[test]
fn named_profile_from_env_or_uri() {
    let c = with_file(&env(&[("DATABRICKS_CONFIG_PROFILE", "sp")]), None, FILE).unwrap();
    assert_eq!(c.host, "https://adb-123.azuredatabricks.net");
    assert!(matches!(c.auth, AuthConfig::OAuthM2M { ref client_id, .. } if client_id == "sp-id"));
    // The explicit profile (databricks://PROFILE) wins over DATABRICKS_CONFIG_PROFILE.
    let c = with_file(
        &env(&[("DATABRICKS_CONFIG_PROFILE", "DEFAULT")]),
        Some("sp"),
        FILE,
    )
    .unwrap();
    assert_eq!(c.profile.as_deref(), Some("sp"));
}

#[test]
fn env_attributes_win_over_the_profile() {
    let e = env(&[
        ("DATABRICKS_CONFIG_PROFILE", "sp"),
        ("DATABRICKS_HOST", "https://env.example.com"),
    ]);
    let c = with_file(&e, None, FILE).unwrap();
    assert_eq!(c.host, "https://env.example.com");
    assert!(matches!(c.auth, AuthConfig::OAuthM2M { .. }));
}

#[test]
fn file_is_skipped_when_env_configures_and_no_profile_is_named() {
    // As the SDK: DATABRICKS_HOST set, no profile named -> the file is not read,
    // so the DEFAULT token is not picked up.
    let e = env(&[("DATABRICKS_HOST", "https://env.example.com")]);
    let err = with_file(&e, None, FILE).unwrap_err();
    assert!(err.contains("no Databricks credentials"), "{err}");
}

#[test]
fn settings_default_profile() {
    let text = format!("[__settings__]\ndefault_profile = sp\n\n{FILE}");
    let c = with_file(&env(&[]), None, &text).unwrap();
    assert_eq!(c.profile.as_deref(), Some("sp"));
}

#[test]
fn missing_pieces_are_named() {
    let err =
        resolve_with(&env(&[("DATABRICKS_TOKEN", "dapi-zzz")]), None, None, None).unwrap_err();
    assert!(err.contains("DATABRICKS_HOST"), "{err}");
    let err = with_file(&env(&[]), Some("half"), FILE).unwrap_err();
    assert!(
        err.contains("no Databricks credentials") && err.contains("[half]"),
        "{err}"
    );
    let err = with_file(&env(&[]), Some("nope"), FILE).unwrap_err();
    assert!(
        err.contains("no [nope] profile") && err.contains(".databrickscfg"),
        "{err}"
    );
    let e = env(&[
        ("DATABRICKS_HOST", "h.example.com"),
        ("DATABRICKS_CLIENT_ID", "id"),
    ]);
    let err = resolve_with(&e, None, None, None).unwrap_err();
    assert!(err.contains("DATABRICKS_CLIENT_SECRET is not set"), "{err}");
    let e = env(&[
        ("DATABRICKS_HOST", "h.example.com"),
        ("DATABRICKS_CLIENT_SECRET", "only-secret"),
    ]);
    let err = resolve_with(&e, None, None, None).unwrap_err();
    assert!(
        err.contains("DATABRICKS_CLIENT_ID is not set") && !err.contains("only-secret"),
        "{err}"
    );
    let err = resolve_with(
        &env(&[("DATABRICKS_CONFIG_PROFILE", "x")]),
        None,
        Some(Path::new("/no/file")),
        None,
    )
    .unwrap_err();
    assert!(err.contains("/no/file does not exist"), "{err}");
}

#[test]
fn two_methods_is_an_error_unless_auth_type_picks() {
    let base = [
        ("DATABRICKS_HOST", "h.example.com"),
        ("DATABRICKS_TOKEN", "dapi-both"),
        ("DATABRICKS_CLIENT_ID", "id"),
        ("DATABRICKS_CLIENT_SECRET", "sec-both"),
    ];
    let err = resolve_with(&env(&base), None, None, None).unwrap_err();
    assert!(err.contains("more than one authorization method"), "{err}");
    let mut e = env(&base);
    e.insert("DATABRICKS_AUTH_TYPE".into(), "oauth-m2m".into());
    assert!(matches!(
        resolve_with(&e, None, None, None).unwrap().auth,
        AuthConfig::OAuthM2M { .. }
    ));
    e.insert("DATABRICKS_AUTH_TYPE".into(), "pat".into());
    assert!(matches!(
        resolve_with(&e, None, None, None).unwrap().auth,
        AuthConfig::Pat(_)
    ));
    e.insert("DATABRICKS_AUTH_TYPE".into(), "azure-cli".into());
    assert!(resolve_with(&e, None, None, None)
        .unwrap_err()
        .contains("not supported"));
}

#[test]
fn bad_file_names_path_and_line_only() {
    let err = with_file(&env(&[]), None, "[DEFAULT]\ntoken dapi-in-a-broken-line\n").unwrap_err();
    assert!(
        err.contains(".databrickscfg") && err.contains("line 2"),
        "{err}"
    );
    assert!(!err.contains("dapi-in-a-broken-line"), "{err}");
}

#[test]
fn hosts() {
    assert_eq!(
        normalize_host("adb-1.azuredatabricks.net").unwrap(),
        "https://adb-1.azuredatabricks.net"
    );
    assert_eq!(
        normalize_host("https://x.com:443/").unwrap(),
        "https://x.com"
    );
    assert_eq!(
        normalize_host("https://x.com:8443//").unwrap(),
        "https://x.com:8443"
    );
    assert_eq!(
        normalize_host("http://127.0.0.1:9000/").unwrap(),
        "http://127.0.0.1:9000"
    );
    assert_eq!(
        normalize_host("http://localhost:9000").unwrap(),
        "http://localhost:9000"
    );
    assert_eq!(
        normalize_host("http://[::1]:9000").unwrap(),
        "http://[::1]:9000"
    );
    assert!(normalize_host("http://x.cloud.databricks.com")
        .unwrap_err()
        .contains("https"));
    assert!(normalize_host("ftp://x.com").is_err());
    let err = normalize_host("https://user:pw-secret@x.com").unwrap_err();
    assert!(!err.contains("pw-secret"), "{err}");
}

#[test]
fn tracking_uri_profiles() {
    assert_eq!(profile_from_tracking_uri("databricks").unwrap(), None);
    assert_eq!(
        profile_from_tracking_uri("databricks://prod")
            .unwrap()
            .as_deref(),
        Some("prod")
    );
    assert!(profile_from_tracking_uri("databricks://scope:prefix").is_err());
    assert!(profile_from_tracking_uri("http://mlflow:5000").is_err());
}

#[test]
fn secrets_never_in_debug_or_errors() {
    let e = env(&[
        ("DATABRICKS_HOST", "h.example.com"),
        ("DATABRICKS_CLIENT_ID", "id"),
        ("DATABRICKS_CLIENT_SECRET", "very-secret-value"),
    ]);
    let c = resolve_with(&e, None, None, None).unwrap();
    let dbg = format!("{c:?}");
    assert!(
        !dbg.contains("very-secret-value") && dbg.contains("<redacted>"),
        "{dbg}"
    );
    let pat = resolve_with(
        &env(&[
            ("DATABRICKS_HOST", "h.example.com"),
            ("DATABRICKS_TOKEN", "dapi-hidden"),
        ]),
        None,
        None,
        None,
    )
    .unwrap();
    assert!(!format!("{pat:?}").contains("dapi-hidden"));
    let mut both = e.clone();
    both.insert("DATABRICKS_TOKEN".into(), "dapi-hidden".into());
    let err = resolve_with(&both, None, None, Some("")).unwrap_err();
    assert!(
        !err.contains("dapi-hidden") && !err.contains("very-secret-value"),
        "{err}"
    );
}

#[test]
fn resolve_reads_the_named_file() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("cfg");
    std::fs::write(&path, FILE).unwrap();
    let e = env(&[
        ("DATABRICKS_CONFIG_FILE", path.to_str().unwrap()),
        ("DATABRICKS_CONFIG_PROFILE", "sp"),
    ]);
    assert_eq!(
        resolve(&e, None).unwrap().host,
        "https://adb-123.azuredatabricks.net"
    );
    // ~ expands with HOME from the given env.
    std::fs::write(dir.path().join(".databrickscfg"), FILE).unwrap();
    let e = env(&[("HOME", dir.path().to_str().unwrap())]);
    assert_eq!(
        resolve(&e, None).unwrap().profile.as_deref(),
        Some("DEFAULT")
    );
}
