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
//! never reallocates: 38 maps of 4 096 buckets of 13 bytes (key, entry and
//! control byte), about 1.9 MiB. Three choices keep it that small (it was
//! 6.3 MiB, a third of cutover's peak RSS in the shared bench):
//! - a generation holds 3 584 entries, hashbrown's 7/8 load of 4 096
//!   buckets; 4 096 entries took 8 192 buckets, half of them always empty;
//! - an entry names its version by a slot in its generation's table of
//!   versions rather than by an 8-byte `Arc`, and its time by seconds
//!   since its generation began, with the claim in the slot's top bit: 4
//!   bytes in all;
//! - the key is stored 4-byte aligned, so a bucket has no padding (a `u64`
//!   key made every bucket 16 bytes before its control byte).
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

/// A request id's keyed hash, stored as two halves so that a bucket is
/// 4-byte aligned and carries no padding.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Key([u32; 2]);

impl Key {
    fn new(hash: u64) -> Key {
        Key([hash as u32, (hash >> 32) as u32])
    }

    fn get(self) -> u64 {
        u64::from(self.0[0]) | (u64::from(self.0[1]) << 32)
    }
}

impl std::hash::Hash for Key {
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write_u64(self.get());
    }
}

struct Entry {
    /// Seconds between its generation's start and the request.
    age: u16,
    /// The version that served it (an index into its generation's
    /// `versions`), and [`USED`] once its feedback is claimed.
    slot: u16,
}

/// The bit of `Entry::slot` that marks an id's feedback as claimed.
const USED: u16 = 0x8000;

// A generation's table never holds more versions than it has entries, so
// a slot leaves the claim bit free; and a generation rotates within the
// window, so an age fits.
const _: () = assert!(SHARD_GENERATION < USED as usize);
const _: () = assert!(FEEDBACK_WINDOW.as_secs() < u16::MAX as u64);

/// Versions a record looks for among the last added to its generation's
/// table before it adds its own again.
const RECENT_VERSIONS: usize = 8;

#[derive(Default)]
struct Generation {
    ids: HashMap<Key, Entry, BuildHasherDefault<KeyHasher>>,
    /// The versions the entries point to: a handful in practice.
    versions: Vec<Arc<VersionMetrics>>,
    /// Seconds since the index was created, when it began.
    started: u32,
}

