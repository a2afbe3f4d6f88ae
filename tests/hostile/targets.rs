//! Request targets, methods and framing: dot segments, CONNECT,
//! `OPTIONS *`, oversized heads, smuggling, open-proxy attempts, malformed
//! and deeply nested bodies.

use super::*;

/// True when `path` (percent-decoded per segment) stays under `base` with
/// no `.` or `..` segment.
fn stays_under(path: &str, base: &str) -> bool {
    let path = path.split('?').next().unwrap_or("");
    let dot = |seg: &str| {
        let s = seg.to_ascii_lowercase().replace("%2e", ".");
        s == "." || s == ".."
    };
    path.starts_with(&format!("{base}/")) && !path.split('/').any(dot)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dot_segments_never_escape_the_upstream_base_path() {
    let provider = provider(|_, _| None).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut bin, idle) = start(&format!("{}/base", provider.url()), dir.path(), &[]).await;
    let body = kit::chat_body(false);
    for target in [
        "/v1/../../admin",
        "/../admin",
        "/v1/./../../../etc/passwd",
        "/v1/%2e%2e/%2e%2e/admin",
        "/v1/%2E%2E/..%2f../admin",
        "/v1/chat/completions/../../../admin?x=1",
    ] {
        let before = provider.seen().len();
        let req = format!(
            "POST {target} HTTP/1.1\r\nHost: llmtap\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        let mut raw = req.into_bytes();
        raw.extend_from_slice(&body);
        let (status, _) = kit::raw(bin.addr, raw, Duration::from_secs(10)).await;
        let seen: Vec<String> = provider.seen()[before..]
            .iter()
            .map(|s| s.uri.clone())
            .collect();
        assert!(
            status == 400 || status == 200 || status == 404,
            "{target}: answered {status}"
        );
        for uri in &seen {
            assert!(
                stays_under(uri, "/base"),
                "{target}: the provider saw {uri}, outside /base"
            );
        }
    }
    finish(
        &mut bin,
        idle,
        Limits::new(16),
        &[],
        "after dot-segment attacks",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connect_and_options_star_are_answered_by_llmtap_not_forwarded() {
    let provider = provider(|_, _| None).await;
    let dir = tempfile::tempdir().unwrap();
    let (mut bin, idle) = start(&provider.url(), dir.path(), &[]).await;
    let target = provider.addr.to_string();
    let connect = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n");
    let (status, _) = kit::raw(bin.addr, connect.into_bytes(), Duration::from_secs(10)).await;
    assert_eq!(status, 405, "CONNECT");
    let options = b"OPTIONS * HTTP/1.1\r\nHost: llmtap\r\nConnection: close\r\n\r\n".to_vec();
    let (status, _) = kit::raw(bin.addr, options, Duration::from_secs(10)).await;
    assert_eq!(status, 400, "OPTIONS *");
    assert!(
        provider.seen().is_empty(),
        "forwarded: {:?}",
        provider
            .seen()
            .iter()
            .map(|s| (&s.method, &s.uri))
            .collect::<Vec<_>>()
    );
    finish(
        &mut bin,
        idle,
        Limits::new(16),
        &[],
        "after CONNECT and OPTIONS *",
    )
    .await;
}

// ----- guarantees that held before issue 8 ----------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_truncated_and_deeply_nested_bodies_pass_exactly() {
    let deep = |n: usize| format!("{}{}", "[".repeat(n), "]".repeat(n)).into_bytes();
    let replies: Vec<(&str, Reply)> = vec![
        (
            "cut",
            Reply::sse(&tap::fixture("openai_chat/stream_cut_no_done.sse")),
        ),
        (
            "bad-json",
            Reply::json(200, &b"{\"choices\":[{\"message\":{\"content\":\"x"[..]),
        ),
        (
            "not-utf8",
            Reply::json(200, &b"{\"choices\":[{\"text\":\"\xff\xfe\xc3\x28\"}]}"[..]),
        ),
        ("deep", Reply::json(200, deep(100_000))),
    ];
    let answers = replies.clone();
    let provider = provider(move |attack, _| {
        answers
            .iter()
            .find(|(a, _)| *a == attack)
            .map(|(_, r)| r.clone())
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let (mut bin, idle) = start(&provider.url(), dir.path(), &[]).await;
    let mut ids = Vec::new();
    let requests: Vec<(&str, Vec<u8>)> = vec![
        ("cut", kit::chat_body(true)),
        (
            "bad-json",
            b"{\"model\":\"gpt-4o-mini\",\"messages\":[{\"role\":".to_vec(),
        ),
        (
            "not-utf8",
            b"{\"model\":\"m\",\"prompt\":\"\xff\xfe\xc3\x28\"}".to_vec(),
        ),
        ("deep", deep(100_000)),
    ];
    for ((attack, body), (_, reply)) in requests.into_iter().zip(&replies) {
        let got = kit::post(&bin.url(CHAT), body, &[("x-attack", attack)], SERVE_LIMIT).await;
        let want: Vec<u8> = reply
            .steps
            .iter()
            .flat_map(|s| match s {
                Step::Send(b) => b.to_vec(),
                _ => Vec::new(),
            })
            .collect();
        assert_eq!(got.status, 200, "{attack}");
        assert!(
            got.body == want,
            "{attack}: other bytes than the provider's"
        );
        ids.push(
            got.headers["x-llmtap-trace-id"]
                .to_str()
                .unwrap()
                .to_string(),
        );
    }
    kit::assert_traced(&bin, &ids, SERVE_LIMIT, "the malformed calls are traced").await;
    finish(
        &mut bin,
        idle,
        Limits::new(16),
        &[],
        "after malformed bodies",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_heads_smuggling_and_open_proxy_attempts_are_refused() {
    let provider = provider(|_, _| None).await;
    let evil = provider_elsewhere().await;
    let dir = tempfile::tempdir().unwrap();
    let (mut bin, idle) = start(&provider.url(), dir.path(), &[]).await;
    let limit = Duration::from_secs(10);

    let many = (0..200)
        .map(|i| format!("x-h{i}: v\r\n"))
        .collect::<String>();
    let req = format!("GET /v1/models HTTP/1.1\r\nHost: llmtap\r\n{many}\r\n");
    assert_eq!(
        kit::raw(bin.addr, req.into_bytes(), limit).await.0,
        431,
        "200 headers"
    );
    let big = format!(
        "GET /v1/models HTTP/1.1\r\nHost: llmtap\r\nx-big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    assert_eq!(
        kit::raw(bin.addr, big.into_bytes(), limit).await.0,
        431,
        "a 1 MiB header"
    );
    let uri = format!(
        "GET /v1/{} HTTP/1.1\r\nHost: llmtap\r\n\r\n",
        "a".repeat(70_000)
    );
    // A request head is capped at 64 KiB (`server::H1_MAX_BUF`), which a
    // 70 KB URI passes before hyper's own 64 KiB URI limit (414) applies:
    // either answer refuses it without forwarding.
    let status = kit::raw(bin.addr, uri.into_bytes(), limit).await.0;
    assert!(matches!(status, 414 | 431), "a 70 KB URI: {status}");

    // Smuggling: a second request hidden in the first one's body.
    let hidden = "GET /smuggled HTTP/1.1\r\nHost: llmtap\r\n\r\n";
    for framing in [
        format!("Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n{hidden}"),
        format!("Transfer-Encoding: chunked\r\nContent-Length: 50\r\n\r\n0\r\n\r\n{hidden}"),
        format!("Transfer-Encoding: xchunked\r\nContent-Length: 5\r\n\r\n0\r\n\r\n{hidden}"),
        format!("Content-Length: 5\r\nContent-Length: 50\r\n\r\n0\r\n\r\n{hidden}"),
    ] {
        let req = format!("POST {CHAT} HTTP/1.1\r\nHost: llmtap\r\n{framing}");
        let (mut s, mut got) = (TcpStream::connect(bin.addr).await.unwrap(), Vec::new());
        s.write_all(req.as_bytes()).await.unwrap();
        let _ = tokio::time::timeout(Duration::from_secs(3), s.read_to_end(&mut got)).await;
    }
    assert!(
        !provider.seen().iter().any(|s| s.uri.contains("smuggled")),
        "a smuggled request reached the provider"
    );

    // Open proxy: every request lands on the configured upstream.
    let host = evil.addr.to_string();
    for req in [
        format!(
            "GET http://{host}/v1/models HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
        ),
        format!("GET //{host}/v1/models HTTP/1.1\r\nHost: llmtap\r\nConnection: close\r\n\r\n"),
        format!("GET /v1/models HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"),
        format!(
            "GET /%2F%2F{host}/v1/models HTTP/1.1\r\nHost: llmtap\r\nConnection: close\r\n\r\n"
        ),
    ] {
        kit::raw(bin.addr, req.into_bytes(), limit).await;
    }
    assert!(
        evil.seen().is_empty(),
        "llmtap forwarded to a host of the client's choosing"
    );
    finish(
        &mut bin,
        idle,
        Limits::new(16),
        &[],
        "after protocol attacks",
    )
    .await;
}

/// A second server, never configured as an upstream.
async fn provider_elsewhere() -> FakeProvider {
    FakeProvider::start(|_| Reply::json(200, "{}")).await
}
