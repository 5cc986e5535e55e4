//! The feedback index: request id → the version that served it, so a
//! client can report the task's outcome later (SPEC §7: within an hour,
//! each request id counts once).
//!
//! Bounded in memory: 19 shards, each holding two generations of at most
//! `SHARD_GENERATION` (3 584) entries, [`MAX_IDS`] (136 192) ids in all. A
//! shard rotates (dropping its older generation) when its current
//! generation is full or an hour old. An id therefore survives at least
//! until its shard has taken one more full generation, about
//! [`KEPT_AT_LEAST`] (68 096) requests spread over the shards, or an hour,
//! whichever comes first: every id is kept the full hour up to about 18
//! requests a second; above that, for the last ~68 096 requests. Never
//! beyond two hours. Generations are allocated at full size, so the index
//! never reallocates: 38 maps of 4 096 buckets of 17 bytes (key, entry and
//! control byte), about 2.5 MiB. Two choices keep it that small (it was
//! 6.3 MiB, a third of cutover's peak RSS in the shared bench):
//! - a generation holds 3 584 entries, hashbrown's 7/8 load of 4 096
//!   buckets; 4 096 entries took 8 192 buckets, half of them always empty;
//! - an entry names its version by a 2-byte slot in its generation's table
//!   of versions rather than by an 8-byte `Arc`.
//!
//! Keys are the ids' SipHash under a per-process random key: fixed size,
//! not predictable by clients, and so used as the map's hash as they are.

