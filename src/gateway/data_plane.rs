//! `DataPlane`: what a request reads or updates, and nothing else. The
//! traffic listener's connections (`server::conn`) and the request
//! pipeline (`proxy`) hold an `Arc<DataPlane>` and never see the
//! [`Gateway`](super::Gateway) that owns it: reload locks, the rollout
//! registry, Prometheus rendering and the fleet's lease are out of their
//! reach by type, not by habit.
//!
//! Everything here survives reloads. The one field the control plane
//! writes, the `Runtime`, is private to the `gateway` module: a request
//! can load it, only a reload or a rollout republish stores it.

use std::sync::Arc;
use std::sync::atomic::AtomicUsize;

use arc_swap::{ArcSwap, Guard};
use tokio_util::task::TaskTracker;

use crate::cache::ResponseCache;
use crate::cluster::fleet_feedback::{Claim, FleetClaims};
use crate::proxy::budget::BodyBudget;
use crate::runtime::Runtime;
use crate::telemetry::VersionMetrics;
use crate::telemetry::feedback_index::{FeedbackError, FeedbackIndex, digest};
use crate::telemetry::{AccessLog, otlp::Exporter};

pub struct DataPlane {
    /// The config in force. Loaded once per request (one atomic), stored
    /// once per reload by the gateway.
    pub(super) runtime: ArcSwap<Runtime>,
    /// Every mirror task, so shutdown can wait for them within its grace.
    pub mirrors: TaskTracker,
    /// The response cache, shared by the routes that opt in (its entries
    /// are keyed by version deps, never flushed by a reload).
    pub cache: Arc<ResponseCache>,
    /// Requests in flight on the traffic listener, for `max_in_flight`.
    pub in_flight: AtomicUsize,
    /// Request bodies held in memory, for `server.max_buffered`.
    pub buffered: Arc<BodyBudget>,
    pub access_log: AccessLog,
    /// Request id → version, for outcome feedback.
    pub feedback: FeedbackIndex,
    /// OTLP span export, when `[tracing]` names an endpoint (set at start;
    /// changing it needs a restart).
    pub tracer: Option<Exporter>,
    /// With `[cluster]`: the fleet's feedback index, for the feedback
    /// endpoint's claims (bound at start).
    pub(super) fleet: Option<FleetClaims>,
}

impl DataPlane {
    /// The config in force, kept by the caller for as long as it needs
    /// it (a request: to its end).
    pub fn runtime(&self) -> Arc<Runtime> {
        self.runtime.load_full()
    }

    /// The config in force, for a short look.
    pub fn runtime_guard(&self) -> Guard<Arc<Runtime>> {
        self.runtime.load()
    }

    /// Claim the one feedback allowed for a request id: the metrics of the
    /// version that served it. With `[cluster]`, in the fleet's index, so
    /// feedback posted to any replica counts once; when Redis cannot tell
    /// (unknown there yet, or unreachable), in this replica's own index,
    /// and the claim is queued to the fleet's.
    pub async fn claim_feedback(
        &self,
        request_id: &[u8],
    ) -> Result<Arc<VersionMetrics>, FeedbackError> {
        let Some(fleet) = self.fleet.as_ref().filter(|f| f.up()) else {
            // Alone, or Redis is known to be down: this replica's index.
            let claimed = self.feedback.claim(request_id);
            if let (Some(_), Ok(metrics)) = (&self.fleet, &claimed) {
                self.feedback.forward(request_id, metrics, true);
            }
            return claimed;
        };
        match fleet.claim(digest(request_id)).await {
            Ok(Claim::Claimed {
                route,
                version,
                judged,
            }) => {
                let local = self.feedback.claim(request_id);
                match self.version_metrics(&route, &version, judged) {
                    Some(m) => Ok(m),
                    None => local,
                }
            }
            Ok(Claim::Repeat) => {
                let _ = self.feedback.claim(request_id);
                Err(FeedbackError::Repeat)
            }
            Ok(Claim::Unknown) | Err(_) => {
                let metrics = self.feedback.claim(request_id)?;
                self.feedback.forward(request_id, &metrics, true);
                Ok(metrics)
            }
        }
    }

    /// A version's metrics in the running config: the judged ones, or the
    /// pinned ones for a request the judge must not count.
    fn version_metrics(
        &self,
        route: &str,
        version: &str,
        judged: bool,
    ) -> Option<Arc<VersionMetrics>> {
        let rt = self.runtime.load();
        let r = rt.routes.iter().find(|r| &*r.name == route)?;
        let v = r.versions.iter().find(|v| &*v.target.name == version)?;
        Some(match (&v.pinned_metrics, judged) {
            (Some(pinned), false) => Arc::clone(pinned),
            _ => Arc::clone(&v.metrics),
        })
    }
}
