//! HTTPS end to end: llmtap against an upstream (and an MLflow sink) whose
//! certificate a private CA signed. The CA and a server certificate for
//! `localhost` and `127.0.0.1` are made with rcgen at test time; the fakes
//! serve TLS through tokio-rustls with ALPN h2 and http/1.1.

#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/tap.rs"]
mod tap;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use fake_provider::{FakeProvider, Reply, Seen};
use http::{Uri, Version};
use llmtap::config::RouteConfig;
use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use rustls::pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};
use tap::{fixture, post, Tap};
use tokio_rustls::TlsAcceptor;

const CHAT: &str = "/v1/chat/completions";
const AUTH: &str = "Bearer sk-test-SECRET-0123456789";

/// A private CA, its PEM on disk, and a TLS acceptor presenting a server
/// certificate it signed for `localhost` and `127.0.0.1`.
struct TestCa {
    pem: PathBuf,
    acceptor: TlsAcceptor,
    _dir: tempfile::TempDir,
}

impl TestCa {
    fn new() -> TestCa {
        let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        ca.distinguished_name
            .push(DnType::CommonName, "llmtap test CA");
        ca.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let ca = CertifiedIssuer::self_signed(ca, KeyPair::generate().unwrap()).unwrap();

        let mut leaf =
            CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
        leaf.distinguished_name
            .push(DnType::CommonName, "localhost");
        leaf.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let key = KeyPair::generate().unwrap();
        let cert = leaf.signed_by(&key, &ca).unwrap();

        let dir = tempfile::tempdir().unwrap();
        let pem = dir.path().join("ca.pem");
        std::fs::write(&pem, ca.pem()).unwrap();

        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let mut server = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_no_client_auth()
            .with_single_cert(
                vec![cert.der().clone(), ca.der().clone()],
                PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
            )
            .unwrap();
        server.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        TestCa {
            pem,
            acceptor: TlsAcceptor::from(Arc::new(server)),
            _dir: dir,
        }
    }

    fn pem(&self) -> &str {
        self.pem.to_str().unwrap()
    }
}

fn chat_request(stream: bool) -> Vec<u8> {
    let mut v = json!({
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": "Capital of France?"}],
    });
    if stream {
        // Usage asked for by the client: nothing is injected, so the client
        // gets exactly the provider's bytes.
        v["stream"] = json!(true);
        v["stream_options"] = json!({"include_usage": true});
    }
    serde_json::to_vec(&v).unwrap()
}

/// The OpenAI chat fixtures: JSON, or the SSE stream for `"stream": true`.
fn openai_chat(seen: &Seen) -> Reply {
    let req: Value = serde_json::from_slice(&seen.body).unwrap_or_default();
    if req["stream"] == true {
        Reply::sse(&fixture("openai_chat/stream_include_usage.sse"))
    } else {
        Reply::json(200, fixture("openai_chat/plain.json"))
    }
}

fn path_of(seen: &Seen) -> String {
    // Over HTTP/2 the server sees the full URI (:scheme, :authority, :path).
    seen.uri.parse::<Uri>().unwrap().path().to_string()
}

#[tokio::test]
async fn json_and_stream_over_https_with_a_private_ca() {
    let ca = TestCa::new();
    let provider = FakeProvider::start_tls(ca.acceptor.clone(), openai_chat).await;
    assert!(provider.url().starts_with("https://localhost:"));
    let tap = Tap::start(&provider.url(), &[("LLMTAP_UPSTREAM_CA_FILE", ca.pem())]).await;

    let got = post(&tap.url(CHAT), &chat_request(false), &[]).await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.body, fixture("openai_chat/plain.json"));

    let got_stream = post(&tap.url(CHAT), &chat_request(true), &[]).await;
    assert_eq!(got_stream.status, 200);
    assert_eq!(
        got_stream.body,
        fixture("openai_chat/stream_include_usage.sse"),
        "the stream arrives byte for byte"
    );

    let seen = provider.seen();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(path_of(s), CHAT);
        assert_eq!(s.headers["authorization"], AUTH);
        assert_eq!(s.version, Version::HTTP_2, "ALPN picked h2 upstream");
    }
    assert_eq!(seen[0].body, chat_request(false));
    assert_eq!(seen[1].body, chat_request(true));

    let span = tap.span(&got.trace_id()).await;
    assert_eq!(span.status_code(), 1, "{}", span.status_message());
    assert_eq!(span.int("http.response.status_code"), Some(200));
    assert_eq!(
        span.json("mlflow.spanOutputs").unwrap(),
        serde_json::from_slice::<Value>(&got.body).unwrap()
    );
    let span = tap.span(&got_stream.trace_id()).await;
    assert_eq!(span.status_code(), 1, "{}", span.status_message());
    assert!(
        span.json("mlflow.chat.tokenUsage").is_some(),
        "the streamed trace has usage"
    );
}

