//! The response store: one moka cache shared by every caching route,
//! weighted by bytes, with each entry's time to live taken from its route.
//!
//! Entries are whole 200 responses (content type and body). A body is
//! copied while it streams to the first client ([`Fill`]) into one buffer
//! that never grows past `max_entry_size`: copying, rather than keeping the
//! frames' reference counts, bounds the memory exactly (a frame sliced from
//! a larger read buffer would pin all of it). Past the limit the buffer is
//! released at once and the stream continues uncached.
//!
//! # Coalescing (SPEC §6)
//!
//! The first miss on a key leads a [`Flight`]; identical misses meanwhile
//! follow it ([`Flight::follow`]). When the leader's answer turns out
//! storable (a 200 from the version's own upstream) and its first byte
//! arrives, every follower gets the head and then each frame as the
//! leader's client does (a late follower first gets the frames so far).
//! When it is not storable (another status, a fallback, a failed attempt)
//! the followers still waiting go upstream on their own at once; a
//! follower that sees no first byte within `lock_timeout` does too. A
//! leader stream that breaks ends the followers' streams the same way (not
//! framed as complete); one that completes but is too large to store still
//! completes for them. Past `max_entry_size` the flight stops taking new
//! followers (they go upstream) and releases its replay frames, so a
//! flight never holds more than one entry's worth of frames for joiners.
//!
//! ```text
//!   Waiting ──leader commits a storable 200──► Streaming ──end──► Done{complete}
//!      │                                                  └─break─► Done{broken}
//!      └──leader fails, falls back, answers non-200, or goes away──► Done{broken}
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use http::HeaderValue;
use moka::Expiry;
use tokio::sync::{Notify, mpsc};

pub use super::entry::Entry;
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
    fills: [Mutex<HashMap<CacheKey, Arc<Flight>>>; LOCK_SHARDS],
    hits: AtomicU64,
    misses: AtomicU64,
    bypasses: AtomicU64,
    /// With `[cluster]`: the fleet's tier, and whether `cache.shared` turns
    /// it on (a reload may change that).
    shared: OnceLock<Arc<dyn SharedTier>>,
    shared_on: AtomicBool,
}

