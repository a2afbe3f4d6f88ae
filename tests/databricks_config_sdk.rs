//! `llmtap::databricks::resolve` compared with the real Databricks SDK for
//! Python (`databricks.sdk.config.Config`, tests/support/python/dbx_resolve.py)
//! on the same environments and profile files: same host, same kind of
//! credential, same secret source — or both refuse. OAuth cases point at the
//! Databricks stand-in, since the SDK discovers the token endpoint while
//! resolving.
//!
//! Needs python3 (the venv is built on first use by tests/support/mlflow.rs).

#[path = "support/databricks.rs"]
mod databricks;
#[path = "support/mlflow.rs"]
mod mlflow;

use std::collections::HashMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use llmtap::databricks::{resolve, AuthConfig};
use serde_json::{json, Value};

struct Case {
    name: &'static str,
    env: HashMap<String, String>,
    profile: Option<&'static str>,
}

fn sdk_resolve(cases: &[Case]) -> Vec<Value> {
    let python = mlflow::ensure_venv();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/support/python/dbx_resolve.py");
    let input: Vec<Value> = cases
        .iter()
        .map(|c| json!({"env": c.env, "profile": c.profile}))
        .collect();
    let mut child = Command::new(&python)
        .arg(&script)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run {}: {e}", python.display()));
    child
        .stdin
        .take()
        .unwrap()
        .write_all(Value::Array(input).to_string().as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "dbx_resolve.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice::<Vec<Value>>(&out.stdout).expect("dbx_resolve.py output")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn llmtap_resolves_like_the_databricks_sdk() {
    let dbx = databricks::Databricks::start().await;
    let host = dbx.host();
    let home = tempfile::tempdir().unwrap();
    let home_s = home.path().to_str().unwrap().to_string();
    let file = format!(
        "[DEFAULT]\nhost = {host}\ntoken = dapi-from-default\n\n[sp]\nhost = {host}/\nclient_id = {id}\nclient_secret = {secret}\n\n[tok]\nhost = {host}\ntoken = dapi-from-tok\n\n[hostonly]\nhost = {host}\n",
        id = databricks::CLIENT_ID,
        secret = databricks::CLIENT_SECRET,
    );
    std::fs::write(home.path().join(".databrickscfg"), &file).unwrap();
    let other = home.path().join("other.cfg");
    std::fs::write(
        &other,
        format!("[__settings__]\ndefault_profile = tok\n\n{file}"),
    )
    .unwrap();
    let other_s = other.to_str().unwrap().to_string();
    let hostport = host.trim_start_matches("http://").to_string();

    let e = |pairs: &[(&str, &str)]| -> HashMap<String, String> {
        let mut m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        m.insert("HOME".into(), home_s.clone());
        m
    };
    let (id, secret) = (databricks::CLIENT_ID, databricks::CLIENT_SECRET);
    let cases = vec![
        Case {
            name: "env pat",
            env: e(&[("DATABRICKS_HOST", &host), ("DATABRICKS_TOKEN", "dapi-env")]),
            profile: None,
        },
        Case {
            name: "env oauth",
            env: e(&[
                ("DATABRICKS_HOST", &host),
                ("DATABRICKS_CLIENT_ID", id),
                ("DATABRICKS_CLIENT_SECRET", secret),
            ]),
            profile: None,
        },
        Case {
            name: "both",
            env: e(&[
                ("DATABRICKS_HOST", &host),
                ("DATABRICKS_TOKEN", "dapi-env"),
                ("DATABRICKS_CLIENT_ID", id),
                ("DATABRICKS_CLIENT_SECRET", secret),
            ]),
            profile: None,
        },
        Case {
            name: "both, auth_type pat",
            env: e(&[
                ("DATABRICKS_HOST", &host),
                ("DATABRICKS_TOKEN", "dapi-env"),
                ("DATABRICKS_CLIENT_ID", id),
                ("DATABRICKS_CLIENT_SECRET", secret),
                ("DATABRICKS_AUTH_TYPE", "pat"),
            ]),
            profile: None,
        },
        Case {
            name: "DEFAULT profile",
            env: e(&[]),
            profile: None,
        },
        Case {
            name: "profile by env",
            env: e(&[("DATABRICKS_CONFIG_PROFILE", "sp")]),
            profile: None,
        },
        Case {
            name: "profile explicit",
            env: e(&[("DATABRICKS_CONFIG_PROFILE", "sp")]),
            profile: Some("tok"),
        },
        Case {
            name: "env token over profile",
            env: e(&[
                ("DATABRICKS_CONFIG_PROFILE", "tok"),
                ("DATABRICKS_TOKEN", "dapi-env"),
            ]),
            profile: None,
        },
        Case {
            name: "env host, no profile: file skipped",
            env: e(&[("DATABRICKS_HOST", &host)]),
            profile: None,
        },
        Case {
            name: "missing profile",
            env: e(&[("DATABRICKS_CONFIG_PROFILE", "nope")]),
            profile: None,
        },
        Case {
            name: "profile without credentials",
            env: e(&[("DATABRICKS_CONFIG_PROFILE", "hostonly")]),
            profile: None,
        },
        Case {
            name: "settings default_profile",
            env: e(&[("DATABRICKS_CONFIG_FILE", &other_s)]),
            profile: None,
        },
        Case {
            name: "client id without secret",
            env: e(&[("DATABRICKS_HOST", &host), ("DATABRICKS_CLIENT_ID", id)]),
            profile: None,
        },
        Case {
            name: "no scheme, trailing slash",
            env: e(&[
                ("DATABRICKS_HOST", &format!("{hostport}/")),
                ("DATABRICKS_TOKEN", "dapi-env"),
            ]),
            profile: None,
        },
    ];
    let sdk = tokio::task::spawn_blocking({
        let cases: Vec<Case> = cases
            .iter()
            .map(|c| Case {
                name: c.name,
                env: c.env.clone(),
                profile: c.profile,
            })
            .collect();
        move || sdk_resolve(&cases)
    })
    .await
    .unwrap();

    let mut refused = Vec::new();
    for (case, sdk) in cases.iter().zip(&sdk) {
        let ours = resolve(&case.env, case.profile);
        match (&ours, sdk.get("error")) {
            (Err(_), Some(_)) => refused.push(case.name),
            (Ok(cfg), None) => {
                let name = case.name;
                assert_eq!(cfg.host, sdk["host"].as_str().unwrap(), "{name}: host");
                match &cfg.auth {
                    AuthConfig::Pat(t) => {
                        assert_eq!(sdk["auth"], "pat", "{name}: auth");
                        assert_eq!(t.expose(), sdk["token"].as_str().unwrap(), "{name}: token");
                    }
                    AuthConfig::OAuthM2M { client_id, .. } => {
                        assert_eq!(sdk["auth"], "oauth-m2m", "{name}: auth");
                        assert_eq!(
                            client_id,
                            sdk["client_id"].as_str().unwrap(),
                            "{name}: client id"
                        );
                    }
                }
            }
            _ => panic!("{}: llmtap {:?}, SDK {}", case.name, ours, sdk),
        }
    }
    assert_eq!(
        refused,
        [
            "both",
            "env host, no profile: file skipped",
            "missing profile",
            "profile without credentials",
            "client id without secret"
        ],
        "the cases both refuse"
    );
}
