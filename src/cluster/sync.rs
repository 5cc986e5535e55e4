//! The fleet's loop: one round every `sync_interval` on every replica.
//!
//! ```text
//! lease script ─► report local rollbacks (after an outage)
//!   ─► read: each rollout document + the replicas seen      (1 round trip)
//!   ─► adopt each document (weights republished if they moved);
//!      the leader writes a first document where there is none
//!   ─► push this replica's counts, read every replica's      (1 round trip)
//!   ─► sum, judge: the leader commits a transition (fenced), any
//!      replica keeps the gate results for /status
//! ```
//!
//! A failed call ends the round: Redis is then unreachable from here
//! (`cutover_cluster_up` 0, `/status` says since when), and the round is
//! tried again after `sync_interval`. Meanwhile requests keep the last
//! weights, nothing advances, and the 1 s rollout tick checks the rollback
//! triggers on this replica's own window instead (`Gateway::tick_rollouts`).
//! Nothing here is on the request path.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::Cluster;
use super::client::{CallError, Op};
use super::counts::{self, Pushed};
use super::fleet::{Stored, Written, placeholder};
use super::lease::Lease;
use crate::gateway::Gateway;
use crate::rollout::fleet::{FleetDoc, unix_ms};
use crate::rollout::registry::LocalCounts;

/// Counts hashes outlive their stage by this much (a day), then expire.
const COUNTS_TTL_MS: i64 = 24 * 3600 * 1000;
/// The leader forgets replicas not seen for this long.
const FORGET_REPLICAS_AFTER: Duration = Duration::from_secs(3600);

/// Run the loop until `stop` turns true; the lease is handed back on the
/// way out.
pub fn spawn(
    gateway: Arc<Gateway>,
    cluster: Arc<Cluster>,
    mut stop: watch::Receiver<bool>,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        cluster.feedback.start(Arc::clone(&cluster));
        let mut lease = Lease::new(&cluster.config.replica, cluster.config.lease);
        loop {
            let wait = round(&gateway, &cluster, &mut lease).await;
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        lease.release(&cluster.redis, &cluster.keys).await;
    })
}

/// One round; returns how long to wait for the next.
async fn round(gateway: &Gateway, cluster: &Cluster, lease: &mut Lease) -> Duration {
    let every = cluster.config.sync_interval;
    match try_round(gateway, cluster, lease).await {
        Ok(next) => next,
        Err(e) => {
            cluster.health.failed(&e.to_string());
            every
        }
    }
}