#[tokio::test]
async fn routes_trust_the_upstream_ca_file_too() {
    let ca = TestCa::new();
    let provider = FakeProvider::start_tls(ca.acceptor.clone(), openai_chat).await;
    // The default upstream is never reached; the route goes to the provider
    // by IP address (the certificate's IP SAN).
    let route = RouteConfig {
        prefix: Some("/secure".into()),
        host: None,
        upstream: format!("https://127.0.0.1:{}", provider.addr.port())
            .parse()
            .unwrap(),
        strip_prefix: true,
        credential: None,
    };
    let tap = Tap::start_with(
        "http://127.0.0.1:9",
        &[("LLMTAP_UPSTREAM_CA_FILE", ca.pem())],
        |cfg| cfg.routes.push(route),
    )
    .await;

    let got = post(
        &tap.url(&format!("/secure{CHAT}")),
        &chat_request(false),
        &[],
    )
    .await;
    assert_eq!(got.status, 200, "{}", String::from_utf8_lossy(&got.body));
    assert_eq!(got.body, fixture("openai_chat/plain.json"));
    let seen = provider.seen();
    assert_eq!(path_of(&seen[0]), CHAT);
    assert_eq!(seen[0].version, Version::HTTP_2);
}

#[tokio::test]
async fn without_the_ca_the_call_is_a_502_naming_the_certificate() {
    let ca = TestCa::new();
    let other_ca = TestCa::new();
    let provider = FakeProvider::start_tls(ca.acceptor.clone(), openai_chat).await;

    // No extra CA at all, then the wrong one: neither trusts the provider.
    for env in [vec![], vec![("LLMTAP_UPSTREAM_CA_FILE", other_ca.pem())]] {
        let tap = Tap::start(&provider.url(), &env).await;
        let got = post(&tap.url(CHAT), &chat_request(false), &[]).await;
        assert_eq!(got.status, 502, "{env:?}");
        assert_eq!(got.headers["content-type"], "application/json");
        let v: Value = serde_json::from_slice(&got.body).unwrap();
        assert_eq!(v["error"]["type"], "llmtap_upstream_error");
        let message = v["error"]["message"].as_str().unwrap();
        assert!(
            message.contains("localhost") && message.contains("certificate"),
            "{message}"
        );

        let span = tap.span(&got.trace_id()).await;
        assert_eq!(span.status_code(), 2);
        assert!(
            span.status_message().contains("certificate"),
            "{}",
            span.status_message()
        );
        assert_eq!(span.int("http.response.status_code"), Some(502));
    }
    assert!(provider.seen().is_empty(), "no request got through");
}

/// The MLflow sink over TLS. The receiver is a fake (the real MLflow server
/// of tests/mlflow_e2e.rs speaks plain http): it answers the experiment
/// lookup and `POST /v1/traces` and nothing more, which is all this test
/// needs — it checks only that the sink's connection trusts
/// MLFLOW_TRACKING_SERVER_CERT_PATH and that spans arrive over it.
#[tokio::test]
async fn mlflow_sink_over_https_trusts_the_server_cert_path() {
    let ca = TestCa::new();
    let receiver = FakeProvider::start_tls(ca.acceptor.clone(), |seen| {
        match (seen.method.as_str(), path_of(seen).as_str()) {
            ("GET", "/api/2.0/mlflow/experiments/get-by-name") => Reply::json(
                200,
                json!({"experiment": {"experiment_id": "7", "name": "llmtap"}}).to_string(),
            ),
            // An empty ExportTraceServiceResponse.
            ("POST", "/v1/traces") => {
                Reply::json(200, "").header("content-type", "application/x-protobuf")
            }
            _ => Reply::json(404, r#"{"error_code":"ENDPOINT_NOT_FOUND"}"#),
        }
    })
    .await;
    let provider = FakeProvider::start(openai_chat).await;
    let tap = Tap::start(
        &provider.url(),
        &[
            ("MLFLOW_TRACKING_URI", &receiver.url()),
            ("MLFLOW_TRACKING_SERVER_CERT_PATH", ca.pem()),
        ],
    )
    .await;

    let got = post(&tap.url(CHAT), &chat_request(false), &[]).await;
    assert_eq!(got.status, 200);
    let want = got.trace_id()[3..].to_string();

    let mut exported = None;
    for _ in 0..500 {
        exported = receiver
            .seen()
            .into_iter()
            .find(|s| path_of(s) == "/v1/traces");
        if exported.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let exported = exported.expect("spans exported to the https receiver");
    assert_eq!(exported.version, Version::HTTP_2);
    assert_eq!(exported.headers["x-mlflow-experiment-id"], "7");
    assert_eq!(exported.headers["content-encoding"], "gzip");
    let trace_ids: Vec<String> = tap::otlp_request(&exported.body)
        .resource_spans
        .iter()
        .flat_map(|rs| &rs.scope_spans)
        .flat_map(|ss| &ss.spans)
        .map(|s| s.trace_id.iter().map(|b| format!("{b:02x}")).collect())
        .collect();
    assert_eq!(trace_ids, vec![want]);
    assert_eq!(
        path_of(&receiver.seen()[0]),
        "/api/2.0/mlflow/experiments/get-by-name",
        "the experiment lookup went over the same TLS client"
    );
}
