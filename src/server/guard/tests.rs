use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const T: Timeouts = Timeouts {
    header_read: Duration::from_secs(10),
    keepalive: Duration::from_secs(75),
    client_write: Duration::from_secs(60),
};

fn state(accepted: Instant) -> State {
    State::new(accepted)
}

#[tokio::test(start_paused = true)]
async fn read_deadline_follows_the_connection_s_phase() {
    let t0 = Instant::now();
    let mut s = state(t0);
    assert_eq!(
        s.read_deadline(&T),
        Some((t0 + T.header_read, Timeout::HeaderRead)),
        "a new connection has header_read_timeout for its first head"
    );
    s.in_flight = 1;
    assert_eq!(s.read_deadline(&T), None, "no read limit while busy");
    s.in_flight = 0;
    let idle = t0 + Duration::from_secs(30);
    s.idle_since = Some(idle);
    assert_eq!(
        s.read_deadline(&T),
        Some((idle + T.keepalive, Timeout::KeepAlive))
    );
    let first = idle + Duration::from_secs(50);
    s.first_byte = Some(first);
    assert_eq!(
        s.read_deadline(&T),
        Some((first + T.header_read, Timeout::HeaderRead)),
        "a started head gets header_read_timeout from its first byte"
    );
    s.h2 = true;
    assert_eq!(
        s.read_deadline(&T),
        Some((idle + T.keepalive, Timeout::KeepAlive)),
        "HTTP/2 frames between requests do not shorten the idle limit"
    );
}

#[tokio::test(start_paused = true)]
async fn a_silent_new_connection_fails_after_the_header_read_timeout() {
    let (client, server) = tokio::io::duplex(1024);
    let clock = Clock::new(Instant::now());
    let mut io = Guarded::new(server, clock.clone(), T);
    let started = Instant::now();
    let mut buf = [0u8; 16];
    let err = io.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert_eq!(started.elapsed(), T.header_read);
    assert_eq!(clock.fired(), Some(Timeout::HeaderRead));
    drop(client);
}

#[tokio::test(start_paused = true)]
async fn an_idle_kept_alive_connection_gets_the_keepalive_timeout() {
    let (mut client, server) = tokio::io::duplex(1024);
    let clock = Clock::new(Instant::now());
    let mut io = Guarded::new(server, clock.clone(), T);
    drop(clock.request_started(false)); // one request served
    let idle = Instant::now();
    tokio::time::sleep(Duration::from_secs(70)).await;
    client.write_all(b"GET / HT").await.unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(io.read(&mut buf).await.unwrap(), 8);
    // The head started at idle + 70 s: it has until idle + 80 s, past the
    // keep-alive limit.
    let err = io.read(&mut buf).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert_eq!(clock.fired(), Some(Timeout::HeaderRead));
    assert_eq!(idle.elapsed(), Duration::from_secs(80));
}

#[tokio::test(start_paused = true)]
async fn the_end_of_the_last_request_starts_the_idle_limit_for_a_parked_reader() {
    let (_client, server) = tokio::io::duplex(1024);
    let clock = Clock::new(Instant::now());
    let mut io = Guarded::new(server, clock.clone(), T);
    let busy = clock.request_started(true);
    let read = tokio::spawn(async move {
        let mut buf = [0u8; 16];
        io.read(&mut buf).await
    });
    tokio::time::sleep(Duration::from_secs(600)).await;
    assert!(!read.is_finished(), "no read limit while a stream is open");
    let ended = Instant::now();
    drop(busy);
    let err = read.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert_eq!(ended.elapsed(), T.keepalive);
    assert_eq!(clock.fired(), Some(Timeout::KeepAlive));
}

