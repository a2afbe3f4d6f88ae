//! Listeners: the proxy port (HTTP/1.1 and HTTP/2 cleartext, auto-detected on
//! the same port) and the admin port, each with graceful shutdown: stop
//! accepting, let in-flight connections finish within a grace period.
//!
//! Both listeners bound what a client can hold: a connection limit
//! (`accept.rs`: at the limit new connections wait in the backlog), the
//! header-read, keep-alive and client-write timeouts (`guard.rs`), and
//! per-connection buffers capped by the protocol settings below. Per
//! connection, llmtap holds at most about:
//!
//! - HTTP/1.1: the read buffer ([`H1_MAX_BUF`], which also caps a request
//!   head: past it the answer is 431) + the write buffer (as much again, plus
//!   one frame) + the parsed head — about 200 KiB;
//! - HTTP/2: the connection receive window ([`H2_CONN_WINDOW`]) + per stream
//!   ([`H2_MAX_STREAMS`]) a send buffer ([`H2_SEND_BUF`]) and a header list
//!   ([`H2_MAX_HEADER_LIST`]) — about 3.6 MiB;
//!
//! beside the captured bodies, which the capture settings bound.

mod accept;
mod fd_limit;
mod guard;

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::{Request, Response, Version};
use http_body::Body;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;

pub use accept::{Backoff, Throttle};
pub use fd_limit::prepare as prepare_fd_limit;
pub use guard::Timeouts;

use crate::admin::Admin;
use crate::config::ConnectionSettings;
use crate::forward::Proxy;
use crate::metrics::{Listener, Metrics};
use accept::{Accepted, Acceptor};
use guard::{Clock, Guarded, Tracked};

/// HTTP/1 read buffer cap, and so the largest request head.
pub const H1_MAX_BUF: usize = 64 << 10;
/// HTTP/2 streams open at once on one connection.
pub const H2_MAX_STREAMS: u32 = 32;
/// HTTP/2 request body bytes a connection may have in flight to llmtap.
pub const H2_CONN_WINDOW: u32 = 1 << 20;
/// The same per stream.
pub const H2_STREAM_WINDOW: u32 = 256 << 10;
/// HTTP/2 response bytes buffered per stream ahead of the client's window.
pub const H2_SEND_BUF: usize = 64 << 10;
/// HTTP/2 request header list cap.
pub const H2_MAX_HEADER_LIST: u32 = 16 << 10;

/// Which listener: its metrics, limit and log label.
#[derive(Debug, Clone, Copy)]
enum Side {
    Proxy,
    Admin,
}

impl Side {
    fn label(self) -> &'static str {
        match self {
            Side::Proxy => "proxy",
            Side::Admin => "admin",
        }
    }

    fn stats(self, m: &Metrics) -> &Listener {
        match self {
            Side::Proxy => &m.connections.proxy,
            Side::Admin => &m.connections.admin,
        }
    }

    fn limit(self, c: &ConnectionSettings) -> usize {
        match self {
            Side::Proxy => c.max_connections,
            Side::Admin => c.admin_max_connections,
        }
    }
}

fn timeouts(c: &ConnectionSettings) -> Timeouts {
    Timeouts {
        header_read: c.header_read_timeout,
        keepalive: c.keepalive_timeout,
        client_write: c.client_write_timeout,
    }
}

/// The protocol settings shared by both listeners.
fn builder() -> auto::Builder<TokioExecutor> {
    let mut b = auto::Builder::new(TokioExecutor::new());
    // hyper's own header timer is not used: the guard times the head, from
    // the accept on, including the protocol sniffing hyper's timer misses.
    b.http1().max_buf_size(H1_MAX_BUF).header_read_timeout(None);
    b.http2()
        .max_concurrent_streams(H2_MAX_STREAMS)
        .initial_connection_window_size(H2_CONN_WINDOW)
        .initial_stream_window_size(H2_STREAM_WINDOW)
        .max_send_buf_size(H2_SEND_BUF)
        .max_header_list_size(H2_MAX_HEADER_LIST);
    b
}

/// Serves the proxy until `shutdown` resolves, then drains for up to `grace`.
pub async fn serve_proxy(
    listener: TcpListener,
    proxy: Arc<Proxy>,
    limits: ConnectionSettings,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) {
    let handle = move |req| proxy.clone().handle(req);
    serve(
        listener,
        Side::Proxy,
        limits,
        metrics,
        handle,
        shutdown,
        grace,
    )
    .await
}

/// Serves the admin routes until `shutdown` resolves.
pub async fn serve_admin(
    listener: TcpListener,
    admin: Arc<Admin>,
    limits: ConnectionSettings,
    metrics: Arc<Metrics>,
    shutdown: impl Future<Output = ()>,
) {
    let handle = move |req: Request<Incoming>| {
        let admin = admin.clone();
        async move { admin.handle(req).await }
    };
    let grace = Duration::from_secs(1);
    serve(
        listener,
        Side::Admin,
        limits,
        metrics,
        handle,
        shutdown,
        grace,
    )
    .await
}

/// The accept loop of one listener.
async fn serve<H, F, B>(
    listener: TcpListener,
    side: Side,
    limits: ConnectionSettings,
    metrics: Arc<Metrics>,
    handle: H,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) where
    H: Fn(Request<Incoming>) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<B>> + Send + 'static,
    B: Body<Data = bytes::Bytes> + Unpin + Send + 'static,
    B::Error: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    let builder = builder();
    let timeouts = timeouts(&limits);
    side.stats(&metrics).set_limit(side.limit(&limits));
    let mut acceptor = Acceptor::new(listener, side.label(), side.limit(&limits));
    let graceful = GracefulShutdown::new();
    let mut shutdown = Box::pin(shutdown);
    while let Some(accepted) = acceptor.next(side.stats(&metrics), &mut shutdown).await {
        let Accepted { stream, peer, slot } = accepted;
        let _ = stream.set_nodelay(true);
        let clock = Clock::new(tokio::time::Instant::now());
        let io = TokioIo::new(Guarded::new(stream, clock.clone(), timeouts));
        let (c, handle) = (clock.clone(), handle.clone());
        let service = service_fn(move |req: Request<Incoming>| {
            let h2 = req.version() == Version::HTTP_2;
            let in_flight = c.request_started(h2);
            let response = handle(req);
            async move {
                let response = response.await;
                Ok::<_, Infallible>(response.map(|b| match h2 {
                    true => Tracked::watched(b, in_flight, timeouts),
                    false => Tracked::new(b, in_flight),
                }))
            }
        });
        let conn = graceful.watch(builder.serve_connection(io, service).into_owned());
        let metrics = metrics.clone();
        tokio::spawn(async move {
            let result = conn.await;
            let stats = side.stats(&metrics);
            stats.closed();
            drop(slot);
            match clock.fired() {
                Some(why) => {
                    stats.timed_out(why);
                    tracing::debug!(listener = side.label(), %peer, reason = why.label(), "client connection timed out");
                }
                None => {
                    if let Err(e) = result {
                        tracing::debug!(listener = side.label(), %peer, error = %e, "connection ended with an error");
                    }
                }
            }
        });
    }
    drop(acceptor);
    if tokio::time::timeout(grace, graceful.shutdown())
        .await
        .is_err()
    {
        tracing::warn!(
            listener = side.label(),
            ?grace,
            "in-flight requests still running after the grace period"
        );
    }
}
