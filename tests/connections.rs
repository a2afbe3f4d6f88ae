//! Client connections are bounded and time out (issue 8): thousands of
//! half-sent requests do not stop real calls or `/healthz`, a listener at its
//! limit makes new connections wait instead of failing, idle kept-alive
//! connections close, and a client that stops reading is cut off with its
//! call traced as a client disconnect.
//!
//! The flood tests run the release-shaped binary (`Bin`); the write-timeout
//! test runs llmtap in-process to reach its trace files and metrics.

#[path = "support/bin.rs"]
mod bin;
#[path = "support/fake_provider.rs"]
mod fake_provider;
#[path = "support/tap.rs"]
mod tap;

use std::net::SocketAddr;
use std::time::Duration;

use bin::{Bin, Keep, Launch};
use bytes::Bytes;
use fake_provider::{FakeProvider, Reply, Step};
use llmtap::metrics::Timeout;
use tap::Tap;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

const CHAT: &str = "/v1/chat/completions";
/// A request head cut before its end, as a slowloris client sends it.
const HALF_HEAD: &[u8] = b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\n";
/// The longest any single step may take before the test fails.
const BOUND: Duration = Duration::from_secs(20);

/// The llmtap binary: no config file, the spool under its dir, the last
/// 200 log lines.
const LAUNCH: Launch = Launch {
    config: None,
    keep: Keep::Last(200),
    ..Launch::DEFAULT
};

/// The llmtap binary in a temp dir, against [`provider`], with `env`.
async fn start_bin(env: &[(&str, &str)]) -> (FakeProvider, tempfile::TempDir, Bin) {
    let provider = provider().await;
    let dir = tempfile::tempdir().unwrap();
    let bin = LAUNCH.start(&provider.url(), dir.path(), env).await;
    (provider, dir, bin)
}

/// Open file descriptors of the process (sockets included).
fn open_fds(bin: &Bin) -> usize {
    bin.open_fds().expect("/proc/PID/fd of llmtap")
}

/// One sample of `/metrics` (a fresh connection).
async fn metric(bin: &Bin, line_prefix: &str) -> f64 {
    let text = get(bin.admin, "/metrics").await.1;
    metric_in(&text, line_prefix)
}

fn metric_in(text: &str, line_prefix: &str) -> f64 {
    text.lines()
        .find_map(|l| l.strip_prefix(line_prefix)?.trim().parse().ok())
        .unwrap_or_else(|| panic!("no {line_prefix} in\n{text}"))
}

/// The status line and body of a one-shot HTTP/1.1 request over raw TCP
/// (`Connection: close`), within [`BOUND`].
async fn exchange(addr: SocketAddr, request: Vec<u8>) -> (String, String) {
    let run = async {
        let mut s = TcpStream::connect(addr).await.expect("connect");
        s.write_all(&request).await.expect("send");
        let mut out = Vec::new();
        s.read_to_end(&mut out).await.expect("read");
        let text = String::from_utf8_lossy(&out).to_string();
        let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
        (
            head.lines().next().unwrap_or("").to_string(),
            body.to_string(),
        )
    };
    timeout(BOUND, run)
        .await
        .expect("an answer within the bound")
}

async fn get(addr: SocketAddr, path: &str) -> (String, String) {
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    exchange(addr, req.into_bytes()).await
}

