//! The shared tier behind the local store (`cache.shared` with
//! `[cluster]`, SPEC §6): a local miss is looked up there before going
//! upstream, and a stored answer is written there too, so a fleet answers a
//! question once.
//!
//! The store only knows this trait; the Redis side is
//! `crate::cluster::shared_cache`. A lookup is bounded by a short deadline
//! and skipped while the fleet's Redis is known to be down; a write is
//! spawned, bounded, never waited for. A failure of either is counted and
//! only makes the cache local-only: no request fails because of it.

use std::sync::Arc;
use std::time::Duration;

use futures_util::future::BoxFuture;
use http::HeaderValue;

use super::entry::Entry;
use super::key::CacheKey;

/// An answer found in the shared tier.
pub struct SharedEntry {
    pub content_type: Option<HeaderValue>,
    pub upstream: Arc<str>,
    pub body: bytes::Bytes,
    /// What is left of its route's ttl.
    pub ttl: Duration,
}

pub trait SharedTier: Send + Sync {
    /// `key`'s answer, if the tier has it. `None` on a miss, an error or
    /// past the deadline (the tier counts those).
    fn get<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Option<SharedEntry>>;

    /// Write `entry` for its ttl, off the request path (spawned, bounded).
    fn put(&self, key: &CacheKey, entry: &Arc<Entry>);
}
