//! The `OTEL_EXPORTER_OTLP_*` variables and the `[[sinks]]` table.

use super::*;

fn env(pairs: &[(&str, &str)]) -> HashMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn table(text: &str) -> toml::Table {
    text.parse().expect("TOML")
}

#[test]
fn no_endpoint_no_sink() {
    assert_eq!(from_env(&env(&[])), Ok(None));
    assert_eq!(
        from_env(&env(&[("OTEL_EXPORTER_OTLP_HEADERS", "a=b")])),
        Ok(None)
    );
    let off = env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        ("OTEL_TRACES_EXPORTER", "none"),
    ]);
    assert_eq!(from_env(&off), Ok(None));
}

#[test]
fn base_endpoint_gets_the_traces_path_and_defaults() {
    let cfg = from_env(&env(&[(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "http://collector:4318/",
    )]))
    .unwrap()
    .unwrap();
    assert_eq!(cfg.url, "http://collector:4318/v1/traces");
    assert_eq!(cfg.protocol, Protocol::HttpProtobuf);
    assert!(!cfg.gzip);
    assert_eq!(cfg.timeout, None);
    assert_eq!(cfg.semconv, Semconv::Genai);
    let cfg = from_env(&env(&[(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        "https://x.example/otel",
    )]))
    .unwrap()
    .unwrap();
    assert_eq!(cfg.url, "https://x.example/otel/v1/traces");
}

#[test]
fn signal_specific_variables_win_and_are_used_as_is() {
    let cfg = from_env(&env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://generic:4318"),
        (
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
            "https://cloud.langfuse.com/api/public/otel/v1/traces",
        ),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "gzip"),
        ("OTEL_EXPORTER_OTLP_TRACES_COMPRESSION", "none"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "1000"),
        ("OTEL_EXPORTER_OTLP_TRACES_TIMEOUT", "2500"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "x-generic=1"),
        (
            "OTEL_EXPORTER_OTLP_TRACES_HEADERS",
            "Authorization=Basic%20cGs6c2s=, x-tenant = acme ",
        ),
        ("OTEL_TRACES_EXPORTER", "otlp"),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(
        cfg.url,
        "https://cloud.langfuse.com/api/public/otel/v1/traces"
    );
    assert_eq!(cfg.protocol, Protocol::HttpJson);
    assert!(!cfg.gzip);
    assert_eq!(cfg.timeout, Some(Duration::from_millis(2500)));
    assert_eq!(
        cfg.headers,
        vec![
            ("authorization".to_string(), "Basic cGs6c2s=".to_string()),
            ("x-tenant".to_string(), "acme".to_string()),
        ]
    );
}

#[test]
fn grpc_and_bad_values_are_refused_each_by_name() {
    let errs = from_env(&env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
        ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ("OTEL_EXPORTER_OTLP_COMPRESSION", "zstd"),
        ("OTEL_EXPORTER_OTLP_TIMEOUT", "10s"),
        ("OTEL_EXPORTER_OTLP_HEADERS", "novalue"),
        ("OTEL_EXPORTER_OTLP_CLIENT_KEY", "/k.pem"),
        ("OTEL_TRACES_EXPORTER", "zipkin"),
        ("LLMTAP_OTLP_SEMCONV", "otel"),
    ]))
    .unwrap_err();
    let all = errs.join("\n");
    for name in [
        "OTEL_EXPORTER_OTLP_PROTOCOL=grpc",
        "OTEL_EXPORTER_OTLP_COMPRESSION",
        "OTEL_EXPORTER_OTLP_TIMEOUT",
        "OTEL_EXPORTER_OTLP_HEADERS",
        "OTEL_EXPORTER_OTLP_CLIENT_KEY",
        "OTEL_TRACES_EXPORTER",
        "LLMTAP_OTLP_SEMCONV",
    ] {
        assert!(all.contains(name), "{name} not named in:\n{all}");
    }
    assert_eq!(errs.len(), 7, "{all}");
    let bad_url = from_env(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")])).unwrap_err();
    assert!(bad_url[0].contains("http://"), "{bad_url:?}");
}

