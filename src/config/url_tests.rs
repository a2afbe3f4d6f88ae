//! URLs in the config: userinfo refused in upstreams, used as Basic auth for
//! MLflow; no error message repeats a password or a query.

use super::tests::{env, MlflowAuth, SinkConfig};
use super::*;

fn errors(flags: &Flags, e: &Env, file: Option<&str>) -> String {
    resolve(flags, e, file).unwrap_err().to_string()
}

#[test]
fn userinfo_in_any_upstream_is_refused_without_echoing_it() {
    let flags = Flags {
        upstream: Some("http://alice:Pa55-SECRET@proxy.internal:8080/v1".into()),
        ..Flags::default()
    };
    let err = errors(&flags, &Env::new(), None);
    assert!(err.contains("upstream: a URL with credentials"), "{err}");
    assert!(err.contains("Authorization header"), "{err}");
    assert!(err.contains("http://proxy.internal:8080"), "{err}");
    assert!(!err.contains("SECRET") && !err.contains("alice"), "{err}");

    let e = env(&[("LLMTAP_UPSTREAM", "https://tok-SECRET@api.example")]);
    let err = errors(&Flags::default(), &e, None);
    assert!(err.contains("upstream: a URL with credentials"), "{err}");
    assert!(!err.contains("SECRET"), "{err}");

    let file = r#"
[upstream]
url = "http://u:p%40ss-SECRET@a.example"
[[routes]]
prefix = "/x"
upstream = "https://bob:hunter2-SECRET@b.example/base"
"#;
    let err = errors(&Flags::default(), &Env::new(), Some(file));
    assert!(err.contains("upstream: a URL with credentials"), "{err}");
    assert!(
        err.contains("routes[0].upstream: a URL with credentials"),
        "{err}"
    );
    assert!(!err.contains("SECRET") && !err.contains("bob"), "{err}");
}

#[test]
fn queries_and_unparsable_urls_are_not_echoed() {
    for bad in [
        "https://api.example/v1?api-key=SECRET",
        "sk-SECRET-pasted-here",
        "http://exa mple/SECRET",
    ] {
        let e = env(&[("LLMTAP_UPSTREAM", bad), ("MLFLOW_TRACKING_URI", bad)]);
        let err = errors(&Flags::default(), &e, None);
        assert!(err.contains("upstream:"), "{bad}: {err}");
        assert!(err.contains("MLFLOW_TRACKING_URI:"), "{bad}: {err}");
        assert!(!err.contains("SECRET"), "{bad}: {err}");
    }
}

#[test]
fn a_fragment_is_dropped_not_kept() {
    let e = env(&[
        ("LLMTAP_UPSTREAM", "http://api.example/v1#SECRET"),
        ("MLFLOW_TRACKING_URI", "http://ml.example#SECRET"),
    ]);
    let c = resolve(&Flags::default(), &e, None).unwrap();
    assert_eq!(c.upstream.to_string(), "http://api.example/v1");
    assert!(format!("{c:?}").contains("\"http://ml.example\""));
    assert!(!format!("{c:?}").contains("SECRET"));
}

#[test]
fn mlflow_userinfo_becomes_basic_auth_and_leaves_the_uri() {
    let e = env(&[(
        "MLFLOW_TRACKING_URI",
        "https://ml%40ops:p%3Ass%2Fw-SECRET@mlflow.example:5443/prefix/",
    )]);
    let SinkConfig::Mlflow(m) = resolve(&Flags::default(), &e, None).unwrap().sink() else {
        panic!("expected the mlflow sink")
    };
    assert_eq!(m.tracking_uri, "https://mlflow.example:5443/prefix");
    assert_eq!(
        m.auth,
        MlflowAuth::Basic {
            user: "ml@ops".into(),
            password: "p:ss/w-SECRET".into()
        },
        "percent-decoded"
    );
    assert!(!format!("{m:?}").contains("SECRET"));
}

#[test]
fn explicit_mlflow_credentials_win_over_userinfo() {
    let uri = ("MLFLOW_TRACKING_URI", "http://u:url-SECRET@mlflow.example");
    let sink = |e: Env| match resolve(&Flags::default(), &e, None).unwrap().sink() {
        SinkConfig::Mlflow(m) => m,
        other => panic!("{other:?}"),
    };
    let m = sink(env(&[uri, ("MLFLOW_TRACKING_TOKEN", "tok")]));
    assert_eq!(m.auth, MlflowAuth::Bearer("tok".into()));
    assert_eq!(m.tracking_uri, "http://mlflow.example");
    let m = sink(env(&[
        uri,
        ("MLFLOW_TRACKING_USERNAME", "v"),
        ("MLFLOW_TRACKING_PASSWORD", "w"),
    ]));
    assert_eq!(
        m.auth,
        MlflowAuth::Basic {
            user: "v".into(),
            password: "w".into()
        }
    );
    let m = sink(env(&[("MLFLOW_TRACKING_URI", "http://user-only@h")]));
    assert_eq!(
        m.auth,
        MlflowAuth::Basic {
            user: "user-only".into(),
            password: String::new()
        }
    );
}

#[test]
fn dead_letter_rotation_settings() {
    let c = resolve(&Flags::default(), &Env::new(), None).unwrap();
    assert_eq!(c.export.dead_letter_max_file_bytes, 64 << 20);
    assert_eq!(c.export.dead_letter_max_files, 10);
    let file = "[export]\ndead_letter_max_file_bytes = \"1MiB\"\ndead_letter_max_files = 3\n";
    let c = resolve(&Flags::default(), &Env::new(), Some(file)).unwrap();
    assert_eq!(c.export.dead_letter_max_file_bytes, 1 << 20);
    assert_eq!(c.export.dead_letter_max_files, 3);
    let file = "[export]\ndead_letter_max_file_bytes = \"lots\"\ndead_letter_max_files = 0\n";
    let err = errors(&Flags::default(), &Env::new(), Some(file));
    assert!(err.contains("export.dead_letter_max_file_bytes"), "{err}");
    assert!(err.contains("export.dead_letter_max_files"), "{err}");
}

#[test]
fn a_toml_syntax_error_does_not_quote_the_line() {
    let file = "[upstream]\nurl = \"http://u:pw-SECRET@h\n";
    let err = errors(&Flags::default(), &Env::new(), Some(file));
    assert!(
        err.contains("config file:") && err.contains("line 2"),
        "{err}"
    );
    assert!(!err.contains("SECRET"), "{err}");
}
