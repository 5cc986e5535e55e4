//! The shared cache tier in Redis (`cache.shared`, SPEC §6): one string
//! per answer under `cache:HEX`, with the route's ttl as its expiry.
//!
//! * A lookup is one `GET` with [`LOOKUP_DEADLINE`], skipped outright
//!   while the last sync round found Redis down: a dead Redis costs a
//!   request nothing, a slow one at most the deadline.
//! * A write is one `SET ... PX ttl` in a spawned task, at most
//!   [`WRITES_IN_FLIGHT`] at once (more are dropped and counted).
//! * `POST /cache/purge` deletes this fleet's entries (`SCAN MATCH` on the
//!   fleet's prefix, `UNLINK`), and no one else's.
//!
//! The value: `CO1\n`, the expiry (Unix ms, u64 LE), the content type and
//! the upstream name (each u16 LE length + bytes), then the body. Anything
//! else reads as a miss.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::future::BoxFuture;
use http::HeaderValue;
use serde::{Deserialize, Serialize};
use tokio::sync::Semaphore;

use super::Cluster;
use super::client::{CallError, Op};
use crate::cache::shared::{SharedEntry, SharedTier};
use crate::cache::{CacheKey, Entry};
use crate::rollout::fleet::unix_ms;

/// A lookup's deadline: a local miss then goes upstream.
pub const LOOKUP_DEADLINE: Duration = Duration::from_millis(100);
/// Writes in flight at most.
pub const WRITES_IN_FLIGHT: usize = 64;
const MAGIC: &[u8; 4] = b"CO1\n";

/// The tier, as the cache store sees it.
pub struct SharedCache {
    cluster: Arc<Cluster>,
    writes: Arc<Semaphore>,
    counters: Arc<Counters>,
}

#[derive(Default)]
struct Counters {
    hits: AtomicU64,
    misses: AtomicU64,
    errors: AtomicU64,
    skipped: AtomicU64,
    writes: AtomicU64,
    write_errors: AtomicU64,
    writes_dropped: AtomicU64,
}

/// What `/status` shows of the shared tier.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct SharedCacheView {
    /// Local misses found in Redis.
    pub hits: u64,
    pub misses: u64,
    /// Lookups that failed or passed the deadline (then upstream).
    pub errors: u64,
    /// Lookups not tried because Redis was down.
    pub skipped: u64,
    pub writes: u64,
    pub write_errors: u64,
    /// Writes not tried: too many in flight.
    pub writes_dropped: u64,
}

impl SharedCache {
    pub fn new(cluster: Arc<Cluster>) -> SharedCache {
        SharedCache {
            cluster,
            writes: Arc::new(Semaphore::new(WRITES_IN_FLIGHT)),
            counters: Arc::new(Counters::default()),
        }
    }

    pub fn status(&self) -> SharedCacheView {
        let c = &self.counters;
        let get = |a: &AtomicU64| a.load(Ordering::Relaxed);
        SharedCacheView {
            hits: get(&c.hits),
            misses: get(&c.misses),
            errors: get(&c.errors),
            skipped: get(&c.skipped),
            writes: get(&c.writes),
            write_errors: get(&c.write_errors),
            writes_dropped: get(&c.writes_dropped),
        }
    }
}

fn hex(key: &CacheKey) -> String {
    let mut s = String::with_capacity(64);
    for b in key.as_bytes() {
        s.push_str(&format!("{b:02x}"));
    }
    s
}

fn encode(entry: &Entry, expires_ms: u64) -> Vec<u8> {
    let ct = entry
        .content_type
        .as_ref()
        .map_or(&b""[..], |v| v.as_bytes());
    let up = entry.upstream.as_bytes();
    let mut out = Vec::with_capacity(4 + 8 + 4 + ct.len() + up.len() + entry.body.len());
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&expires_ms.to_le_bytes());
    for part in [ct, up] {
        let len = u16::try_from(part.len()).unwrap_or(0);
        out.extend_from_slice(&len.to_le_bytes());
        out.extend_from_slice(&part[..usize::from(len)]);
    }
    out.extend_from_slice(&entry.body);
    out
}

fn decode(raw: Bytes, now_ms: u64) -> Option<SharedEntry> {
    let rest = raw.strip_prefix(MAGIC)?;
    let expires_ms = u64::from_le_bytes(rest.get(..8)?.try_into().ok()?);
    let mut at = 4 + 8;
    let mut part = || -> Option<Bytes> {
        let len = usize::from(u16::from_le_bytes(raw.get(at..at + 2)?.try_into().ok()?));
        let p = raw
            .get(at + 2..at + 2 + len)
            .map(|_| raw.slice(at + 2..at + 2 + len))?;
        at += 2 + len;
        Some(p)
    };
    let ct = part()?;
    let up = part()?;
    let upstream: Arc<str> = std::str::from_utf8(&up).ok()?.into();
    let ttl = Duration::from_millis(expires_ms.checked_sub(now_ms).filter(|l| *l > 0)?);
    Some(SharedEntry {
        content_type: if ct.is_empty() {
            None
        } else {
            HeaderValue::from_bytes(&ct).ok()
        },
        upstream,
        body: raw.slice(at..),
        ttl,
    })
}

