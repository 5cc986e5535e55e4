//! The response store: one moka cache shared by every caching route,
//! weighted by bytes, with each entry's time to live taken from its route.
//!
//! Entries are whole 200 responses (content type and body). A body is
//! copied while it streams to the first client ([`Fill`]) into one buffer
//! that never grows past `max_entry_size`: copying, rather than keeping the
//! frames' reference counts, bounds the memory exactly (a frame sliced from
//! a larger read buffer would pin all of it). Past the limit the buffer is
//! released at once and the stream continues uncached.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use moka::Expiry;
use tokio::sync::Notify;

use super::key::CacheKey;
use super::shared::SharedTier;

/// Bookkeeping bytes charged per entry on top of its body (key, headers,
/// moka's node, the allocator's rounding): keeps a flood of tiny entries
/// inside `max_size` too. Measured: a 64 MiB store full of 394-byte
/// answers held about 450 bytes per entry beyond the body.
const ENTRY_OVERHEAD: u64 = 512;

/// A fill's buffer doubles up to this size, then takes the entry limit.
const GROW_BY_DOUBLING: usize = 256 * 1024;

/// Coalescing locks are sharded by the key's first byte, so unrelated
/// misses never contend on one mutex.
const LOCK_SHARDS: usize = 16;

/// A stored response.
#[derive(Debug)]
pub struct Entry {
    pub content_type: Option<HeaderValue>,
    /// The upstream that produced it (`x-cutover-upstream` on a hit).
    pub upstream: Arc<str>,
    pub upstream_header: HeaderValue,
    pub body: Bytes,
    ttl: Duration,
}

impl Entry {
    /// The route's ttl it was stored with.
    pub fn ttl(&self) -> Duration {
        self.ttl
    }
}

struct PerEntryTtl;

impl Expiry<CacheKey, Arc<Entry>> for PerEntryTtl {
    fn expire_after_create(
        &self,
        _key: &CacheKey,
        value: &Arc<Entry>,
        _created_at: Instant,
    ) -> Option<Duration> {
        Some(value.ttl)
    }
}

/// The process-wide response cache. Survives reloads.
pub struct ResponseCache {
    store: moka::sync::Cache<CacheKey, Arc<Entry>>,
    max_size: u64,
    /// Changeable by a reload (the store's capacity is not).
    max_entry_size: AtomicUsize,
    /// In-progress fills, for coalescing identical misses.
    fills: [Mutex<HashMap<CacheKey, Arc<FillLock>>>; LOCK_SHARDS],
    hits: AtomicU64,
    misses: AtomicU64,
    bypasses: AtomicU64,
    /// With `[cluster]`: the fleet's tier, and whether `cache.shared` turns
    /// it on (a reload may change that).
    shared: OnceLock<Arc<dyn SharedTier>>,
    shared_on: AtomicBool,
}

/// What `/status` shows of the cache.
#[derive(Clone, Copy, Debug, serde::Serialize)]
pub struct CacheStatus {
    pub entries: u64,
    pub bytes: u64,
    pub max_size: u64,
    pub max_entry_size: u64,
    pub hits: u64,
    pub misses: u64,
    pub bypasses: u64,
    /// hits / (hits + misses); `None` before the first lookup.
    pub hit_ratio: Option<f64>,
}

impl ResponseCache {
    pub fn new(max_size: u64, max_entry_size: u64) -> ResponseCache {
        let store = moka::sync::Cache::builder()
            .max_capacity(max_size)
            .weigher(|_key: &CacheKey, entry: &Arc<Entry>| {
                u32::try_from(entry.body.len() as u64 + ENTRY_OVERHEAD).unwrap_or(u32::MAX)
            })
            .expire_after(PerEntryTtl)
            .build();
        ResponseCache {
            store,
            max_size,
            max_entry_size: AtomicUsize::new(usize::try_from(max_entry_size).unwrap_or(usize::MAX)),
            fills: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            bypasses: AtomicU64::new(0),
            shared: OnceLock::new(),
            shared_on: AtomicBool::new(false),
        }
    }

    /// With `[cluster]`: the fleet's tier (set once, at start).
    pub fn set_shared_tier(&self, tier: Arc<dyn SharedTier>) {
        let _ = self.shared.set(tier);
    }

    /// `cache.shared`, on every (re)load.
    pub fn set_shared(&self, on: bool) {
        self.shared_on.store(on, Ordering::Relaxed);
    }

    /// A local miss is worth asking the shared tier about.
    pub fn shares(&self) -> bool {
        self.shared_tier().is_some()
    }

    fn shared_tier(&self) -> Option<&Arc<dyn SharedTier>> {
        if self.shared_on.load(Ordering::Relaxed) {
            self.shared.get()
        } else {
            None
        }
    }

