//! The fleet (`[cluster]`, SPEC §12): many replicas behave as one cutover
//! through Redis, an existing store, never a protocol of our own. Control
//! plane only: nothing here runs on the request path, which only ever
//! hands a feedback record to a bounded queue or, with `cache.shared`,
//! looks a local cache miss up with a short deadline.
//!
//! * [`client`]: the one `ConnectionManager`, every call with a deadline,
//!   failures counted by operation (`cutover_cluster_errors_total{op}`).
//! * [`keys`]: every key, under `cutover:{NAME}:`.
//! * [`lease`]: the leader's lease (`SET NX PX` + compare-and-renew) and
//!   the fencing epoch.
//! * [`counts`]: what each replica pushes, and the exact sum.
//! * [`fleet`]: reading, writing (the fenced compare-and-set script) and
//!   acting on the rollout documents.
//! * [`sync`]: the loop every `sync_interval`: lease, read, adopt, push,
//!   sum, judge (the leader), commit.
//! * [`fleet_feedback`]: the request-id index in Redis (SPEC §7's hour);
//!   the feedback endpoint claims in it through `FleetClaims`. That, the
//!   record queue's sender and the cache's `SharedTier` are all the data
//!   plane holds of the fleet.
//! * [`shared_cache`]: the second cache tier (`cache.shared`).
//! * [`status`]: what `/status` shows under `cluster`.
//!
//! `docs/fleet.md` explains the design and the failure modes.

pub mod client;
pub mod counts;
pub mod fleet;
pub mod fleet_feedback;
pub mod keys;
pub mod lease;
pub mod shared_cache;
pub mod status;
pub mod sync;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime};

use metrics::Gauge;

use crate::config::ClusterConfig;
use crate::telemetry::names;

use client::Redis;
use keys::Keys;

/// One replica's membership of a fleet. Built with the gateway (no I/O:
/// the connection is made by the first call), run by [`sync::spawn`].
pub struct Cluster {
    pub config: ClusterConfig,
    pub keys: Keys,
    pub redis: Redis,
    /// This process among the replica's lives: a restarted replica with
    /// the same name pushes under a new field, so its earlier counts stay.
    pub incarnation: String,
    pub health: Health,
    pub feedback: fleet_feedback::FleetFeedback,
    /// (route, seq) of unreadable documents already warned about.
    warned: Mutex<Vec<(String, u64)>>,
}

impl Cluster {
    pub fn new(config: &ClusterConfig) -> Result<Arc<Cluster>, String> {
        // Each call must end well within a lease, and a sync round is a
        // few calls.
        let timeout = config
            .sync_interval
            .clamp(Duration::from_millis(250), Duration::from_secs(2))
            .min(config.lease / 2);
        let redis = Redis::new(&config.redis, timeout)?;
        let keys = Keys::new(&config.name);
        let incarnation: u32 = rand::random();
        Ok(Arc::new(Cluster {
            feedback: fleet_feedback::FleetFeedback::new(),
            config: config.clone(),
            keys,
            redis,
            incarnation: format!("{incarnation:08x}"),
            health: Health::new(),
            warned: Mutex::new(Vec::new()),
        }))
    }

    /// The field this replica pushes its counts under.
    pub fn push_field(&self) -> String {
        format!("{}/{}", self.config.replica, self.incarnation)
    }

    /// Redis answered the last sync round.
    pub fn up(&self) -> bool {
        self.health.up.load(Ordering::Acquire)
    }

    /// Say once per document that a rollout document cannot be read.
    fn warn_once(&self, route: &str, seq: u64) {
        let mut warned = self.warned.lock().unwrap_or_else(|p| p.into_inner());
        if warned.iter().any(|(r, s)| r == route && *s == seq) {
            return;
        }
        warned.retain(|(r, _)| r != route);
        warned.push((route.to_string(), seq));
        tracing::warn!(
            route,
            seq,
            key = %self.keys.rollout(route),
            "the fleet's rollout document is not in a format this replica reads (a newer cutover, or edited by hand): holding; an operator action replaces it"
        );
    }

    /// This replica holds the lease (as of the last round).
    pub fn is_leader(&self) -> bool {
        self.health.leader.load(Ordering::Acquire)
    }
}

