//! One pooled HTTP client per upstream.
//!
//! hyper-util's pooled client keeps idle keep-alive connections per
//! authority. `http://` upstreams speak HTTP/1.1; `https://` upstreams
//! negotiate h2 or http/1.1 by ALPN over rustls, with roots from the system
//! store (`SSL_CERT_FILE` / `SSL_CERT_DIR` override it, as with OpenSSL).
//!
//! `connect_timeout` bounds the whole connection setup, name resolution
//! and TLS handshake included ([`TimedConnector`]): the HTTP connector's
//! own timeout covers only the TCP connect, and a resolver or a TLS peer
//! that stalls would otherwise hold the attempt until `header_timeout`.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config::UpstreamConfig;

/// Request bodies are buffered before forwarding (fallbacks, shadows and the
/// cache key all need the same bytes), so the upstream body is one chunk.
pub type UpstreamRequestBody = Full<Bytes>;

pub type UpstreamClient =
    Client<TimedConnector<HttpsConnector<HttpConnector>>, UpstreamRequestBody>;

/// A connector whose every connection (resolve, TCP connect, TLS
/// handshake) must be ready within `timeout`, or fails as a connect error.
#[derive(Clone, Debug)]
pub struct TimedConnector<C> {
    inner: C,
    timeout: Duration,
}

impl<C> TimedConnector<C> {
    pub fn new(inner: C, timeout: Duration) -> TimedConnector<C> {
        TimedConnector { inner, timeout }
    }
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl<C> tower::Service<http::Uri> for TimedConnector<C>
where
    C: tower::Service<http::Uri> + Send,
    C::Future: Send + 'static,
    C::Error: Into<BoxError>,
{
    type Response = C::Response;
    type Error = BoxError;
    /// Boxed: hyper-util needs an `Unpin` future, and a timer is not.
    type Future = Pin<Box<dyn Future<Output = Result<C::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, uri: http::Uri) -> Self::Future {
        let connecting = self.inner.call(uri);
        let timeout = self.timeout;
        Box::pin(async move {
            match tokio::time::timeout(timeout, connecting).await {
                Ok(result) => result.map_err(Into::into),
                Err(_) => Err(format!(
                    "connect_timeout ({timeout:?}) passed while resolving, connecting or in the TLS handshake"
                )
                .into()),
            }
        })
    }
}

/// The rustls client config shared by every https upstream: built once,
/// because loading the system roots costs milliseconds.
pub fn tls_client_config() -> Result<Arc<rustls::ClientConfig>, String> {
    static CONFIG: OnceLock<Result<Arc<rustls::ClientConfig>, String>> = OnceLock::new();
    CONFIG
        .get_or_init(|| {
            let mut roots = rustls::RootCertStore::empty();
            let loaded = rustls_native_certs::load_native_certs();
            for cert in loaded.certs {
                // A single unparsable system certificate must not disable TLS.
                let _ = roots.add(cert);
            }
            let provider = Arc::new(rustls::crypto::ring::default_provider());
            // ALPN (h2, http/1.1) is set by the hyper-rustls connector builder.
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS client setup: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

/// A client for one upstream, honouring its `connect_timeout`.
pub fn build_client(upstream: &UpstreamConfig) -> Result<UpstreamClient, String> {
    let mut http = HttpConnector::new();
    http.enforce_http(false);
    http.set_nodelay(true);
    http.set_connect_timeout(Some(upstream.connect_timeout));
    http.set_keepalive(Some(Duration::from_secs(60)));
    let https = hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config((*tls_client_config()?).clone())
        .https_or_http()
        .enable_http1()
        .enable_http2()
        .wrap_connector(http);
    Ok(Client::builder(TokioExecutor::new())
        .timer(TokioTimer::new())
        .pool_timer(TokioTimer::new())
        .pool_idle_timeout(Duration::from_secs(90))
        .build(TimedConnector::new(https, upstream.connect_timeout)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tower::ServiceExt as _;

    /// Whatever the inner connector does (a resolver that never answers,
    /// a TLS peer that never replies), the connection fails by the timeout.
    #[tokio::test]
    async fn the_whole_connection_setup_is_bounded() {
        let stalls = tower::service_fn(|_uri: http::Uri| {
            std::future::pending::<Result<tokio::net::TcpStream, std::io::Error>>()
        });
        let started = std::time::Instant::now();
        let result = TimedConnector::new(stalls, Duration::from_millis(100))
            .oneshot(http::Uri::from_static("https://example.invalid"))
            .await;
        let error = result.expect_err("timed out");
        assert!(error.to_string().contains("connect_timeout"), "{error}");
        assert!(started.elapsed() < Duration::from_secs(2));
    }
}