    /// A local miss, looked up in the shared tier: a hit is stored locally
    /// for what is left of its ttl and returned. Immediate `None` without a
    /// tier.
    pub async fn get_shared(&self, key: &CacheKey) -> Option<Arc<Entry>> {
        let found = self.shared_tier()?.get(key).await?;
        let entry = Arc::new(Entry {
            upstream_header: HeaderValue::from_str(&found.upstream).ok()?,
            content_type: found.content_type,
            upstream: found.upstream,
            body: found.body,
            ttl: found.ttl,
        });
        self.store.insert(*key, Arc::clone(&entry));
        Some(entry)
    }

    pub fn max_size(&self) -> u64 {
        self.max_size
    }

    pub fn set_max_entry_size(&self, bytes: u64) {
        self.max_entry_size.store(
            usize::try_from(bytes).unwrap_or(usize::MAX),
            Ordering::Relaxed,
        );
    }

    pub fn get(&self, key: &CacheKey) -> Option<Arc<Entry>> {
        self.store.get(key)
    }

    pub fn count(&self, hit: Option<bool>) {
        let c = match hit {
            Some(true) => &self.hits,
            Some(false) => &self.misses,
            None => &self.bypasses,
        };
        c.fetch_add(1, Ordering::Relaxed);
    }

    /// Become the request that fills `key`, or get the fill already under
    /// way to wait on. Identical concurrent misses then cost one upstream
    /// call (nginx's `proxy_cache_lock`).
    pub fn lock(self: &Arc<Self>, key: CacheKey) -> Lock {
        let shard = &self.fills[usize::from(key.as_bytes()[0]) % LOCK_SHARDS];
        let mut fills = shard.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(existing) = fills.get(&key) {
            return Lock::Wait(Arc::clone(existing));
        }
        let lock = Arc::new(FillLock::default());
        fills.insert(key, Arc::clone(&lock));
        Lock::Leader(FillGuard {
            cache: Arc::clone(self),
            key,
            lock,
        })
    }

    /// Start collecting a response to store under the guard's key.
    pub fn fill(
        &self,
        guard: FillGuard,
        ttl: Duration,
        content_type: Option<HeaderValue>,
        upstream: Arc<str>,
        upstream_header: HeaderValue,
    ) -> Fill {
        Fill {
            guard,
            limit: self.max_entry_size.load(Ordering::Relaxed),
            body: Some(BytesMut::new()),
            ttl,
            content_type,
            upstream,
            upstream_header,
        }
    }

    /// Drop every entry. Returns how many there were.
    pub fn purge(&self) -> u64 {
        self.store.run_pending_tasks();
        let n = self.store.entry_count();
        self.store.invalidate_all();
        self.store.run_pending_tasks();
        n
    }

    pub fn status(&self) -> CacheStatus {
        self.store.run_pending_tasks();
        let hits = self.hits.load(Ordering::Relaxed);
        let misses = self.misses.load(Ordering::Relaxed);
        CacheStatus {
            entries: self.store.entry_count(),
            bytes: self.store.weighted_size(),
            max_size: self.max_size,
            max_entry_size: self.max_entry_size.load(Ordering::Relaxed) as u64,
            hits,
            misses,
            bypasses: self.bypasses.load(Ordering::Relaxed),
            hit_ratio: (hits + misses > 0).then(|| hits as f64 / (hits + misses) as f64),
        }
    }
}

/// Coalescing: the leader fills, the others wait for it.
pub enum Lock {
    Leader(FillGuard),
    Wait(Arc<FillLock>),
}

#[derive(Debug, Default)]
pub struct FillLock {
    done: std::sync::atomic::AtomicBool,
    notify: Notify,
}

impl FillLock {
    /// Wait until the leader's response has ended, stored or not.
    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            // Registered before the check: a wake-up in between is not lost.
            notified.as_mut().enable();
            if self.done.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }
}

/// The leader's hold on a key. Dropping it (the response ended, stored or
/// not, or the request went away) releases the waiters.
pub struct FillGuard {
    cache: Arc<ResponseCache>,
    key: CacheKey,
    lock: Arc<FillLock>,
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        let shard = &self.cache.fills[usize::from(self.key.as_bytes()[0]) % LOCK_SHARDS];
        shard
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&self.key);
        self.lock.done.store(true, Ordering::Release);
        self.lock.notify.notify_waiters();
    }
}

/// A response being collected for the store as it streams.
pub struct Fill {
    guard: FillGuard,
    limit: usize,
    /// `None` once past the limit: collection stopped, memory released.
    body: Option<BytesMut>,
    ttl: Duration,
    content_type: Option<HeaderValue>,
    upstream: Arc<str>,
    upstream_header: HeaderValue,
}

