//! The version-aware response cache (SPEC §6).
//!
//! * [`key`]: the cache key, a blake3 hash over a length-prefixed encoding
//!   of everything that can change the upstream's answer (route, version
//!   and its deps, `set_json`, method, path, query, body, `vary` headers).
//!   Pure, no I/O.
//! * [`canonical`]: the canonical JSON the key encodes bodies and tables in.
//! * [`bypass`]: when a request skips the cache (`Cache-Control`,
//!   `deterministic_only`).
//! * [`store`]: the shared moka store, weighted by bytes, the fill that
//!   collects a response as it streams, and the lock that coalesces
//!   identical misses.
//! * [`entry`]: a stored response, which the store keeps and the shared
//!   tier writes.
//! * [`shared`]: the fleet's second tier (`cache.shared`), as a trait the
//!   store calls; its Redis side is `crate::cluster::shared_cache`.

pub mod bypass;
pub mod canonical;
pub mod entry;
pub mod key;
pub mod shared;
pub mod store;

use std::time::Duration;

use http::HeaderName;

pub use bypass::{bypass_requested, is_deterministic};
pub use key::{CacheKey, KeyInput, KeyPrefix, RequestInput, cache_key, cache_key_with};
pub use store::{
    CacheStatus, Entry, Fill, FillGuard, Flight, FlightEvent, FlightHead, Follow, Lock,
    ResponseCache,
};

use crate::config::RouteCacheConfig;
use crate::telemetry::CacheMetrics;

/// A route's `cache = {...}`, compiled.
pub struct RouteCache {
    pub ttl: Duration,
    pub vary: Box<[HeaderName]>,
    pub deterministic_only: bool,
    pub metrics: CacheMetrics,
}

impl RouteCache {
    pub fn new(route: &str, config: &RouteCacheConfig) -> RouteCache {
        RouteCache {
            ttl: config.ttl,
            vary: config.vary.clone().into_boxed_slice(),
            deterministic_only: config.deterministic_only,
            metrics: CacheMetrics::new(route),
        }
    }
}