/// What the sync loop learned, for `/status`, the metrics and the data
/// plane's one question ("is Redis up?", an atomic).
pub struct Health {
    up: AtomicBool,
    leader: AtomicBool,
    epoch: AtomicU64,
    view: Mutex<View>,
    up_gauge: Gauge,
    leader_gauge: Gauge,
    replicas_gauge: Gauge,
}

/// The slower-changing part of [`Health`].
#[derive(Clone, Debug, Default)]
pub struct View {
    /// The leader's replica name, as of the last round.
    pub leader: Option<String>,
    /// Replica → last sync, as Redis holds it.
    pub replicas: BTreeMap<String, SystemTime>,
    /// Since when Redis has not answered (`None` while it does). Starts
    /// set: until the first round answers, the fleet is not reachable.
    pub degraded_since: Option<SystemTime>,
    /// The last round Redis answered.
    pub last_sync: Option<SystemTime>,
    /// The last failure, redacted.
    pub last_error: Option<String>,
    /// Transitions refused because another writer (a newer leader, an
    /// operator) wrote first: the fence at work.
    pub refused_writes: u64,
    /// "Live": seen within this (three leases).
    pub live_within: Duration,
}

impl Health {
    fn new() -> Health {
        let h = Health {
            up: AtomicBool::new(false),
            leader: AtomicBool::new(false),
            epoch: AtomicU64::new(0),
            view: Mutex::new(View {
                degraded_since: Some(SystemTime::now()),
                ..View::default()
            }),
            up_gauge: metrics::gauge!(names::CLUSTER_UP),
            leader_gauge: metrics::gauge!(names::CLUSTER_LEADER),
            replicas_gauge: metrics::gauge!(names::CLUSTER_REPLICAS),
        };
        h.up_gauge.set(0.0);
        h.leader_gauge.set(0.0);
        h.replicas_gauge.set(0.0);
        h
    }

    pub fn view(&self) -> View {
        self.lock().clone()
    }

    fn lock(&self) -> MutexGuard<'_, View> {
        self.view.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn epoch(&self) -> u64 {
        self.epoch.load(Ordering::Acquire)
    }

    /// A round failed: Redis is unreachable (or too slow) from here.
    fn failed(&self, error: &str) {
        let was_up = self.up.swap(false, Ordering::AcqRel);
        self.leader.store(false, Ordering::Release);
        self.up_gauge.set(0.0);
        self.leader_gauge.set(0.0);
        let mut v = self.lock();
        if v.degraded_since.is_none() {
            v.degraded_since = Some(SystemTime::now());
        }
        v.last_error = Some(error.to_string());
        drop(v);
        // Seen "recently" fades as the outage goes on: nobody is seen.
        self.replicas_gauge.set(self.live_replicas() as f64);
        if was_up {
            tracing::warn!(
                error,
                "fleet Redis unreachable: serving at the last weights, rollouts hold, rollback triggers checked locally"
            );
        }
    }

    /// A round succeeded.
    fn answered(&self, leader: Option<String>, mine: bool, epoch: u64) {
        let was_up = self.up.swap(true, Ordering::AcqRel);
        self.leader.store(mine, Ordering::Release);
        self.epoch.store(epoch, Ordering::Release);
        self.up_gauge.set(1.0);
        self.leader_gauge.set(if mine { 1.0 } else { 0.0 });
        let mut v = self.lock();
        let since = v.degraded_since.take();
        v.leader = leader;
        v.last_sync = Some(SystemTime::now());
        drop(v);
        if !was_up {
            tracing::info!(down_for = ?since.and_then(|s| s.elapsed().ok()), "fleet Redis answers");
        }
    }

    fn replicas_seen(&self, seen: BTreeMap<String, SystemTime>, live_within: Duration) {
        let mut v = self.lock();
        v.replicas = seen;
        v.live_within = live_within;
        drop(v);
        self.replicas_gauge.set(self.live_replicas() as f64);
    }

    /// Replicas whose last sync is within three leases.
    fn live_replicas(&self) -> usize {
        let v = self.lock();
        let now = SystemTime::now();
        v.replicas
            .values()
            .filter(|t| now.duration_since(**t).unwrap_or_default() <= v.live_within)
            .count()
    }

    fn refused(&self) {
        self.lock().refused_writes += 1;
    }
}