impl Fill {
    #[inline]
    pub fn observe(&mut self, data: &Bytes) {
        let Some(body) = &mut self.body else {
            return;
        };
        let needed = body.len() + data.len();
        if needed > self.limit {
            self.body = None;
            return;
        }
        if needed > body.capacity() {
            // Double while small; past that, reserve the whole limit once:
            // its pages are touched only as bytes arrive, and no large
            // buffer is copied and freed on the way up.
            let doubled = needed.max(body.capacity() * 2);
            let target = if doubled > GROW_BY_DOUBLING {
                self.limit
            } else {
                doubled
            };
            body.reserve(target - body.len());
        }
        body.extend_from_slice(data);
    }

    /// The response ended complete: store it (unless it outgrew the limit).
    /// Returns whether it was stored.
    pub fn store(self) -> bool {
        let Some(body) = self.body else {
            return false;
        };
        let body = body.freeze();
        let entry = Arc::new(Entry {
            // A parsed header value is a slice of the upstream connection's
            // read buffer: an entry that kept it would pin that whole
            // buffer (kilobytes) for its lifetime, far past its weight.
            content_type: self
                .content_type
                .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok()),
            upstream: self.upstream,
            upstream_header: self.upstream_header,
            body,
            ttl: self.ttl,
        });
        if let Some(tier) = self.guard.cache.shared_tier() {
            tier.put(&self.guard.key, &entry);
        }
        self.guard.cache.store.insert(self.guard.key, entry);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> CacheKey {
        CacheKey::from_bytes([n; 32])
    }

    fn leader(cache: &Arc<ResponseCache>, k: CacheKey) -> FillGuard {
        match cache.lock(k) {
            Lock::Leader(g) => g,
            Lock::Wait(_) => panic!("expected to lead"),
        }
    }

    fn fill(cache: &Arc<ResponseCache>, k: CacheKey) -> Fill {
        let g = leader(cache, k);
        cache.fill(
            g,
            Duration::from_secs(60),
            None,
            "up".into(),
            HeaderValue::from_static("up"),
        )
    }

    #[test]
    fn a_stored_content_type_owns_its_bytes() {
        let cache = Arc::new(ResponseCache::new(1 << 20, 1024));
        // As hyper parses it: a slice of the connection's read buffer.
        let mut read =
            BytesMut::from(&b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"[..]);
        read.resize(8192, 0);
        let buffer = read.freeze();
        let parsed = HeaderValue::from_maybe_shared(buffer.slice(31..47)).expect("header");
        assert_eq!(parsed, "application/json");
        let g = leader(&cache, key(9));
        let mut f = cache.fill(
            g,
            Duration::from_secs(60),
            Some(parsed.clone()),
            "up".into(),
            HeaderValue::from_static("up"),
        );
        f.observe(&Bytes::from_static(b"{}"));
        assert!(f.store());
        let entry = cache.get(&key(9)).expect("stored");
        let stored = entry.content_type.as_ref().expect("content type");
        assert_eq!(stored, "application/json");
        let inside = buffer.as_ptr_range();
        assert!(
            !inside.contains(&stored.as_bytes().as_ptr()),
            "the entry still points into the connection's buffer"
        );
    }

    #[test]
    fn stores_frames_joined() {
        let cache = Arc::new(ResponseCache::new(1 << 20, 1024));
        let mut f = fill(&cache, key(1));
        f.observe(&Bytes::from_static(b"hello "));
        f.observe(&Bytes::from_static(b"world"));
        assert!(f.store());
        assert_eq!(
            &cache.get(&key(1)).expect("stored").body[..],
            b"hello world"
        );
    }

    #[test]
    fn over_the_entry_limit_is_not_stored() {
        let cache = Arc::new(ResponseCache::new(1 << 20, 8));
        let mut f = fill(&cache, key(2));
        f.observe(&Bytes::from_static(b"12345"));
        f.observe(&Bytes::from_static(b"67890"));
        assert!(f.body.is_none(), "memory released past the limit");
        assert!(!f.store());
        assert!(cache.get(&key(2)).is_none());
    }

    #[test]
    fn second_miss_waits_and_is_released() {
        let cache = Arc::new(ResponseCache::new(1 << 20, 1024));
        let g = leader(&cache, key(3));
        let Lock::Wait(w) = cache.lock(key(3)) else {
            panic!("expected to wait")
        };
        drop(g);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        rt.block_on(async {
            tokio::time::timeout(Duration::from_secs(1), w.wait())
                .await
                .expect("released");
        });
        // The key is free again.
        assert!(matches!(cache.lock(key(3)), Lock::Leader(_)));
    }

    #[test]
    fn size_bound_holds() {
        let cache = Arc::new(ResponseCache::new(64 * 1024, 8 * 1024));
        for i in 0..100u8 {
            let mut f = fill(&cache, key(i));
            f.observe(&Bytes::from(vec![i; 4096]));
            f.store();
        }
        let status = cache.status();
        assert!(status.bytes <= 64 * 1024, "{status:?}");
        assert!(status.entries < 100);
    }
}
