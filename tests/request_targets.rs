//! Request targets llmtap answers itself, over HTTP/1.1 (raw bytes, exactly
//! as a hostile client writes them) and h2c: `CONNECT`, `OPTIONS *` and dot
//! segments never reach the provider, and nothing walks above a base path.

#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/tap.rs"]
mod tap;

use std::net::SocketAddr;
use std::time::Duration;

use bytes::Bytes;
use fake_provider::{FakeProvider, Reply};
use http::{Method, Request};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tap::Tap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// A provider that echoes the target it got.
async fn echo() -> FakeProvider {
    FakeProvider::start(|s| Reply::json(200, format!("{{\"uri\":\"{}\"}}", s.uri))).await
}

/// Sends `head` (request line and headers, no blank line) on a fresh
/// HTTP/1.1 connection; returns the status and the whole answer.
async fn h1(addr: SocketAddr, head: &str) -> (u16, String) {
    let io = async {
        let mut s = TcpStream::connect(addr).await.unwrap();
        let req =
            format!("{head}\r\nHost: {addr}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
        s.write_all(req.as_bytes()).await.unwrap();
        let mut out = Vec::new();
        let _ = s.read_to_end(&mut out).await;
        String::from_utf8_lossy(&out).into_owned()
    };
    let text = tokio::time::timeout(Duration::from_secs(10), io)
        .await
        .expect("llmtap answers in time");
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status line in {text:?}"));
    (status, text)
}

/// One h2c (prior knowledge) request: its status, and whether llmtap itself
/// refused it; or the client's error when it refuses to send such a request.
async fn h2c(addr: SocketAddr, method: Method, uri: &str) -> Result<(u16, bool), String> {
    let io = TokioIo::new(TcpStream::connect(addr).await.unwrap());
    let (mut send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), io)
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(uri)
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let resp = tokio::time::timeout(Duration::from_secs(10), send.send_request(req))
        .await
        .expect("answer in time")
        .map_err(|e| e.to_string())?;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let refused = String::from_utf8_lossy(&body).contains("llmtap_request_refused");
    Ok((status, refused))
}

const ESCAPES: [&str; 10] = [
    "/v1/../../admin",
    "/v1/..",
    "/v1/./chat/completions",
    "/v1/%2e%2e/%2E%2e/admin",
    "/v1/%2E./admin",
    "/v1/.%2e/admin",
    "/v1/..%2F..%2Fadmin",
    "/v1/..%5C..%5Cadmin",
    "/v1/..;/admin",
    "/v1/%252e%252e/admin",
];

#[tokio::test]
async fn dot_segments_never_leave_the_base_path() {
    let provider = echo().await;
    let tap = Tap::start(&format!("{}/serving-endpoints", provider.url()), &[]).await;
    let addr = tap.running.addr;
    for path in ESCAPES {
        let (status, text) = h1(addr, &format!("POST {path} HTTP/1.1")).await;
        assert_eq!(status, 400, "{path}: {text}");
        assert!(text.contains("llmtap_request_refused"), "{path}: {text}");
        let absolute = format!("http://{addr}{path}");
        assert_eq!(
            h2c(addr, Method::POST, &absolute).await,
            Ok((400, true)),
            "h2c {path}"
        );
    }
    // hyper passes a backslash through: some upstreams read it as '/'.
    let (status, text) = h1(addr, "POST /v1\\..\\..\\admin HTTP/1.1").await;
    assert_eq!(status, 400);
    assert!(text.contains("llmtap_request_refused"), "{text}");
    assert!(provider.seen().is_empty(), "{:?}", provider.seen());

    // What is forwarded stays under the base path, dots inside names included.
    let (status, text) = h1(addr, "POST /v1/models/gpt-4.1..x HTTP/1.1").await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.contains("\"uri\":\"/serving-endpoints/v1/models/gpt-4.1..x\""),
        "{text}"
    );
    let (status, text) = h1(addr, "GET http://evil.test/admin HTTP/1.1").await;
    assert_eq!(status, 200, "{text}");
    let seen: Vec<String> = provider.seen().into_iter().map(|s| s.uri).collect();
    assert_eq!(
        seen,
        [
            "/serving-endpoints/v1/models/gpt-4.1..x",
            "/serving-endpoints/admin"
        ],
        "absolute-form stays on the configured upstream"
    );
}

#[tokio::test]
async fn a_route_base_path_is_never_escaped() {
    let default = echo().await;
    let routed = echo().await;
    let base: http::Uri = format!("{}/base", routed.url()).parse().unwrap();
    let tap = Tap::start_with(&default.url(), &[], |c| {
        c.routes = vec![llmtap::config::RouteConfig {
            prefix: Some("/r".into()),
            host: None,
            upstream: base,
            strip_prefix: true,
            credential: None,
        }];
    })
    .await;
    let addr = tap.running.addr;
    for path in [
        "/r/../admin",
        "/r/v1/../../admin",
        "/r/%2e%2e/admin",
        "/x/../r/v1",
    ] {
        assert_eq!(
            h1(addr, &format!("GET {path} HTTP/1.1")).await.0,
            400,
            "{path}"
        );
    }
    assert!(default.seen().is_empty() && routed.seen().is_empty());
    assert_eq!(h1(addr, "GET /r/v1/models HTTP/1.1").await.0, 200);
    assert_eq!(routed.seen()[0].uri, "/base/v1/models");
}

#[tokio::test]
async fn connect_is_405_and_options_asterisk_is_400_over_both_protocols() {
    let provider = echo().await;
    let tap = Tap::start(&provider.url(), &[]).await;
    let addr = tap.running.addr;

    let (status, text) = h1(addr, &format!("CONNECT {} HTTP/1.1", provider.addr)).await;
    assert_eq!(status, 405, "{text}");
    assert!(text.to_ascii_lowercase().contains("\r\nallow: "), "{text}");
    let (status, _) = h1(addr, "CONNECT /v1/chat/completions HTTP/1.1").await;
    assert_eq!(status, 405);
    let (status, text) = h1(addr, "OPTIONS * HTTP/1.1").await;
    assert_eq!(status, 400, "{text}");
    assert!(text.contains("llmtap_request_refused"), "{text}");

    // h2c: the server hands both to llmtap, which answers them itself.
    let connect = h2c(addr, Method::CONNECT, &provider.addr.to_string()).await;
    assert_eq!(connect, Ok((405, true)), "h2c CONNECT");
    assert_eq!(h2c(addr, Method::OPTIONS, "*").await, Ok((400, true)));
    assert!(provider.seen().is_empty(), "{:?}", provider.seen());

    // A CORS preflight on a path is an ordinary request: forwarded.
    let (status, _) = h1(addr, "OPTIONS /v1/chat/completions HTTP/1.1").await;
    assert_eq!(status, 200);
    let preflight = format!("http://{addr}/v1/models");
    assert_eq!(
        h2c(addr, Method::OPTIONS, &preflight).await,
        Ok((200, false))
    );
    let seen: Vec<(String, String)> = provider
        .seen()
        .into_iter()
        .map(|s| (s.method, s.uri))
        .collect();
    assert_eq!(
        seen,
        [
            ("OPTIONS".to_string(), "/v1/chat/completions".to_string()),
            ("OPTIONS".to_string(), "/v1/models".to_string())
        ]
    );
}
