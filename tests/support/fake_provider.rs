//! An in-process fake LLM provider on 127.0.0.1:0. Each test scripts the
//! replies; every request it receives is recorded byte for byte. Replies are
//! sent frame by frame with the pacing a test asks for, so streaming
//! behaviour (and its absence of buffering) can be observed. Plain http by
//! default; [`FakeProvider::start_tls`] serves https instead.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::{HeaderMap, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::{Frame, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, Semaphore};
use tokio_rustls::TlsAcceptor;

/// A request as the provider saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub uri: String,
    /// HTTP/1.1 or HTTP/2, as the connection spoke it.
    pub version: http::Version,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// One step of a scripted reply body.
#[derive(Clone)]
pub enum Step {
    /// Send these bytes as one frame.
    Send(Bytes),
    /// Pause.
    Sleep(Duration),
    /// Wait until the test calls [`FakeProvider::release`].
    Gate,
    /// Abort the connection (the body ends with an error: a reset mid-stream).
    Reset,
    /// Stop sending but keep the connection open for a long time.
    Hang,
}

/// A scripted reply.
#[derive(Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub steps: Vec<Step>,
    /// Delay before the response head is sent.
    pub head_delay: Duration,
}

impl Reply {
    pub fn json(status: u16, body: impl Into<Bytes>) -> Reply {
        let body = body.into();
        Reply {
            status,
            headers: vec![
                ("content-type".into(), "application/json".into()),
                ("content-length".into(), body.len().to_string()),
                ("x-request-id".into(), "req_fake123".into()),
            ],
            steps: vec![Step::Send(body)],
            head_delay: Duration::ZERO,
        }
    }

    /// An SSE stream, one frame per event of `body` (split at blank lines).
    pub fn sse(body: &[u8]) -> Reply {
        Reply {
            status: 200,
            headers: vec![
                (
                    "content-type".into(),
                    "text/event-stream; charset=utf-8".into(),
                ),
                ("cache-control".into(), "no-cache".into()),
                ("x-request-id".into(), "req_fake456".into()),
            ],
            steps: split_events(body).into_iter().map(Step::Send).collect(),
            head_delay: Duration::ZERO,
        }
    }

    pub fn header(mut self, k: &str, v: &str) -> Reply {
        self.headers
            .retain(|(name, _)| !name.eq_ignore_ascii_case(k));
        self.headers.push((k.into(), v.into()));
        self
    }
}

/// Splits an SSE body after each blank line, keeping the bytes exact.
pub fn split_events(body: &[u8]) -> Vec<Bytes> {
    let mut out = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < body.len() {
        let rest = &body[i..];
        let sep = if rest.starts_with(b"\r\n\r\n") {
            4
        } else if rest.starts_with(b"\n\n") {
            2
        } else {
            0
        };
        if sep > 0 {
            out.push(Bytes::copy_from_slice(&body[start..i + sep]));
            i += sep;
            start = i;
        } else {
            i += 1;
        }
    }
    if start < body.len() {
        out.push(Bytes::copy_from_slice(&body[start..]));
    }
    out
}

type Script = Arc<dyn Fn(&Seen) -> Reply + Send + Sync>;

/// The running fake provider.
pub struct FakeProvider {
    pub addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
    gate: Arc<Semaphore>,
    tls: bool,
}

impl FakeProvider {
    /// Starts a provider answering every request with `script(request)`.
    pub async fn start(script: impl Fn(&Seen) -> Reply + Send + Sync + 'static) -> FakeProvider {
        Self::start_on(None, script).await
    }

    /// The same over https: each connection's TLS handshake goes through
    /// `acceptor` (its certificate, its ALPN list) first. A failed handshake
    /// just closes the connection.
    pub async fn start_tls(
        acceptor: TlsAcceptor,
        script: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> FakeProvider {
        Self::start_on(Some(acceptor), script).await
    }

    async fn start_on(
        tls: Option<TlsAcceptor>,
        script: impl Fn(&Seen) -> Reply + Send + Sync + 'static,
    ) -> FakeProvider {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let gate = Arc::new(Semaphore::new(0));
        let script: Script = Arc::new(script);
        let (s, g, is_tls) = (seen.clone(), gate.clone(), tls.is_some());
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let (s, g, script, tls) = (s.clone(), g.clone(), script.clone(), tls.clone());
                tokio::spawn(async move {
                    match tls {
                        None => serve_connection(stream, s, g, script).await,
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                serve_connection(stream, s, g, script).await;
                            }
                        }
                    }
                });
            }
        });
        FakeProvider {
            addr,
            seen,
            gate,
            tls: is_tls,
        }
    }

    /// `http://127.0.0.1:PORT`, or `https://localhost:PORT` over TLS.
    pub fn url(&self) -> String {
        if self.tls {
            format!("https://localhost:{}", self.addr.port())
        } else {
            format!("http://{}", self.addr)
        }
    }

    /// Requests received so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// Lets one [`Step::Gate`] pass.
    pub fn release(&self) {
        self.gate.add_permits(1);
    }
}

/// HTTP/1.1 or HTTP/2 (whichever the client speaks) on one connection.
async fn serve_connection<I>(
    io: I,
    seen: Arc<Mutex<Vec<Seen>>>,
    gate: Arc<Semaphore>,
    script: Script,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let svc = service_fn(move |req| serve(req, seen.clone(), gate.clone(), script.clone()));
    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

async fn serve(
    req: Request<Incoming>,
    seen: Arc<Mutex<Vec<Seen>>>,
    gate: Arc<Semaphore>,
    script: Script,
) -> Result<Response<ChannelBody>, Infallible> {
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|c| c.to_bytes())
        .unwrap_or_default();
    let s = Seen {
        method: parts.method.to_string(),
        uri: parts.uri.to_string(),
        version: parts.version,
        headers: parts.headers,
        body,
    };
    let reply = script(&s);
    seen.lock().unwrap().push(s);
    if !reply.head_delay.is_zero() {
        tokio::time::sleep(reply.head_delay).await;
    }
    let (tx, rx) = mpsc::channel(1);
    tokio::spawn(async move {
        for step in reply.steps {
            match step {
                Step::Send(b) => {
                    if tx.send(Ok(Frame::data(b))).await.is_err() {
                        return;
                    }
                }
                Step::Sleep(d) => tokio::time::sleep(d).await,
                Step::Gate => {
                    if let Ok(p) = gate.acquire().await {
                        p.forget();
                    }
                }
                Step::Reset => {
                    let _ = tx
                        .send(Err(std::io::Error::other("reset by fake provider")))
                        .await;
                    return;
                }
                Step::Hang => {
                    tokio::time::sleep(Duration::from_secs(3600)).await;
                    return;
                }
            }
        }
    });
    let mut resp = Response::new(ChannelBody(rx));
    *resp.status_mut() = StatusCode::from_u16(reply.status).unwrap();
    for (k, v) in reply.headers {
        resp.headers_mut().append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            http::HeaderValue::from_str(&v).unwrap(),
        );
    }
    Ok(resp)
}

/// A response body fed frame by frame through a channel.
pub struct ChannelBody(mpsc::Receiver<Result<Frame<Bytes>, std::io::Error>>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        self.0.poll_recv(cx)
    }
}