#[tokio::test(start_paused = true)]
async fn a_write_the_client_never_reads_fails_after_the_write_timeout() {
    let (client, server) = tokio::io::duplex(64);
    let clock = Clock::new(Instant::now());
    let mut io = Guarded::new(server, clock.clone(), T);
    let _busy = clock.request_started(false);
    let started = Instant::now();
    let err = io.write_all(&[b'x'; 1024]).await.unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert_eq!(started.elapsed(), T.client_write);
    assert_eq!(clock.fired(), Some(Timeout::ClientWrite));
    let again = io.write(b"y").await.unwrap_err();
    assert_eq!(
        again.kind(),
        io::ErrorKind::TimedOut,
        "an expired socket stays closed"
    );
    drop(client);
}

#[tokio::test(start_paused = true)]
async fn a_slow_reader_that_keeps_reading_is_not_cut() {
    let (mut client, server) = tokio::io::duplex(64);
    let clock = Clock::new(Instant::now());
    let mut io = Guarded::new(server, clock.clone(), T);
    let _busy = clock.request_started(false);
    let reader = tokio::spawn(async move {
        let mut got = 0;
        let mut buf = [0u8; 64];
        while got < 1024 {
            // Each read comes well within the limit; the total is longer.
            tokio::time::sleep(Duration::from_secs(30)).await;
            got += client.read(&mut buf).await.unwrap();
        }
        got
    });
    io.write_all(&[b'x'; 1024]).await.unwrap();
    assert_eq!(reader.await.unwrap(), 1024);
    assert_eq!(clock.fired(), None);
}

#[tokio::test(start_paused = true)]
async fn an_http2_body_not_asked_for_its_next_frame_closes_the_connection() {
    use http_body_util::{BodyExt, StreamBody};
    let (_client, server) = tokio::io::duplex(1024);
    let clock = Clock::new(Instant::now());
    let mut io = Guarded::new(server, clock.clone(), T);
    let frames = (0..3).map(|_| Ok::<_, std::convert::Infallible>(Frame::data(Bytes::from("x"))));
    let body = StreamBody::new(futures_util::stream::iter(frames.collect::<Vec<_>>()));
    let mut body = Tracked::watched(body, clock.request_started(true), T);
    let started = Instant::now();
    let read = tokio::spawn(async move {
        let mut buf = [0u8; 16];
        io.read(&mut buf).await
    });
    body.frame().await.unwrap().unwrap();
    // Asked for the next frame within the limit: the client is reading.
    tokio::time::sleep(Duration::from_secs(30)).await;
    body.frame().await.unwrap().unwrap();
    // Then never again (the client's window stays shut).
    let err = read.await.unwrap().unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::TimedOut);
    assert_eq!(started.elapsed(), Duration::from_secs(30) + T.client_write);
    assert_eq!(clock.fired(), Some(Timeout::ClientWrite));
}

#[tokio::test(start_paused = true)]
async fn an_http2_body_waiting_on_its_upstream_is_not_a_stall() {
    let (_client, server) = tokio::io::duplex(1024);
    let clock = Clock::new(Instant::now());
    let mut io = Guarded::new(server, clock.clone(), T);
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(1);
    let stream = futures_util::stream::unfold(rx, |mut rx| async move {
        let b = rx.recv().await?;
        Some((Ok::<_, std::convert::Infallible>(Frame::data(b)), rx))
    });
    let body = http_body_util::StreamBody::new(Box::pin(stream));
    let body = Tracked::watched(body, clock.request_started(true), T);
    let read = tokio::spawn(async move {
        let mut buf = [0u8; 16];
        io.read(&mut buf).await
    });
    let pump = tokio::spawn(async move {
        use http_body_util::BodyExt;
        let mut body = body;
        let mut n = 0;
        while let Some(f) = body.frame().await {
            f.unwrap();
            n += 1;
        }
        n
    });
    // The upstream sends a frame every 50 s for 10 minutes: the body is
    // always asked for its next frame at once.
    for _ in 0..12 {
        tx.send(Bytes::from("x")).await.unwrap();
        tokio::time::sleep(Duration::from_secs(50)).await;
    }
    assert!(!read.is_finished(), "no limit fired: {:?}", clock.fired());
    drop(tx);
    assert_eq!(pump.await.unwrap(), 12);
    read.abort();
}
