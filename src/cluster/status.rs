//! `/status` → `cluster` (SPEC §12): the fleet as this replica sees it.
//! Absent (not `null`) without `[cluster]`, so a single process's
//! `/status` is what it always was.
//!
//! ```json
//! "cluster": {
//!   "name": "chat-gateway", "replica": "pod-a", "redis": "redis://:***@redis:6379/0",
//!   "up": true, "degraded": false, "degraded_since": null, "last_sync": "2025-...Z",
//!   "last_error": null, "leader": "pod-b", "is_leader": false, "epoch": 4,
//!   "lease_ms": 5000, "sync_interval_ms": 1000,
//!   "replicas": [{"replica": "pod-a", "last_seen": "2025-...Z", "live": true}],
//!   "refused_writes": 0, "feedback_written": 120, "feedback_dropped": 0,
//!   "shared_cache": {"hits": 3, "misses": 9, ...}
//! }
//! ```
//!
//! `live` means seen within the last three leases (what
//! `cutover_cluster_replicas` counts). `degraded_since` is when Redis
//! stopped answering, `null` while it answers.

use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::Cluster;
use super::shared_cache::SharedCacheView;

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ClusterStatus {
    pub name: String,
    pub replica: String,
    /// The Redis URL, password shown as `***`.
    pub redis: String,
    /// Redis answered the last sync round.
    pub up: bool,
    /// The opposite of `up`, spelled out.
    pub degraded: bool,
    pub degraded_since: Option<String>,
    pub last_sync: Option<String>,
    pub last_error: Option<String>,
    /// The lease holder's replica name.
    pub leader: Option<String>,
    pub is_leader: bool,
    pub epoch: u64,
    pub lease_ms: u64,
    pub sync_interval_ms: u64,
    pub replicas: Vec<ReplicaView>,
    /// Writes refused by the fence (a newer lease or decision existed).
    pub refused_writes: u64,
    /// Feedback records written to the fleet's index, and dropped before
    /// (the queue was full; they stay in this replica's own index).
    pub feedback_written: u64,
    pub feedback_dropped: u64,
    /// With `cache.shared`.
    pub shared_cache: Option<SharedCacheView>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct ReplicaView {
    pub replica: String,
    pub last_seen: String,
    /// Seen within the last three leases.
    pub live: bool,
}

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl Cluster {
    pub fn status(
        &self,
        feedback_dropped: u64,
        shared_cache: Option<SharedCacheView>,
    ) -> ClusterStatus {
        let v = self.health.view();
        let now = SystemTime::now();
        let live_within = self.config.lease * 3;
        ClusterStatus {
            name: self.config.name.clone(),
            replica: self.config.replica.clone(),
            redis: self.config.redis.redacted().to_string(),
            up: self.up(),
            degraded: !self.up(),
            degraded_since: v.degraded_since.map(rfc3339),
            last_sync: v.last_sync.map(rfc3339),
            last_error: v.last_error,
            leader: v.leader,
            is_leader: self.is_leader(),
            epoch: self.health.epoch(),
            lease_ms: millis(self.config.lease),
            sync_interval_ms: millis(self.config.sync_interval),
            replicas: v
                .replicas
                .iter()
                .map(|(name, seen)| ReplicaView {
                    replica: name.clone(),
                    last_seen: rfc3339(*seen),
                    live: now.duration_since(*seen).unwrap_or_default() <= live_within,
                })
                .collect(),
            refused_writes: v.refused_writes,
            feedback_written: self.feedback.written(),
            feedback_dropped,
            shared_cache,
        }
    }
}