/// What `/status` shows of the cache (`cutover status` reads it back).
#[derive(Clone, Copy, Debug, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
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
        let flight = Arc::new(Flight::default());
        fills.insert(key, Arc::clone(&flight));
        Lock::Leader(FillGuard {
            cache: Arc::clone(self),
            key,
            flight,
        })
    }

    /// Start collecting a response to store under the guard's key, and
    /// streaming it to the followers.
    pub fn fill(
        &self,
        guard: FillGuard,
        ttl: Duration,
        content_type: Option<HeaderValue>,
        upstream: Arc<str>,
        upstream_header: HeaderValue,
    ) -> Fill {
        guard.flight.start(FlightHead {
            content_type: content_type.clone(),
            upstream: Arc::clone(&upstream),
            upstream_header: upstream_header.clone(),
        });
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

    /// Apply moka's pending reads and writes (LRU order, expiries,
    /// evictions). The control plane calls it a few times a second.
    pub fn upkeep(&self) {
        self.store.run_pending_tasks();
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

/// Coalescing: the leader fills, the others follow its stream.
pub enum Lock {
    Leader(FillGuard),
    Wait(Arc<Flight>),
}

/// What the followers of a flight see of the leader's answer.
#[derive(Clone, Debug)]
pub struct FlightHead {
    pub content_type: Option<HeaderValue>,
    pub upstream: Arc<str>,
    pub upstream_header: HeaderValue,
}

/// What a follower receives after the head.
#[derive(Debug)]
pub enum FlightEvent {
    Data(Bytes),
    /// The leader's stream ended: complete, or broken (not to be framed
    /// as complete).
    End {
        complete: bool,
    },
}

/// How a follower goes on.
pub enum Follow {
    /// Stream the leader's answer: its head, then these events.
    Stream(FlightHead, mpsc::UnboundedReceiver<FlightEvent>),
    /// The answer completed before this follower could join: look it up.
    Stored,
    /// Go upstream alone: the answer is not storable, broke, is past the
    /// entry limit, or showed no first byte within the lock timeout.
    Alone,
}

/// One leader's answer on its way, shared with the followers.
#[derive(Debug, Default)]
pub struct Flight {
    /// Per flight (per key), held for a few instructions by the leader on
    /// each frame and by a follower joining; never across an `.await`.
    inner: Mutex<FlightInner>,
    changed: Notify,
}

#[derive(Debug, Default)]
struct FlightInner {
    state: FlightState,
    /// The frames so far, replayed to late followers, while the answer is
    /// within the entry limit.
    replay: Vec<Bytes>,
    replay_len: usize,
    followers: Vec<mpsc::UnboundedSender<FlightEvent>>,
}

#[derive(Debug, Default)]
enum FlightState {
    #[default]
    Waiting,
    Streaming {
        head: FlightHead,
        /// False past the entry limit: no replay is kept, nobody joins.
        joinable: bool,
    },
    Done {
        complete: bool,
    },
}

impl Flight {
    fn lock(&self) -> std::sync::MutexGuard<'_, FlightInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Follow the leader: wait at most `wait` for its first byte.
    pub async fn follow(&self, wait: Duration) -> Follow {
        // A wait too long to add to the clock has no deadline.
        let deadline = tokio::time::Instant::now().checked_add(wait);
        loop {
            let notified = self.changed.notified();
            tokio::pin!(notified);
            // Registered before the state is read: a change in between is
            // not lost.
            notified.as_mut().enable();
            {
                let mut inner = self.lock();
                match &inner.state {
                    FlightState::Waiting => {}
                    FlightState::Streaming {
                        joinable: false, ..
                    }
                    | FlightState::Done {
                        complete: false, ..
                    } => return Follow::Alone,
                    FlightState::Done { complete: true } => return Follow::Stored,
                    FlightState::Streaming {
                        head,
                        joinable: true,
                    } => {
                        let head = head.clone();
                        let (tx, rx) = mpsc::unbounded_channel();
                        for frame in &inner.replay {
                            let _ = tx.send(FlightEvent::Data(frame.clone()));
                        }
                        inner.followers.push(tx);
                        return Follow::Stream(head, rx);
                    }
                }
            }
            match deadline {
                Some(deadline) => {
                    if tokio::time::timeout_at(deadline, notified).await.is_err() {
                        return Follow::Alone;
                    }
                }
                None => notified.await,
            }
        }
    }

    /// The leader committed a storable answer: followers may join.
    fn start(&self, head: FlightHead) {
        let mut inner = self.lock();
        if matches!(inner.state, FlightState::Waiting) {
            inner.state = FlightState::Streaming {
                head,
                joinable: true,
            };
        }
        drop(inner);
        self.changed.notify_waiters();
    }

    /// One frame of the leader's answer, for every follower.
    fn push(&self, data: &Bytes, limit: usize) {
        let mut inner = self.lock();
        let inner = &mut *inner;
        let FlightState::Streaming { joinable, .. } = &mut inner.state else {
            return;
        };
        inner
            .followers
            .retain(|tx| tx.send(FlightEvent::Data(data.clone())).is_ok());
        if *joinable {
            inner.replay_len += data.len();
            if inner.replay_len > limit {
                *joinable = false;
                inner.replay = Vec::new();
            } else {
                inner.replay.push(data.clone());
            }
        }
    }

    /// The leader's answer ended (or never started): tell everyone.
    fn end(&self, complete: bool) {
        let mut inner = self.lock();
        if matches!(inner.state, FlightState::Done { .. }) {
            return;
        }
        let complete = complete && matches!(inner.state, FlightState::Streaming { .. });
        inner.state = FlightState::Done { complete };
        inner.replay = Vec::new();
        for tx in inner.followers.drain(..) {
            let _ = tx.send(FlightEvent::End { complete });
        }
        drop(inner);
        self.changed.notify_waiters();
    }
}

/// The leader's hold on a key. Dropping it without [`Fill::store`] (the
/// answer was not storable, broke, or the request went away) ends the
/// flight as broken: the waiting followers go upstream on their own.
pub struct FillGuard {
    cache: Arc<ResponseCache>,
    key: CacheKey,
    flight: Arc<Flight>,
}

impl FillGuard {
    /// Free the key for the next miss (if it still names this flight: a
    /// released key may already lead a new one).
    fn release(&self) {
        let shard = &self.cache.fills[usize::from(self.key.as_bytes()[0]) % LOCK_SHARDS];
        let mut fills = shard.lock().unwrap_or_else(|p| p.into_inner());
        if fills
            .get(&self.key)
            .is_some_and(|f| Arc::ptr_eq(f, &self.flight))
        {
            fills.remove(&self.key);
        }
    }
}

impl Drop for FillGuard {
    fn drop(&mut self) {
        self.release();
        self.flight.end(false);
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
        if data.is_empty() {
            return;
        }
        self.guard.flight.push(data, self.limit);
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

    /// The response ended complete: store it (unless it outgrew the limit),
    /// then complete the followers' streams. Returns whether it was stored.
    pub fn store(mut self) -> bool {
        let stored = match self.body.take() {
            Some(body) => {
                self.insert(body);
                true
            }
            None => false,
        };
        // Stored first, so a follower that finds the flight done finds the
        // entry too; then the key is free for the next miss.
        self.guard.release();
        self.guard.flight.end(true);
        stored
    }

    fn insert(&self, body: BytesMut) {
        let body = body.freeze();
        let entry = Arc::new(Entry {
            // A parsed header value is a slice of the upstream connection's
            // read buffer: an entry that kept it would pin that whole
            // buffer (kilobytes) for its lifetime, far past its weight.
            content_type: self
                .content_type
                .as_ref()
                .and_then(|v| HeaderValue::from_bytes(v.as_bytes()).ok()),
            upstream: Arc::clone(&self.upstream),
            upstream_header: self.upstream_header.clone(),
            body,
            ttl: self.ttl,
        });
        if let Some(tier) = self.guard.cache.shared_tier() {
            tier.put(&self.guard.key, &entry);
        }
        self.guard.cache.store.insert(self.guard.key, entry);
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
            let follow = tokio::time::timeout(Duration::from_secs(1), w.follow(Duration::MAX))
                .await
                .expect("released");
            assert!(matches!(follow, Follow::Alone), "no answer to follow");
        });
        // The key is free again.
        assert!(matches!(cache.lock(key(3)), Lock::Leader(_)));
    }

    fn runtime() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
    }

    fn follower(cache: &Arc<ResponseCache>, k: CacheKey) -> Arc<Flight> {
        match cache.lock(k) {
            Lock::Wait(f) => f,
            Lock::Leader(_) => panic!("expected to follow"),
        }
    }

    fn data(rx: &mut mpsc::UnboundedReceiver<FlightEvent>) -> Option<Bytes> {
        match rx.try_recv() {
            Ok(FlightEvent::Data(b)) => Some(b),
            _ => None,
        }
    }

    #[test]
    fn followers_get_each_frame_as_it_arrives_and_late_ones_the_frames_so_far() {
        let cache = Arc::new(ResponseCache::new(1 << 20, 1024));
        let rt = runtime();
        let mut f = fill(&cache, key(4));
        let flight = Arc::clone(&f.guard.flight);
        let Follow::Stream(head, mut early) = rt.block_on(flight.follow(Duration::ZERO)) else {
            panic!("a committed answer is followed")
        };
        assert_eq!(&*head.upstream, "up");
        f.observe(&Bytes::from_static(b"data: 1\n\n"));
        assert_eq!(data(&mut early).as_deref(), Some(&b"data: 1\n\n"[..]));
        assert!(data(&mut early).is_none(), "nothing before it arrives");
        let late_flight = follower(&cache, key(4));
        let Follow::Stream(_, mut late) = rt.block_on(late_flight.follow(Duration::ZERO)) else {
            panic!("joinable")
        };
        assert_eq!(data(&mut late).as_deref(), Some(&b"data: 1\n\n"[..]));
        f.observe(&Bytes::from_static(b"data: 2\n\n"));
        assert!(f.store());
        for rx in [&mut early, &mut late] {
            assert_eq!(data(rx).as_deref(), Some(&b"data: 2\n\n"[..]));
            assert!(matches!(
                rx.try_recv(),
                Ok(FlightEvent::End { complete: true })
            ));
        }
        assert!(cache.get(&key(4)).is_some());
        // A follower of a finished flight finds the entry.
        assert!(matches!(
            rt.block_on(flight.follow(Duration::ZERO)),
            Follow::Stored
        ));
    }

    #[test]
    fn an_unstorable_or_broken_answer_sends_waiters_upstream_at_once() {
        let cache = Arc::new(ResponseCache::new(1 << 20, 1024));
        let rt = runtime();
        // Not storable: the guard is dropped before anything streams.
        let g = leader(&cache, key(5));
        let flight = follower(&cache, key(5));
        let waiting = std::thread::spawn(move || {
            runtime().block_on(async {
                let started = std::time::Instant::now();
                let f = flight.follow(Duration::from_secs(30)).await;
                (matches!(f, Follow::Alone), started.elapsed())
            })
        });
        std::thread::sleep(Duration::from_millis(50));
        drop(g);
        let (alone, waited) = waiting.join().expect("thread");
        assert!(alone && waited < Duration::from_secs(5), "{waited:?}");

        // Broken mid-stream: a follower already served gets its bytes, then
        // an end that is not complete.
        let mut f = fill(&cache, key(6));
        let flight = follower(&cache, key(6));
        let Follow::Stream(_, mut rx) = rt.block_on(flight.follow(Duration::ZERO)) else {
            panic!("joinable")
        };
        f.observe(&Bytes::from_static(b"part"));
        drop(f);
        assert_eq!(data(&mut rx).as_deref(), Some(&b"part"[..]));
        assert!(matches!(
            rx.try_recv(),
            Ok(FlightEvent::End { complete: false })
        ));
        assert!(cache.get(&key(6)).is_none());
    }

    #[test]
    fn no_first_byte_within_the_lock_timeout_goes_alone() {
        let cache = Arc::new(ResponseCache::new(1 << 20, 1024));
        let _g = leader(&cache, key(7));
        let flight = follower(&cache, key(7));
        let started = std::time::Instant::now();
        let f = runtime().block_on(flight.follow(Duration::from_millis(50)));
        assert!(matches!(f, Follow::Alone));
        assert!(started.elapsed() >= Duration::from_millis(50));
    }

    #[test]
    fn past_the_entry_limit_nobody_joins_but_followers_get_it_all() {
        let cache = Arc::new(ResponseCache::new(1 << 20, 8));
        let rt = runtime();
        let mut f = fill(&cache, key(8));
        let flight = follower(&cache, key(8));
        let Follow::Stream(_, mut rx) = rt.block_on(flight.follow(Duration::ZERO)) else {
            panic!("joinable")
        };
        f.observe(&Bytes::from_static(b"12345"));
        f.observe(&Bytes::from_static(b"67890"));
        assert!(
            matches!(rt.block_on(flight.follow(Duration::ZERO)), Follow::Alone),
            "joined past the limit"
        );
        assert!(!f.store(), "too large to store");
        assert_eq!(data(&mut rx).as_deref(), Some(&b"12345"[..]));
        assert_eq!(data(&mut rx).as_deref(), Some(&b"67890"[..]));
        assert!(matches!(
            rx.try_recv(),
            Ok(FlightEvent::End { complete: true })
        ));
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