async fn try_round(
    gateway: &Gateway,
    cluster: &Cluster,
    lease: &mut Lease,
) -> Result<Duration, CallError> {
    let every = cluster.config.sync_interval;
    let view = lease.round(&cluster.redis, &cluster.keys).await?;
    let rollouts = &gateway.rollouts;
    cluster.report_local_rollbacks(rollouts).await?;

    // Read every document and the replicas seen.
    let routes = rollouts.routes();
    let (stored, replicas) = read_all(cluster, &routes).await?;

    // Adopt; the leader writes the first document of a rollout.
    let me = cluster.config.replica.clone();
    let mut republish = false;
    let mut current: HashMap<&str, FleetDoc> = HashMap::new();
    for (route, stored) in routes.iter().zip(stored) {
        let Some(local) = rollouts.local_counts(route) else {
            continue;
        };
        if stored.unreadable {
            cluster.warn_once(route, stored.seq);
            continue;
        }
        let agreeing = stored
            .doc
            .as_ref()
            .filter(|d| d.canary == local.fingerprint);
        if let Some(doc) = agreeing {
            republish |= rollouts.adopt(route, doc);
            current.insert(route, doc.clone());
            continue;
        }
        let epoch = lease.current_epoch(cluster.redis.timeout());
        match (epoch, local.link.pending.is_some()) {
            (Some(epoch), false) => {
                // No document for this canary: the leader's config defines
                // the fleet's rollout.
                let previous = stored.doc.clone().or_else(|| placeholder(stored.seq));
                let Some(doc) = rollouts.first_doc(route, previous.as_ref(), &me, epoch) else {
                    continue;
                };
                if cluster
                    .write_doc(Op::Transition, route, &doc, Some(epoch))
                    .await?
                    == Written::Yes
                {
                    tracing::info!(
                        route,
                        state = doc.state.name(),
                        seq = doc.seq,
                        "the fleet's rollout starts (this replica leads)"
                    );
                    republish |= rollouts.adopt(route, &doc);
                    current.insert(route, doc);
                }
            }
            _ => {
                // Another canary's document makes this route serve its
                // baseline; no document yet: hold what this replica has.
                if let Some(doc) = &stored.doc {
                    republish |= rollouts.adopt(route, doc);
                }
            }
        }
    }

    // Push this replica's counts and read everyone's.
    let now = SystemTime::now();
    let now_ms = unix_ms(now);
    let mut pushing: Vec<(&str, LocalCounts, &FleetDoc)> = Vec::new();
    for (route, doc) in &current {
        if let Some(local) = rollouts.local_counts(route)
            && local.link.agrees
            && local.link.doc_id == doc.write_id
            && local.link.pending.is_none()
        {
            pushing.push((route, local, doc));
        }
    }
    pushing.sort_by(|a, b| a.0.cmp(b.0));
    let breaker_open = {
        let rt = gateway.data_plane.runtime();
        move |route: &str| crate::gateway::canary_breaker_open(&rt, route)
    };
    let stale: Vec<&String> = if view.mine {
        replicas
            .iter()
            .filter(|(_, seen)| {
                now.duration_since(**seen).unwrap_or_default() > FORGET_REPLICAS_AFTER
            })
            .map(|(name, _)| name)
            .collect()
    } else {
        Vec::new()
    };
    let field = cluster.push_field();
    let mut pipe = redis::pipe();
    pipe.cmd("HSET")
        .arg(cluster.keys.replicas())
        .arg(&me)
        .arg(now_ms)
        .ignore();
    if !stale.is_empty() {
        pipe.cmd("HDEL")
            .arg(cluster.keys.replicas())
            .arg(&stale)
            .ignore();
    }
    for (route, local, doc) in &pushing {
        let blob = serde_json::to_vec(&Pushed {
            at_ms: now_ms,
            canary: local.fingerprint.clone(),
            stage: doc.stage_id.clone(),
            baseline: (&local.baseline).into(),
            canary_side: (&local.canary).into(),
            window: (&local.window).into(),
            breaker_open: breaker_open(route),
        })
        .unwrap_or_default();
        let key = cluster.keys.counts(route, doc.stage_seq);
        pipe.cmd("HSET").arg(&key).arg(&field).arg(blob).ignore();
        pipe.cmd("PEXPIRE").arg(&key).arg(COUNTS_TTL_MS).ignore();
    }
    for (route, _, doc) in &pushing {
        pipe.cmd("HGETALL")
            .arg(cluster.keys.counts(route, doc.stage_seq));
    }
    let sums: Vec<Vec<(Vec<u8>, Vec<u8>)>> = cluster
        .redis
        .idempotent(Op::Push, |mut c| {
            let pipe = &pipe;
            async move { pipe.query_async(&mut c).await }
        })
        .await?;

    // Judge on the sums; the leader commits.
    let fresh_ms =
        u64::try_from((every * 3).max(cluster.config.lease).as_millis()).unwrap_or(u64::MAX);
    for ((route, local, doc), pushes) in pushing.iter().zip(sums) {
        let counts = counts::sum(
            pushes.iter().map(|(_, v)| v.as_slice()),
            &local.fingerprint,
            &doc.stage_id,
            now_ms,
            fresh_ms,
        );
        let Some((controller, t)) = rollouts.judge_fleet(route, counts) else {
            continue;
        };
        let Some(epoch) = lease.current_epoch(cluster.redis.timeout()) else {
            continue;
        };
        let Some(next) = rollouts.doc_after(
            route,
            Some(doc),
            &controller,
            t.stage_changed,
            &me,
            Some(epoch),
        ) else {
            continue;
        };
        match cluster
            .write_doc(Op::Transition, route, &next, Some(epoch))
            .await?
        {
            Written::Yes => {
                if let Some(applied) = rollouts.commit(route, controller, t, &next) {
                    republish |= applied.republish;
                }
            }
            Written::Refused {
                seq,
                epoch: now_epoch,
            } => tracing::info!(
                route,
                seq,
                epoch = now_epoch,
                mine = epoch,
                "transition not written: a newer decision or lease exists; reading it next round"
            ),
        }
    }

    cluster
        .health
        .answered(view.leader.clone(), view.mine, view.epoch);
    cluster
        .health
        .replicas_seen(replicas, cluster.config.lease * 3);
    if republish {
        gateway.republish().await;
    }
    Ok(if view.mine {
        every
    } else {
        // Try for the lease right when it would end.
        every.min(view.remaining + Duration::from_millis(5))
    })
}

type Read = (Vec<Stored>, BTreeMap<String, SystemTime>);

async fn read_all(cluster: &Cluster, routes: &[String]) -> Result<Read, CallError> {
    let mut pipe = redis::pipe();
    pipe.cmd("HGETALL").arg(cluster.keys.replicas());
    for route in routes {
        let key = cluster.keys.rollout(route);
        pipe.cmd("HGET").arg(&key).arg("seq");
        pipe.cmd("HGET").arg(&key).arg("doc");
    }
    let values: Vec<redis::Value> = cluster
        .redis
        .idempotent(Op::Read, |mut c| {
            let pipe = &pipe;
            async move { pipe.query_async(&mut c).await }
        })
        .await?;
    let mut values = values.into_iter();
    let replicas: Vec<(String, u64)> = values
        .next()
        .and_then(|v| redis::from_redis_value(v).ok())
        .unwrap_or_default();
    let replicas = replicas
        .into_iter()
        .map(|(name, ms)| (name, UNIX_EPOCH + Duration::from_millis(ms)))
        .collect();
    let mut stored = Vec::with_capacity(routes.len());
    for _ in routes {
        let seq: Option<u64> = values
            .next()
            .and_then(|v| redis::from_redis_value(v).ok())
            .flatten();
        let doc: Option<String> = values
            .next()
            .and_then(|v| redis::from_redis_value(v).ok())
            .flatten();
        stored.push(Stored::parse(seq, doc));
    }
    Ok((stored, replicas))
}
