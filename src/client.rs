//! The outbound HTTP client: hyper-util's pooled client over hyper-rustls,
//! https with the system's and the webpki roots (plus any extra CAs the
//! config names), ALPN h2 and http/1.1, and plain http too. Used for the
//! upstream and for the trace sink.

use std::time::Duration;

use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;

/// The connector type shared by every outbound client.
pub type Connector = HttpsConnector<HttpConnector>;

fn root_store(extra: &[CertificateDer<'static>]) -> rustls::RootCertStore {
    let mut roots = rustls::RootCertStore::empty();
    roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    let native = rustls_native_certs::load_native_certs();
    for cert in native.certs {
        // A system certificate rustls cannot use is skipped, not fatal.
        let _ = roots.add(cert);
    }
    // Checked at config load (`config::load_roots`): these add.
    let (added, ignored) = roots.add_parsable_certificates(extra.iter().cloned());
    if ignored > 0 {
        tracing::warn!(added, ignored, "extra CA certificates rustls cannot use");
    }
    roots
}

/// Builds the connector: TCP with a connect timeout and no Nagle delay, then
/// TLS trusting the system's and webpki roots and `extra_roots`.
pub fn connector(connect_timeout: Duration, extra_roots: &[CertificateDer<'static>]) -> Connector {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let tls = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .expect("ring supports the default TLS versions")
    .with_root_certificates(root_store(extra_roots))
    .with_no_client_auth();
    hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_or_http()
        .enable_all_versions()
        .wrap_connector(http)
}

/// A pooled client for bodies of type `B`.
pub fn client<B>(
    connect_timeout: Duration,
    extra_roots: &[CertificateDer<'static>],
) -> Client<Connector, B>
where
    B: http_body::Body + Send + 'static,
    B::Data: Send,
{
    Client::builder(TokioExecutor::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .pool_max_idle_per_host(256)
        .build(connector(connect_timeout, extra_roots))
}