impl Generation {
    fn with_capacity() -> Generation {
        Generation {
            ids: HashMap::with_capacity_and_hasher(SHARD_GENERATION, Default::default()),
            versions: Vec::new(),
            started: 0,
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
    /// Records for `current` not yet in its table, in order. A record is
    /// appended here and the table takes them [`PENDING`] at a time: an
    /// insert lands in a random bucket of a table far larger than the
    /// caches, and one per request, with the lock's release waiting for
    /// that store, was a quarter of the request path's own time (perf). In
    /// a batch the misses overlap.
    pending: Vec<(Key, Entry)>,
}

/// Records a shard holds before they go into its table.
const PENDING: usize = 32;

impl Shard {
    /// Move the pending records into the current table, in order.
    fn settle(&mut self) {
        for (key, entry) in self.pending.drain(..) {
            self.current.ids.insert(key, entry);
        }
    }
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
                        pending: Vec::with_capacity(PENDING),
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

    fn shard(&self, key: Key) -> &Mutex<Shard> {
        &self.shards[(key.get() as usize) % SHARDS]
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
        self.record_at(request_id, metrics, self.now());
    }

    /// `record`, at `now` seconds since the index was created.
    fn record_at(&self, request_id: &[u8], metrics: &Arc<VersionMetrics>, now: u32) {
        let key = Key::new(self.hasher.hash_one(request_id));
        let window = FEEDBACK_WINDOW.as_secs() as u32;
        let mut shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        if shard.current.ids.len() + shard.pending.len() >= SHARD_GENERATION
            || now.saturating_sub(shard.current.started) >= window
        {
            shard.settle();
            // Reuse the dropped generation's allocation for the new one:
            // maps never grow by doubling, and nothing is reallocated.
            let mut fresh = std::mem::take(&mut shard.previous);
            fresh.clear();
            fresh.ids.reserve(SHARD_GENERATION);
            fresh.started = now;
            shard.previous = std::mem::replace(&mut shard.current, fresh);
        }
        let slot = shard.current.slot(metrics);
        // Under the window, by the rotation just above.
        let age = u16::try_from(now - shard.current.started).unwrap_or(u16::MAX);
        shard.pending.push((key, Entry { age, slot }));
        if shard.pending.len() >= PENDING {
            shard.settle();
        }
    }

    /// Claim the one feedback allowed for `request_id`: the version's
    /// metrics to count it on.
    pub fn claim(&self, request_id: &[u8]) -> Result<Arc<VersionMetrics>, FeedbackError> {
        self.claim_at(request_id, self.now())
    }

    /// `claim`, at `now` seconds since the index was created.
    fn claim_at(&self, request_id: &[u8], now: u32) -> Result<Arc<VersionMetrics>, FeedbackError> {
        let key = Key::new(self.hasher.hash_one(request_id));
        let mut shard = self.shard(key).lock().unwrap_or_else(|p| p.into_inner());
        let shard = &mut *shard;
        shard.settle();
        let generation = if shard.current.ids.contains_key(&key) {
            &mut shard.current
        } else {
            &mut shard.previous
        };
        let entry = generation.ids.get_mut(&key).ok_or(FeedbackError::Unknown)?;
        let at = generation.started.saturating_add(u32::from(entry.age));
        if u64::from(now.saturating_sub(at)) > FEEDBACK_WINDOW.as_secs() {
            return Err(FeedbackError::Unknown);
        }
        if entry.slot & USED != 0 {
            return Err(FeedbackError::Repeat);
        }
        entry.slot |= USED;
        generation
            .versions
            .get(usize::from(entry.slot & !USED))
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
        // "buckets of 13 bytes": key and entry, and hashbrown's control byte.
        assert_eq!(std::mem::size_of::<(Key, Entry)>() + 1, 13);
    }

    #[test]
    fn feedback_is_taken_for_an_hour_from_the_request() {
        let index = FeedbackIndex::default();
        let m = Arc::new(VersionMetrics::new("r", "v"));
        index.record_at(b"early", &m, 0);
        index.record_at(b"late", &m, 1_800);
        index.record_at(b"later", &m, 1_900);
        // The hour is counted from each request, not from its generation.
        assert!(index.claim_at(b"late", 5_400).is_ok());
        assert_eq!(
            index.claim_at(b"early", 3_601).err(),
            Some(FeedbackError::Unknown)
        );
        assert_eq!(
            index.claim_at(b"later", 5_501).err(),
            Some(FeedbackError::Unknown)
        );
        // An hour after its start, a generation rotates (200 ids reach
        // every shard): its ids are still claimable, for their own hour,
        // from the previous generation.
        index.record_at(b"old", &m, 3_000);
        for i in 0..200 {
            index.record_at(format!("new-{i}").as_bytes(), &m, 3_700);
        }
        let started: Vec<u32> = index
            .shards
            .iter()
            .map(|s| s.lock().unwrap_or_else(|p| p.into_inner()).current.started)
            .collect();
        assert!(started.iter().all(|&t| t == 3_700), "{started:?}");
        assert!(index.claim_at(b"old", 6_600).is_ok());
        assert!(index.claim_at(b"new-7", 7_300).is_ok());
        assert_eq!(
            index.claim_at(b"new-7", 7_300).err(),
            Some(FeedbackError::Repeat)
        );
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
                // Pending records never make a table grow past its size.
                assert!(s.current.ids.capacity() <= SHARD_GENERATION);
                assert!(s.previous.ids.capacity() <= SHARD_GENERATION);
                s.current.ids.len() + s.pending.len() + s.previous.ids.len()
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