/// A chat call with a Content-Length response, whose body must come back
/// byte for byte.
async fn chat(addr: SocketAddr) -> (String, String) {
    let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
    let mut req = format!(
        "POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    exchange(addr, req).await
}

const ANSWER: &str = r#"{"id":"c1","object":"chat.completion","model":"m","choices":[{"index":0,"message":{"role":"assistant","content":"hello"},"finish_reason":"stop"}],"usage":{"prompt_tokens":1,"completion_tokens":1,"total_tokens":2}}"#;

async fn provider() -> FakeProvider {
    FakeProvider::start(|_| Reply::json(200, ANSWER)).await
}

/// `n` connections that each sent `HALF_HEAD` and wait, opened in batches so
/// the listen backlog never overflows.
async fn half_requests(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut out = Vec::with_capacity(n);
    for chunk in (0..n).collect::<Vec<_>>().chunks(500) {
        let batch = chunk.iter().map(|_| async move {
            let mut s = TcpStream::connect(addr).await.expect("connect");
            s.write_all(HALF_HEAD).await.expect("half a head");
            s
        });
        out.extend(futures_util::future::join_all(batch).await);
    }
    out
}

/// True once the peer closed `s` (EOF or reset), within [`BOUND`].
async fn closed_by_peer(s: &mut TcpStream) -> bool {
    let mut buf = [0u8; 4096];
    loop {
        match timeout(BOUND, s.read(&mut buf)).await {
            Err(_) => return false,
            Ok(Ok(0)) | Ok(Err(_)) => return true,
            Ok(Ok(_)) => continue, // a 408 or similar before the close
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousands_of_half_requests_leave_real_calls_and_healthz_answering() {
    let (_provider, _dir, bin) = start_bin(&[
        ("LLMTAP_MAX_CONNECTIONS", "4000"),
        // Longer than opening the flood takes on a loaded machine (~6 s
        // on 2 busy cores), so the flood is held while the calls run.
        ("LLMTAP_HEADER_READ_TIMEOUT", "15s"),
    ])
    .await;
    let (fds_at_rest, rss_at_rest) = (open_fds(&bin), bin.rss());
    let t = std::time::Instant::now();
    let mut flood = half_requests(bin.addr, 3000).await;
    let mut admin_flood = half_requests(bin.admin, 40).await;
    eprintln!("flood opened in {:?}", t.elapsed());

    let (status, body) = chat(bin.addr).await;
    assert_eq!(status, "HTTP/1.1 200 OK", "{}", bin.log());
    assert_eq!(body, ANSWER, "the provider's exact bytes");
    let (status, body) = get(bin.admin, "/healthz").await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 200 OK", "ok\n")
    );
    let open = metric(&bin, "llmtap_connections_open{listener=\"proxy\"}").await;
    assert!(open >= 2000.0, "the flood is held open: {open}");
    let (fds, rss) = (open_fds(&bin), bin.rss());
    eprintln!(
        "{open} connections open: {fds} fds ({fds_at_rest} at rest), RSS {} KiB ({} KiB at rest)",
        rss >> 10,
        rss_at_rest >> 10
    );
    assert!(
        rss < rss_at_rest + open as u64 * (64 << 10),
        "a waiting half request costs well under 64 KiB"
    );
    assert!(
        fds < fds_at_rest + 3000 + 40 + 100,
        "a descriptor per connection, no more: {fds_at_rest} at rest, {fds} under the flood"
    );

    // Every half request is closed by llmtap after the header-read timeout.
    for s in flood.iter_mut().chain(admin_flood.iter_mut()) {
        assert!(
            closed_by_peer(s).await,
            "a half request outlived its timeout"
        );
    }
    let timed_out = metric(
        &bin,
        "llmtap_connections_timed_out_total{listener=\"proxy\",reason=\"header_read\"}",
    )
    .await;
    assert!(timed_out >= 3000.0, "{timed_out}");
    let admin_timed_out = metric(
        &bin,
        "llmtap_connections_timed_out_total{listener=\"admin\",reason=\"header_read\"}",
    )
    .await;
    assert!(admin_timed_out >= 40.0, "{admin_timed_out}");
    drop(flood);
    drop(admin_flood);
    let (status, body) = chat(bin.addr).await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 200 OK", ANSWER)
    );
    let fds = open_fds(&bin);
    assert!(
        fds < fds_at_rest + 50,
        "descriptors return to rest: {fds_at_rest} then {fds}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn at_the_limit_new_connections_wait_and_are_served_once_slots_free() {
    let (_provider, _dir, bin) = start_bin(&[
        ("LLMTAP_MAX_CONNECTIONS", "20"),
        ("LLMTAP_ADMIN_MAX_CONNECTIONS", "4"),
        ("LLMTAP_HEADER_READ_TIMEOUT", "2s"),
    ])
    .await;
    let mut flood = half_requests(bin.addr, 30).await;
    let mut admin_flood = half_requests(bin.admin, 6).await;
    // Both listeners are full: a real call and a probe wait in the backlog
    // (not refused) until the flood's first connections time out.
    let (status, body) = chat(bin.addr).await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 200 OK", ANSWER)
    );
    let (status, _) = get(bin.admin, "/healthz").await;
    assert_eq!(status, "HTTP/1.1 200 OK");
    for s in flood.iter_mut().chain(admin_flood.iter_mut()) {
        assert!(
            closed_by_peer(s).await,
            "every waiting connection was served"
        );
    }
    let text = get(bin.admin, "/metrics").await.1;
    assert_eq!(
        metric_in(&text, "llmtap_connections_max{listener=\"proxy\"}"),
        20.0
    );
    assert!(
        metric_in(
            &text,
            "llmtap_connections_at_limit_total{listener=\"proxy\"}"
        ) >= 1.0
    );
    assert!(
        metric_in(
            &text,
            "llmtap_connections_at_limit_total{listener=\"admin\"}"
        ) >= 1.0
    );
    let accepted = metric_in(
        &text,
        "llmtap_connections_accepted_total{listener=\"proxy\"}",
    );
    assert!(accepted >= 31.0, "no connection was refused: {accepted}");
    assert_eq!(
        metric_in(
            &text,
            "llmtap_connections_timed_out_total{listener=\"proxy\",reason=\"header_read\"}"
        ),
        30.0
    );
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_the_keepalive_timeout() {
    let provider = provider().await;
    let tap = Tap::start(
        &provider.url(),
        &[
            ("LLMTAP_KEEPALIVE_TIMEOUT", "1500ms"),
            ("LLMTAP_HEADER_READ_TIMEOUT", "10s"),
        ],
    )
    .await;
    let mut s = TcpStream::connect(tap.running.admin_addr).await.unwrap();
    let mut buf = vec![0u8; 65536];
    for _ in 0..2 {
        // Two requests on one connection: the first leaves it kept alive.
        s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let n = timeout(BOUND, s.read(&mut buf)).await.unwrap().unwrap();
        let text = String::from_utf8_lossy(&buf[..n]).to_string();
        assert!(
            text.starts_with("HTTP/1.1 200 OK") && text.ends_with("ok\n"),
            "{text}"
        );
    }
    assert!(
        closed_by_peer(&mut s).await,
        "the idle connection is closed"
    );
    let admin = &tap.running.metrics.connections.admin;
    assert_eq!(admin.timed_out_count(Timeout::KeepAlive), 1);
    assert_eq!(admin.timed_out_count(Timeout::HeaderRead), 0);
    stop(tap).await;
}

/// A streamed answer far larger than the socket buffers between llmtap and
/// a client that never reads it.
fn huge_stream() -> Reply {
    let event = Bytes::from(format!(
        "data: {{\"id\":\"c1\",\"object\":\"chat.completion.chunk\",\"model\":\"m\",\"choices\":[{{\"index\":0,\"delta\":{{\"content\":\"{}\"}}}}]}}\n\n",
        "x".repeat(64 << 10)
    ));
    let mut reply = Reply::sse(b"");
    reply.steps = (0..1024).map(|_| Step::Send(event.clone())).collect();
    reply
}

/// An in-process llmtap with a 1 s client write timeout in front of a
/// provider answering [`huge_stream`].
async fn huge_stream_tap() -> (FakeProvider, Tap) {
    let provider = FakeProvider::start(|_| huge_stream()).await;
    let tap = Tap::start(
        &provider.url(),
        &[
            ("LLMTAP_CLIENT_WRITE_TIMEOUT", "1s"),
            ("LLMTAP_MAX_CAPTURE_BYTES", "1MiB"),
        ],
    )
    .await;
    (provider, tap)
}

/// The span of call `trace_id`, once it ended, traced as a client
/// disconnect after the one client write timeout.
async fn cut_off_span(tap: &Tap, trace_id: &str) -> tap::Span {
    let span = timeout(BOUND, tap.span(trace_id))
        .await
        .expect("the call ends");
    assert!(
        span.status_message().contains("client disconnected"),
        "{}",
        span.status_message()
    );
    let proxy = &tap.running.metrics.connections.proxy;
    assert_eq!(proxy.timed_out_count(Timeout::ClientWrite), 1);
    span
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_stops_reading_is_cut_off_and_traced_as_disconnected() {
    let (_provider, tap) = huge_stream_tap().await;
    let body = br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#;
    let mut req = format!(
        "POST {CHAT} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n",
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    let mut s = TcpStream::connect(tap.running.addr).await.unwrap();
    s.write_all(&req).await.unwrap();
    // Read the response head only, then stop reading.
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        timeout(BOUND, s.read_exact(&mut byte))
            .await
            .unwrap()
            .unwrap();
        head.push(byte[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let trace_id = head
        .lines()
        .find_map(|l| l.strip_prefix("x-llmtap-trace-id: "))
        .unwrap_or_else(|| panic!("no trace id in {head}"))
        .to_string();

    let span = cut_off_span(&tap, &trace_id).await;
    assert_eq!(span.status_code(), 2);
    let proxy = &tap.running.metrics.connections.proxy;
    assert_eq!(proxy.open(), 0, "the connection and what it held are gone");
    // The capture stopped at its cap, far short of what was sent.
    assert_eq!(span.bool("llmtap.response.truncated"), Some(true));
    drop(s);
    stop(tap).await;
}

/// Stops an in-process llmtap while the runtime still runs. Merely dropping
/// a [`Tap`] at the end of a test races the runtime's teardown: the
/// pipeline's shutdown may start joining its parse workers on a blocking
/// thread just as the runtime cancels the journal writer they wait for,
/// and the test never ends.
async fn stop(tap: Tap) {
    let Tap { running, _tmp, .. } = tap;
    timeout(BOUND, running.shutdown())
        .await
        .expect("llmtap stops within the bound");
}

/// An HTTP/2 (prior knowledge) connection of its own: the request sender and
/// the connection's task, which ends when llmtap closes the connection.
async fn h2_connection(
    addr: SocketAddr,
) -> (
    hyper::client::conn::http2::SendRequest<http_body_util::Full<Bytes>>,
    tokio::task::JoinHandle<()>,
) {
    let stream = TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::Builder::new(hyper_util::rt::TokioExecutor::new())
            .handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .expect("h2c handshake");
    let task = tokio::spawn(async move {
        let _ = conn.await;
    });
    (sender, task)
}

#[tokio::test]
async fn an_idle_http2_connection_is_closed_after_the_keepalive_timeout() {
    use http_body_util::BodyExt;
    let provider = provider().await;
    let tap = Tap::start(&provider.url(), &[("LLMTAP_KEEPALIVE_TIMEOUT", "1500ms")]).await;
    let (mut sender, conn) = h2_connection(tap.running.addr).await;
    let req = http::Request::post(format!("http://{}{CHAT}", tap.running.addr))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from_static(
            br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap();
    let resp = sender.send_request(req).await.expect("an answer over h2");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body, ANSWER.as_bytes());
    timeout(BOUND, conn)
        .await
        .expect("llmtap closes the idle connection")
        .unwrap();
    let proxy = &tap.running.metrics.connections.proxy;
    assert_eq!(proxy.timed_out_count(Timeout::KeepAlive), 1);
    stop(tap).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_http2_client_that_stops_reading_one_stream_is_cut_off() {
    let (_provider, tap) = huge_stream_tap().await;
    let (mut sender, conn) = h2_connection(tap.running.addr).await;
    let req = http::Request::post(format!("http://{}{CHAT}", tap.running.addr))
        .header("content-type", "application/json")
        .body(http_body_util::Full::new(Bytes::from_static(
            br#"{"model":"m","stream":true,"stream_options":{"include_usage":true},"messages":[{"role":"user","content":"hi"}]}"#,
        )))
        .unwrap();
    let resp = sender.send_request(req).await.expect("a response head");
    let trace_id = resp.headers()["x-llmtap-trace-id"]
        .to_str()
        .unwrap()
        .to_string();
    // The body is never read: the stream's window stays shut after 64 KiB,
    // while the socket itself keeps being read by the connection task.
    cut_off_span(&tap, &trace_id).await;
    timeout(BOUND, conn)
        .await
        .expect("the connection is closed")
        .unwrap();
    drop(resp);
    stop(tap).await;
}

#[tokio::test]
async fn a_request_head_is_capped_at_64_kib() {
    let provider = provider().await;
    let tap = Tap::start(&provider.url(), &[]).await;
    let head_with = |filler: usize| {
        let body = br#"{"model":"m","messages":[{"role":"user","content":"hi"}]}"#;
        let mut req = format!(
            "POST {CHAT} HTTP/1.1\r\nHost: x\r\nX-Filler: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            "a".repeat(filler),
            body.len()
        )
        .into_bytes();
        req.extend_from_slice(body);
        req
    };
    let (status, body) = exchange(tap.running.addr, head_with(32 << 10)).await;
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 200 OK", ANSWER)
    );
    let (status, _) = exchange(tap.running.addr, head_with(80 << 10)).await;
    assert_eq!(status, "HTTP/1.1 431 Request Header Fields Too Large");
    stop(tap).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn out_of_descriptors_both_listeners_back_off_instead_of_spinning() {
    use rustix::process::{prlimit, Pid, Resource, Rlimit};
    let (_provider, _dir, bin) = start_bin(&[]).await;
    // Leave llmtap 16 descriptors more than it uses at rest.
    let limit = open_fds(&bin) as u64 + 16;
    let pid = Pid::from_raw(bin.pid() as i32).unwrap();
    let tight = Rlimit {
        current: Some(limit),
        maximum: Some(limit),
    };
    prlimit(Some(pid), Resource::Nofile, tight).expect("lower llmtap's open-file limit");
    // Each listener gets more waiting clients than there are free
    // descriptors, so both run out whichever accepts first (with only a
    // few probes, the admin loop could accept them all and never fail).
    let mut flood = half_requests(bin.addr, 40).await;
    let mut probes = half_requests(bin.admin, 40).await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = bin.cpu_ticks();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let used = bin.cpu_ticks() - before;
    // Spinning on EMFILE is a whole core: 200 ticks in 2 s.
    eprintln!("out of descriptors: {used} ticks of CPU in 2 s");
    assert!(
        used < 40,
        "{used} ticks of CPU in 2 s while out of descriptors"
    );

    // The clients go away: descriptors come back, the waiting connections
    // are accepted (and closed), real calls and probes are served again.
    for s in flood.iter_mut().chain(probes.iter_mut()) {
        s.shutdown().await.ok();
    }
    drop(flood);
    drop(probes);
    // The connections still in the listen backlog are accepted (and found
    // closed) in turn; until then a call may still meet EMFILE on its
    // upstream connect, and is answered 502 for it. Within a bound, calls
    // are served again.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let (status, body) = loop {
        let (status, body) = chat(bin.addr).await;
        if status == "HTTP/1.1 200 OK" || std::time::Instant::now() > deadline {
            break (status, body);
        }
        assert!(
            status == "HTTP/1.1 502 Bad Gateway" && body.contains("Too many open files"),
            "only descriptor exhaustion may fail a call here: {status} {body}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(
        (status.as_str(), body.as_str()),
        ("HTTP/1.1 200 OK", ANSWER),
        "{}",
        bin.log()
    );
    let text = get(bin.admin, "/metrics").await.1;
    for listener in ["proxy", "admin"] {
        let errors = metric_in(
            &text,
            &format!("llmtap_connections_accept_errors_total{{listener=\"{listener}\"}}"),
        );
        assert!(errors >= 1.0, "{listener}: {errors} accept errors counted");
    }
    assert!(
        bin.log().contains("accept failed; backing off"),
        "a warning says so"
    );
}
