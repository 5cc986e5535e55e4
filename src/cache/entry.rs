//! A stored response: what the local store keeps and the shared tier
//! writes. A leaf, so the store and the shared tier both use it and
//! neither imports the other for it.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::HeaderValue;

/// A stored response.
#[derive(Debug)]
pub struct Entry {
    pub content_type: Option<HeaderValue>,
    /// The upstream that produced it (`x-cutover-upstream` on a hit).
    pub upstream: Arc<str>,
    pub upstream_header: HeaderValue,
    pub body: Bytes,
    /// Set by the store when it keeps the entry.
    pub(super) ttl: Duration,
}

impl Entry {
    /// The route's ttl it was stored with.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}