#[test]
fn secrets_never_show() {
    let secret = "sk-lf-SECRET";
    let cfg = from_env(&env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            &format!("authorization=Bearer%20{secret}"),
        ),
    ]))
    .unwrap()
    .unwrap();
    let shown = format!("{cfg:?}");
    assert!(!shown.contains(secret), "{shown}");
    assert!(shown.contains("authorization"), "{shown}");
    // A bad header value is reported by position, not echoed.
    let errs = from_env(&env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
        (
            "OTEL_EXPORTER_OTLP_HEADERS",
            &format!("authorization={secret}%0A"),
        ),
    ]))
    .unwrap_err();
    assert!(!errs.join(" ").contains(secret), "{errs:?}");
    // Credentials in the URL are refused without echoing them.
    let errs = from_env(&env(&[(
        "OTEL_EXPORTER_OTLP_ENDPOINT",
        &format!("https://user:{secret}@collector:4318"),
    )]))
    .unwrap_err();
    assert!(!errs.join(" ").contains(secret), "{errs:?}");
}

#[test]
fn a_sinks_table() {
    let t = table(
        r#"
        name = "phoenix"
        kind = "otlp"
        endpoint = "http://phoenix:6006"
        protocol = "http/protobuf"
        compression = "gzip"
        timeout = "5s"
        headers_env = "PHOENIX_OTLP_HEADERS"
        semconv = "genai+openinference"
        "#,
    );
    let e = env(&[("PHOENIX_OTLP_HEADERS", "api_key=px-123")]);
    let cfg = from_table("phoenix", &t, &e).unwrap();
    assert_eq!(cfg.url, "http://phoenix:6006/v1/traces");
    assert!(cfg.gzip);
    assert_eq!(cfg.timeout, Some(Duration::from_secs(5)));
    assert_eq!(cfg.headers, vec![("api_key".into(), "px-123".into())]);
    assert_eq!(cfg.semconv, Semconv::GenaiOpenInference);
    let t = table("kind = \"otlp\"\ntraces_endpoint = \"http://tempo:4318/v1/traces\"\ntimeout = 750\nsemconv = \"mlflow\"");
    let cfg = from_table("tempo", &t, &HashMap::new()).unwrap();
    assert_eq!(cfg.url, "http://tempo:4318/v1/traces");
    assert_eq!(cfg.timeout, Some(Duration::from_millis(750)));
    assert_eq!(cfg.semconv, Semconv::Mlflow);
}

#[test]
fn a_bad_sinks_table_names_every_setting() {
    let t = table(
        r#"
        kind = "otlp"
        endpoint = "http://a:4318"
        traces_endpoint = "http://b:4318/v1/traces"
        protocol = "grpc"
        headers_env = "UNSET_VAR"
        headers = { authorization = "Bearer inline" }
        timeout = true
        "#,
    );
    let errs = from_table("x", &t, &HashMap::new()).unwrap_err();
    let all = errs.join("\n");
    for s in [
        "sinks.x.endpoint",
        "sinks.x.protocol",
        "sinks.x.headers_env",
        "sinks.x.headers: unknown setting",
        "sinks.x.timeout",
    ] {
        assert!(all.contains(s), "{s} not in:\n{all}");
    }
    assert!(!all.contains("Bearer inline"), "{all}");
    let missing = from_table("x", &table("kind = \"otlp\""), &HashMap::new()).unwrap_err();
    assert!(
        missing[0].contains("sinks.x.endpoint: required"),
        "{missing:?}"
    );
}

#[test]
fn a_certificate_file_is_read() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none.pem");
    let errs = from_env(&env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318"),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", missing.to_str().unwrap()),
    ]))
    .unwrap_err();
    assert!(
        errs[0].contains("OTEL_EXPORTER_OTLP_CERTIFICATE"),
        "{errs:?}"
    );
    let cert = rcgen::generate_simple_self_signed(vec!["c".into()]).unwrap();
    let pem = dir.path().join("ca.pem");
    std::fs::write(&pem, cert.cert.pem()).unwrap();
    let cfg = from_env(&env(&[
        ("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c:4318"),
        ("OTEL_EXPORTER_OTLP_CERTIFICATE", pem.to_str().unwrap()),
    ]))
    .unwrap()
    .unwrap();
    assert_eq!(cfg.ca_certs.len(), 1);
}
