//! Idle half-request connections, and clients that stop reading.

use super::*;

/// Opens `n` connections to `addr`, each sending half a request head and
/// then nothing. Connections the listener does not take within 3 s are
/// left out (a refused or backlogged connection is an allowed answer).
async fn half_requests(addr: SocketAddr, n: usize, head: &'static [u8]) -> Vec<TcpStream> {
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..n {
        tasks.spawn(async move {
            let connect = tokio::time::timeout(Duration::from_secs(3), TcpStream::connect(addr));
            let mut s = connect.await.ok()?.ok()?;
            s.write_all(head).await.ok()?;
            Some(s)
        });
    }
    let mut out = Vec::new();
    while let Some(r) = tasks.join_next().await {
        out.extend(r.unwrap());
    }
    out
}

/// How many of `conns` the peer has closed (EOF or reset) within `limit`.
async fn closed_by_peer(conns: Vec<TcpStream>, limit: Duration) -> usize {
    let mut tasks = tokio::task::JoinSet::new();
    for mut s in conns {
        tasks.spawn(async move {
            let mut buf = [0u8; 4096];
            let read = async {
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => return true,
                        Ok(_) => {} // e.g. a 408 before the close
                    }
                }
            };
            tokio::time::timeout(limit, read).await.unwrap_or(false)
        });
    }
    let mut closed = 0;
    while let Some(r) = tasks.join_next().await {
        closed += usize::from(r.unwrap());
    }
    closed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_half_request_connections_starve_nothing_and_time_out() {
    const PROXY_CONNS: usize = 3000;
    const ADMIN_CONNS: usize = 200;
    let provider = provider(|_, _| None).await;
    let dir = tempfile::tempdir().unwrap();
    let env = [
        ("LLMTAP_MAX_CONNECTIONS", "4096"),
        ("LLMTAP_ADMIN_MAX_CONNECTIONS", "512"),
        ("LLMTAP_HEADER_READ_TIMEOUT", "2s"),
    ];
    let (mut bin, idle) = start(&provider.url(), dir.path(), &env).await;
    let fds_idle = bin.fds();
    let proxy = half_requests(
        bin.addr,
        PROXY_CONNS,
        b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Le",
    )
    .await;
    let admin = half_requests(bin.admin, ADMIN_CONNS, b"GET /healthz HTTP/1.1\r\nHo").await;
    eprintln!(
        "idle connections held: {} proxy, {} admin; llmtap fds {} (idle {fds_idle})",
        proxy.len(),
        admin.len(),
        bin.fds()
    );
    eprintln!(
        "llmtap RSS with the flood held: {:.1} MiB",
        kit::mib(bin.rss())
    );
    // While they wait: real calls and /healthz answer.
    assert_serves(&mut bin, "during the idle-connection flood", SERVE_LIMIT).await;
    // And the header-read timeout closes every one of them.
    let limit = Duration::from_secs(15);
    let (n_proxy, n_admin) = (proxy.len(), admin.len());
    let closed_proxy = closed_by_peer(proxy, limit).await;
    let closed_admin = closed_by_peer(admin, limit).await;
    assert_eq!(
        (closed_proxy, closed_admin),
        (n_proxy, n_admin),
        "half-request connections closed by llmtap within {limit:?} (header-read timeout 2s), proxy and admin"
    );
    let limits = Limits::new((PROXY_CONNS + ADMIN_CONNS + 16) as u64);
    finish(
        &mut bin,
        idle,
        limits,
        &[],
        "after the idle-connection flood",
    )
    .await;
}

// ----- clients that stop reading --------------------------------------------------------------

/// Sends a chat request tagged `x-attack: big` on a socket with a small
/// receive buffer, reads the response head, and stops reading. Returns the
/// socket and the call's trace id.
async fn stalled_reader(addr: SocketAddr) -> (TcpStream, String) {
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.set_recv_buffer_size(16 * 1024).unwrap();
    let mut s = sock.connect(addr).await.expect("connect");
    let body = kit::chat_body(false);
    let head = format!(
        "POST {CHAT} HTTP/1.1\r\nHost: llmtap\r\nContent-Type: application/json\r\nAuthorization: Bearer {}\r\nx-attack: big\r\nContent-Length: {}\r\n\r\n",
        kit::SECRET_AUTH,
        body.len()
    );
    s.write_all(head.as_bytes()).await.unwrap();
    s.write_all(&body).await.unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 1024];
    while !got.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = tokio::time::timeout(SERVE_LIMIT, s.read(&mut buf))
            .await
            .expect("a response head")
            .unwrap();
        assert!(n > 0, "closed before the head");
        got.extend_from_slice(&buf[..n]);
    }
    let text = String::from_utf8_lossy(&got).to_ascii_lowercase();
    let id = text
        .lines()
        .find_map(|l| l.strip_prefix("x-llmtap-trace-id:"))
        .expect("x-llmtap-trace-id")
        .trim()
        .to_string();
    (s, id)
}

/// The `exception.type` of the span of `id` once it is in the trace files.
async fn exception_type(trace_dir: &Path, id: &str, limit: Duration) -> Option<String> {
    let hex = id.strip_prefix("tr-").unwrap();
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Some(s) = kit::spans_so_far(trace_dir)
            .into_iter()
            .find(|s| s["traceId"] == hex)
        {
            let ev = s["events"].as_array().and_then(|e| e.first()).cloned()?;
            let attrs = ev["attributes"].as_array().cloned().unwrap_or_default();
            return attrs
                .iter()
                .find(|a| a["key"] == "exception.type")
                .and_then(|a| a["value"]["stringValue"].as_str().map(str::to_string));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_that_stop_reading_stay_bounded_and_are_cut() {
    const CLIENTS: usize = 40;
    const BIG: usize = 10 * MIB as usize;
    let provider = provider(|attack, _| {
        (attack == "big").then(|| {
            let mut r = streamed("application/json", frames(BIG, b' '));
            r.headers.push(("content-length".into(), BIG.to_string()));
            r
        })
    })
    .await;
    let dir = tempfile::tempdir().unwrap();
    let env = [("LLMTAP_CLIENT_WRITE_TIMEOUT", "2s")];
    let (mut bin, idle) = start(&provider.url(), dir.path(), &env).await;
    let mut stalled = Vec::new();
    for _ in 0..CLIENTS {
        stalled.push(stalled_reader(bin.addr).await);
    }
    // Real calls go on meanwhile.
    assert_serves(&mut bin, "with 40 stalled readers", SERVE_LIMIT).await;
    let limits = Limits::new((CLIENTS + 16) as u64);
    assert_rss_bounded(&bin, idle, limits, "with 40 stalled readers");
    // Cut by the write timeout, and traced as the client's doing.
    let trace_dir = bin.dir.join("traces");
    for (_, id) in &stalled {
        let kind = exception_type(&trace_dir, id, Duration::from_secs(20)).await;
        assert_eq!(
            kind.as_deref(),
            Some("ClientDisconnected"),
            "a client that stopped reading a 10 MiB response for 2 s (client write timeout) is cut and traced so"
        );
    }
    let mut short = 0;
    for (mut s, _) in stalled {
        let mut rest = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
        short += usize::from(rest.len() < BIG);
    }
    assert_eq!(short, CLIENTS, "every stalled response was cut short");
    finish(&mut bin, idle, limits, &[], "after 40 stalled readers").await;
}
