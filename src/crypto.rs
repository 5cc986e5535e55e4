//! The one rustls crypto provider behind every TLS config cutover builds
//! (the listener's, the upstreams', the OTLP exporter's).

use std::sync::Arc;

use rustls::crypto::CryptoProvider;

/// *ring*'s provider. rustls 0.23.48 deprecates it because it has no
/// post-quantum key exchange; aws-lc-rs has one but needs a C toolchain
/// build that would cost CI minutes. Named once here so that the switch,
/// when it comes, is one line, and so that a lock-file update cannot turn
/// the deprecation into three `-D warnings` failures.
#[allow(deprecated)]
pub fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}
