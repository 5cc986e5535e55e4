//! One pooled HTTP client per upstream.
//!
//! hyper-util's pooled client keeps idle keep-alive connections per
//! authority. `http://` upstreams speak HTTP/1.1; `https://` upstreams
//! negotiate h2 or http/1.1 by ALPN over rustls, with roots from the system
//! store (`SSL_CERT_FILE` / `SSL_CERT_DIR` override it, as with OpenSSL).

use std::sync::{Arc, OnceLock};
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

pub type UpstreamClient = Client<HttpsConnector<HttpConnector>, UpstreamRequestBody>;

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
        .build(https))
}
