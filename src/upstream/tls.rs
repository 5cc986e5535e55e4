//! The rustls client configuration for `https://` upstreams (and the other
//! outbound clients: webhooks, eval), with roots from the system store
//! (`SSL_CERT_FILE` / `SSL_CERT_DIR` override it, as with OpenSSL).

use std::sync::{Arc, OnceLock};

use tokio_rustls::TlsConnector;

/// The rustls client config shared by every outbound TLS client: built
/// once, because loading the system roots costs milliseconds. ALPN is left
/// to each user.
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
            let provider = crate::crypto::provider();
            let config = rustls::ClientConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .map_err(|e| format!("TLS client setup: {e}"))?
                .with_root_certificates(roots)
                .with_no_client_auth();
            Ok(Arc::new(config))
        })
        .clone()
}

/// The connector for upstreams: h2 preferred, HTTP/1.1 otherwise, chosen
/// by ALPN during the handshake.
pub fn upstream_connector() -> Result<TlsConnector, String> {
    static CONNECTOR: OnceLock<Result<TlsConnector, String>> = OnceLock::new();
    CONNECTOR
        .get_or_init(|| {
            let mut config = (*tls_client_config()?).clone();
            config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
            Ok(TlsConnector::from(Arc::new(config)))
        })
        .clone()
}