impl SharedTier for SharedCache {
    fn get<'a>(&'a self, key: &'a CacheKey) -> BoxFuture<'a, Option<SharedEntry>> {
        Box::pin(async move {
            if !self.cluster.up() {
                self.counters.skipped.fetch_add(1, Ordering::Relaxed);
                return None;
            }
            let k = self.cluster.keys.cache(&hex(key));
            let got: Result<Option<Vec<u8>>, CallError> = self
                .cluster
                .redis
                .once_within(Op::CacheGet, LOOKUP_DEADLINE, |mut c| {
                    let k = &k;
                    async move { redis::cmd("GET").arg(k).query_async(&mut c).await }
                })
                .await;
            match got {
                Ok(Some(raw)) => match decode(Bytes::from(raw), unix_ms(SystemTime::now())) {
                    Some(e) => {
                        self.counters.hits.fetch_add(1, Ordering::Relaxed);
                        Some(e)
                    }
                    None => {
                        self.counters.misses.fetch_add(1, Ordering::Relaxed);
                        None
                    }
                },
                Ok(None) => {
                    self.counters.misses.fetch_add(1, Ordering::Relaxed);
                    None
                }
                Err(_) => {
                    self.counters.errors.fetch_add(1, Ordering::Relaxed);
                    None
                }
            }
        })
    }

    fn put(&self, key: &CacheKey, entry: &Arc<Entry>) {
        if !self.cluster.up() {
            return;
        }
        let Ok(permit) = Arc::clone(&self.writes).try_acquire_owned() else {
            self.counters.writes_dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let Ok(handle) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let ttl_ms = u64::try_from(entry.ttl().as_millis())
            .unwrap_or(u64::MAX)
            .max(1);
        let value = encode(entry, unix_ms(SystemTime::now()).saturating_add(ttl_ms));
        let k = self.cluster.keys.cache(&hex(key));
        let cluster = Arc::clone(&self.cluster);
        let counters = Arc::clone(&self.counters);
        handle.spawn(async move {
            let _permit = permit;
            let sent = cluster
                .redis
                .once(Op::CachePut, |mut c| {
                    let (k, value) = (&k, &value);
                    async move {
                        redis::cmd("SET")
                            .arg(k)
                            .arg(value)
                            .arg("PX")
                            .arg(ttl_ms)
                            .query_async::<()>(&mut c)
                            .await
                    }
                })
                .await;
            match sent {
                Ok(()) => counters.writes.fetch_add(1, Ordering::Relaxed),
                Err(_) => counters.write_errors.fetch_add(1, Ordering::Relaxed),
            };
        });
    }
}

impl Cluster {
    /// Delete this fleet's shared cache entries; returns how many.
    pub async fn purge_shared_cache(&self) -> Result<u64, CallError> {
        let pattern = self.keys.cache_pattern();
        let mut cursor: u64 = 0;
        let mut purged = 0u64;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = self
                .redis
                .idempotent(Op::CachePurge, |mut c| {
                    let pattern = &pattern;
                    async move {
                        redis::cmd("SCAN")
                            .arg(cursor)
                            .arg("MATCH")
                            .arg(pattern)
                            .arg("COUNT")
                            .arg(1000)
                            .query_async(&mut c)
                            .await
                    }
                })
                .await?;
            if !keys.is_empty() {
                let n: u64 = self
                    .redis
                    .idempotent(Op::CachePurge, |mut c| {
                        let keys = &keys;
                        async move { redis::cmd("UNLINK").arg(keys).query_async(&mut c).await }
                    })
                    .await?;
                purged += n;
            }
            if next == 0 {
                return Ok(purged);
            }
            cursor = next;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_expire() {
        let key = CacheKey::from_bytes([7; 32]);
        assert_eq!(hex(&key).len(), 64);
        // An entry as the store makes it: filled, stored, read back.
        let cache = Arc::new(crate::cache::ResponseCache::new(1 << 20, 1 << 20));
        let crate::cache::Lock::Leader(guard) = cache.lock(key) else {
            panic!("expected to lead");
        };
        let mut fill = cache.fill(
            guard,
            Duration::from_secs(60),
            Some(HeaderValue::from_static("application/json")),
            "agent-v1".into(),
            HeaderValue::from_static("agent-v1"),
        );
        fill.observe(&Bytes::from_static(b"{\"ok\":true}"));
        assert!(fill.store());
        let entry = cache.get(&key).expect("stored");
        let raw = Bytes::from(encode(&entry, 10_000));
        let back = decode(raw.clone(), 4_000).expect("decodes");
        assert_eq!(&back.body[..], b"{\"ok\":true}");
        assert_eq!(&*back.upstream, "agent-v1");
        assert_eq!(
            back.content_type.as_ref().map(|v| v.as_bytes()),
            Some(&b"application/json"[..])
        );
        assert_eq!(back.ttl, Duration::from_secs(6), "what is left of the ttl");
        assert!(decode(raw.clone(), 10_000).is_none(), "expired");
        assert!(decode(Bytes::from_static(b"XX"), 0).is_none());
        assert!(decode(raw.slice(..14), 0).is_none(), "truncated");
    }
}