use std::collections::HashMap;
use std::hash::{BuildHasher, BuildHasherDefault, Hasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::metrics::VersionMetrics;

const SHARDS: usize = 19;
/// 7/8 of 4 096: hashbrown's largest load for that many buckets.
const SHARD_GENERATION: usize = 3_584;

/// The most ids the index holds (both generations of every shard).
pub const MAX_IDS: usize = SHARDS * SHARD_GENERATION * 2;

/// Requests after which an id may be forgotten, if that comes within the
/// hour: one more full generation in every shard.
pub const KEPT_AT_LEAST: usize = SHARDS * SHARD_GENERATION;

/// How long feedback is accepted after the request.
pub const FEEDBACK_WINDOW: Duration = Duration::from_secs(3600);

struct Entry {
    /// Seconds since the index was created.
    at: u32,
    /// The version that served it: an index into its generation's
    /// `versions`.
    slot: u16,
    used: bool,
}

// A generation's table never holds more versions than it has entries.
const _: () = assert!(SHARD_GENERATION <= u16::MAX as usize);

/// Versions a record looks for among the last added to its generation's
/// table before it adds its own again.
const RECENT_VERSIONS: usize = 8;

#[derive(Default)]
struct Generation {
    ids: HashMap<u64, Entry, BuildHasherDefault<KeyHasher>>,
    /// The versions the entries point to: a handful in practice.
    versions: Vec<Arc<VersionMetrics>>,
}

impl Generation {
    fn with_capacity() -> Generation {
        Generation {
            ids: HashMap::with_capacity_and_hasher(SHARD_GENERATION, Default::default()),
            versions: Vec::new(),
        }
    }

    /// `metrics`' slot. Only the last few versions added are searched, and
    /// one not among them is added again (a duplicate is harmless): with a
    /// thousand routes the search stays short, and the table can grow no
    /// larger than the generation.
    fn slot(&mut self, metrics: &Arc<VersionMetrics>) -> u16 {
        let from = self.versions.len().saturating_sub(RECENT_VERSIONS);
        let found = self.versions[from..]
            .iter()
            .rposition(|v| Arc::ptr_eq(v, metrics));
        let slot = match found {
            Some(i) => from + i,
            None => {
                self.versions.push(Arc::clone(metrics));
                self.versions.len() - 1
            }
        };
        slot as u16
    }

    fn clear(&mut self) {
        self.ids.clear();
        self.versions.clear();
    }
}

#[derive(Default)]
struct Shard {
    current: Generation,
    previous: Generation,
    rotated_at: u32,
}

/// The map's hasher: the keys are already keyed SipHash values, uniform
/// and secret, so hashing them again would only cost time.
#[derive(Default)]
struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write_u64(&mut self, key: u64) {
        self.0 = key;
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only u64 keys are hashed here; fold anything else all the same.
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub enum FeedbackError {
    /// Never seen, expired, or evicted.
    Unknown,
    /// Feedback for this id was already counted.
    Repeat,
}

pub struct FeedbackIndex {
    shards: Box<[Mutex<Shard>]>,
    hasher: RandomState,
    epoch: Instant,
    /// With `[cluster]`: every record (and every claim made here without
    /// the fleet) is also handed to the fleet's index in Redis, through a
    /// bounded queue that never waits; full, the record stays local only.
    forward: OnceLock<mpsc::Sender<Forwarded>>,
    forward_dropped: AtomicU64,
}

/// A record for the fleet's feedback index (`crate::cluster::fleet_feedback`).
pub struct Forwarded {
    /// [`digest`] of the request id: fixed size, the same on every replica.
    pub id: [u8; 16],
    /// The version that served it (its route and version names).
    pub metrics: Arc<VersionMetrics>,
    /// Already claimed here: the fleet's copy must be marked used.
    pub claimed: bool,
}

/// The fleet-wide key of a request id.
pub fn digest(request_id: &[u8]) -> [u8; 16] {
    let mut id = [0u8; 16];
    id.copy_from_slice(&blake3::hash(request_id).as_bytes()[..16]);
    id
}

impl Default for FeedbackIndex {
    fn default() -> Self {
        FeedbackIndex {
            shards: (0..SHARDS)
                .map(|_| {
                    Mutex::new(Shard {
                        current: Generation::with_capacity(),
                        ..Shard::default()
                    })
                })
                .collect(),
            hasher: RandomState::new(),
            epoch: Instant::now(),
            forward: OnceLock::new(),
            forward_dropped: AtomicU64::new(0),
        }
    }
}

impl FeedbackIndex {
    fn now(&self) -> u32 {
        u32::try_from(self.epoch.elapsed().as_secs()).unwrap_or(u32::MAX)
    }

    fn shard(&self, key: u64) -> &Mutex<Shard> {
        &self.shards[(key as usize) % SHARDS]
    }

    /// With `[cluster]`: hand every record to the fleet's index too.
    pub fn forward_to(&self, tx: mpsc::Sender<Forwarded>) {
        let _ = self.forward.set(tx);
    }

    /// Records that could not be handed to the fleet (its queue was full).
    pub fn forward_dropped(&self) -> u64 {
        self.forward_dropped.load(Ordering::Relaxed)
    }

    /// Hand a record to the fleet's index, never waiting.
    pub fn forward(&self, request_id: &[u8], metrics: &Arc<VersionMetrics>, claimed: bool) {
        if let Some(tx) = self.forward.get() {
            let record = Forwarded {
                id: digest(request_id),
                metrics: Arc::clone(metrics),
                claimed,
            };
            if tx.try_send(record).is_err() {
                self.forward_dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Remember which version served `request_id`.
    pub fn record(&self, request_id: &[u8], metrics: &Arc<VersionMetrics>) {
        self.forward(request_id, metrics, false);
        let key = self.hasher.hash_one(request_id);
        let now = self.now();
        let window = FEEDBACK_WINDOW.as_secs() as u32;
        let mut shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        if shard.current.ids.len() >= SHARD_GENERATION
            || now.saturating_sub(shard.rotated_at) >= window
        {
            // Reuse the dropped generation's allocation for the new one:
            // maps never grow by doubling, and nothing is reallocated.
            let mut fresh = std::mem::take(&mut shard.previous);
            fresh.clear();
            fresh.ids.reserve(SHARD_GENERATION);
            shard.previous = std::mem::replace(&mut shard.current, fresh);
            shard.rotated_at = now;
        }
        let slot = shard.current.slot(metrics);
        shard.current.ids.insert(
            key,
            Entry {
                at: now,
                slot,
                used: false,
            },
        );
    }

    /// Claim the one feedback allowed for `request_id`: the version's
    /// metrics to count it on.
    pub fn claim(&self, request_id: &[u8]) -> Result<Arc<VersionMetrics>, FeedbackError> {
        let key = self.hasher.hash_one(request_id);
        let now = self.now();
        let mut shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        let shard = &mut *shard;
        let generation = if shard.current.ids.contains_key(&key) {
            &mut shard.current
        } else {
            &mut shard.previous
        };
        let entry = generation.ids.get_mut(&key).ok_or(FeedbackError::Unknown)?;
        if u64::from(now.saturating_sub(entry.at)) > FEEDBACK_WINDOW.as_secs() {
            return Err(FeedbackError::Unknown);
        }
        if std::mem::replace(&mut entry.used, true) {
            return Err(FeedbackError::Repeat);
        }
        generation
            .versions
            .get(usize::from(entry.slot))
            .cloned()
            .ok_or(FeedbackError::Unknown)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn once_per_id_and_unknown_ids() {
        let index = FeedbackIndex::default();
        let m = Arc::new(VersionMetrics::new("r", "v"));
        index.record(b"req-1", &m);
        assert!(index.claim(b"req-1").is_ok());
        assert_eq!(index.claim(b"req-1").err(), Some(FeedbackError::Repeat));
        assert_eq!(index.claim(b"req-2").err(), Some(FeedbackError::Unknown));
    }

    #[test]
    fn each_id_claims_the_version_that_served_it() {
        let index = FeedbackIndex::default();
        // More versions than a record searches among, interleaved, so
        // slots are both found and added again.
        let versions: Vec<_> = (0..3 * RECENT_VERSIONS)
            .map(|i| Arc::new(VersionMetrics::new("r", &format!("v{i}"))))
            .collect();
        for round in 0..40 {
            for (i, m) in versions.iter().enumerate() {
                index.record(format!("id-{round}-{i}").as_bytes(), m);
            }
        }
        for round in 0..40 {
            for (i, m) in versions.iter().enumerate() {
                let claimed = index.claim(format!("id-{round}-{i}").as_bytes());
                assert!(claimed.is_ok_and(|c| Arc::ptr_eq(&c, m)), "{round}/{i}");
            }
        }
        let tables: usize = index
            .shards
            .iter()
            .map(|s| {
                s.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .current
                    .versions
                    .len()
            })
            .sum();
        assert!(tables <= 40 * versions.len(), "{tables}");
    }

    #[test]
    fn the_documented_figures_are_the_code_s() {
        assert_eq!(MAX_IDS, 136_192);
        assert_eq!(KEPT_AT_LEAST, 68_096);
        // "the full hour up to about 18 requests a second"
        assert_eq!(KEPT_AT_LEAST / 3600, 18);
        let index = FeedbackIndex::default();
        let shard = index.shards[0].lock().unwrap_or_else(|p| p.into_inner());
        // hashbrown: 4 096 buckets, filled to its 7/8 load with none to
        // spare.
        assert_eq!(shard.current.ids.capacity(), SHARD_GENERATION);
        // "buckets of 17 bytes": key and entry, and hashbrown's control byte.
        assert_eq!(std::mem::size_of::<(u64, Entry)>() + 1, 17);
    }

    #[test]
    fn bounded() {
        let index = FeedbackIndex::default();
        let m = Arc::new(VersionMetrics::new("r", "v"));
        for i in 0..(SHARDS * SHARD_GENERATION * 3) {
            index.record(format!("id-{i}").as_bytes(), &m);
        }
        let held: usize = index
            .shards
            .iter()
            .map(|s| {
                let s = s.lock().unwrap_or_else(|p| p.into_inner());
                s.current.ids.len() + s.previous.ids.len()
            })
            .sum();
        assert!(held <= MAX_IDS, "{held}");
        // The newest ids are still there.
        assert!(
            index
                .claim(format!("id-{}", SHARDS * SHARD_GENERATION * 3 - 1).as_bytes())
                .is_ok()
        );
    }
}
