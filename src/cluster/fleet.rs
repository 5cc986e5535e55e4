//! The fleet's rollout documents in Redis: read them, write one with the
//! fenced compare-and-set script, act on one for an operator, report a
//! local rollback.
//!
//! Every write goes through [`WRITE`]: it refuses a write whose expected
//! `seq` is not the stored one (someone wrote first), and, when the writer
//! is the leader, one whose fencing epoch is not the current one (a newer
//! lease exists: this leader was paused or partitioned). So a stale leader
//! can never overwrite a newer decision, and of two concurrent writers
//! exactly one wins.

use std::sync::LazyLock;

use super::Cluster;
use super::client::{CallError, Op};
use crate::rollout::controller::{Action, State};
use crate::rollout::fleet::{DOC_FORMAT, FleetDoc};
use crate::rollout::registry::{ActError, RolloutRegistry};

static WRITE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
-- KEYS[1] rollout hash, KEYS[2] epoch
-- ARGV[1] expected seq, ARGV[2] writer's epoch ('' for an operator or a
-- replica's report), ARGV[3] the new document (its seq is ARGV[1] + 1)
local epoch = tonumber(redis.call('GET', KEYS[2]) or '0')
if ARGV[2] ~= '' and tonumber(ARGV[2]) ~= epoch then
  return {0, tonumber(redis.call('HGET', KEYS[1], 'seq') or '0'), epoch}
end
local seq = tonumber(redis.call('HGET', KEYS[1], 'seq') or '0')
if seq ~= tonumber(ARGV[1]) then
  return {0, seq, epoch}
end
redis.call('HSET', KEYS[1], 'seq', seq + 1, 'doc', ARGV[3])
return {1, seq + 1, epoch}
"#,
    )
});

/// The outcome of a write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Written {
    Yes,
    /// Another writer came first, or the epoch moved on: re-read.
    Refused {
        seq: u64,
        epoch: u64,
    },
}

/// A document as stored.
#[derive(Clone, Debug, Default)]
pub struct Stored {
    /// The stored `seq` (0: there has never been a document).
    pub seq: u64,
    pub doc: Option<FleetDoc>,
    /// A document exists but does not read as this version's format (a
    /// newer cutover wrote it, or it was edited): the loop leaves it alone;
    /// an operator action replaces it.
    pub unreadable: bool,
}

impl Stored {
    pub fn parse(seq: Option<u64>, doc: Option<String>) -> Stored {
        let exists = seq.is_some() || doc.is_some();
        let parsed = doc
            .and_then(|d| serde_json::from_str::<FleetDoc>(&d).ok())
            .filter(|d| d.format == DOC_FORMAT && Some(d.seq) == seq);
        Stored {
            seq: seq.unwrap_or(0),
            unreadable: exists && parsed.is_none(),
            doc: parsed,
        }
    }
}

impl Cluster {
    /// One route's document.
    pub async fn read_doc(&self, op: Op, route: &str) -> Result<Stored, CallError> {
        let key = self.keys.rollout(route);
        let (seq, doc): (Option<u64>, Option<String>) = self
            .redis
            .idempotent(op, |mut c| {
                let key = &key;
                async move {
                    redis::pipe()
                        .hget(key, "seq")
                        .hget(key, "doc")
                        .query_async(&mut c)
                        .await
                }
            })
            .await?;
        Ok(Stored::parse(seq, doc))
    }

    /// Write `doc` if the stored `seq` is still `doc.seq - 1` and, when
    /// `epoch` is given, the fleet's epoch is still that one. Not retried:
    /// a lost answer is settled by reading the document back (its
    /// `write_id` tells whether it is ours).
    pub async fn write_doc(
        &self,
        op: Op,
        route: &str,
        doc: &FleetDoc,
        epoch: Option<u64>,
    ) -> Result<Written, CallError> {
        let key = self.keys.rollout(route);
        let epoch_key = self.keys.epoch();
        let json = serde_json::to_string(doc).map_err(|e| CallError {
            op: op.as_str(),
            url: String::new(),
            detail: format!("cannot encode the rollout document: {e}"),
        })?;
        let expected = doc.seq.saturating_sub(1);
        let epoch_arg = epoch.map_or(String::new(), |e| e.to_string());
        let sent = self
            .redis
            .once(op, |mut c| {
                let (key, epoch_key, json, epoch_arg) = (&key, &epoch_key, &json, &epoch_arg);
                async move {
                    WRITE
                        .key(key)
                        .key(epoch_key)
                        .arg(expected)
                        .arg(epoch_arg)
                        .arg(json)
                        .invoke_async::<(u8, u64, u64)>(&mut c)
                        .await
                }
            })
            .await;
        match sent {
            Ok((1, _, _)) => Ok(Written::Yes),
            Ok((_, seq, epoch)) => {
                self.health.refused();
                Ok(Written::Refused { seq, epoch })
            }
            Err(e) => {
                // The answer may be lost after the write landed.
                match self.read_doc(op, route).await {
                    Ok(s) if s.doc.as_ref().is_some_and(|d| d.write_id == doc.write_id) => {
                        Ok(Written::Yes)
                    }
                    _ => Err(e),
                }
            }
        }
    }

    /// An operator action, fleet-wide (SPEC §12): read the fleet's
    /// document, act on it, write it back (compare-and-set; on a race,
    /// again with the newer one). 404, 409 and the new state as a single
    /// process answers them; 503 when Redis cannot be reached.
    pub async fn act(
        &self,
        rollouts: &RolloutRegistry,
        route: &str,
        action: Action,
    ) -> Result<bool, ActError> {
        if !rollouts.routes().iter().any(|r| r == route) {
            return Err(ActError::UnknownRoute);
        }
        for _ in 0..5 {
            let stored = self
                .read_doc(Op::Action, route)
                .await
                .map_err(|e| unavailable(&e))?;
            let (controller, t, doc) =
                rollouts.act_on_doc(route, stored.doc.as_ref(), action, &self.config.replica)?;
            // An unreadable document is replaced, after its seq.
            let doc = match (&stored.doc, placeholder(stored.seq)) {
                (None, Some(unreadable)) => FleetDoc::next(
                    Some(&unreadable),
                    &doc.canary,
                    doc.state,
                    true,
                    doc.stage_started_ms,
                    &doc.by,
                    None,
                ),
                _ => doc,
            };
            match self.write_doc(Op::Action, route, &doc, None).await {
                Ok(Written::Yes) => {
                    tracing::info!(
                        route,
                        action = action.as_str(),
                        seq = doc.seq,
                        "operator action written to the fleet"
                    );
                    let republish = rollouts
                        .commit(route, controller, t, &doc)
                        .is_some_and(|a| a.republish);
                    return Ok(republish);
                }
                Ok(Written::Refused { .. }) => continue,
                Err(e) => return Err(unavailable(&e)),
            }
        }
        Err(ActError::Conflict(format!(
            "the fleet's rollout of route {route:?} kept changing while acting; try again"
        )))
    }

    /// Report the local rollbacks decided while Redis was unreachable: each
    /// is written on top of the fleet's current document (or as the first
    /// one, if Redis lost them), unless the fleet has rolled back already
    /// or moved to another canary.
    pub async fn report_local_rollbacks(
        &self,
        rollouts: &RolloutRegistry,
    ) -> Result<(), CallError> {
        for (route, rolled_back) in rollouts.pending_reports() {
            let Some(mine) = rollouts.local_counts(&route).map(|l| l.fingerprint) else {
                continue;
            };
            for _ in 0..5 {
                let stored = self.read_doc(Op::Transition, &route).await?;
                if let Some(current) = &stored.doc
                    && (current.canary != mine || matches!(current.state, State::RolledBack { .. }))
                {
                    rollouts.reported(&route, None);
                    break;
                }
                let previous = stored.doc.clone().or_else(|| placeholder(stored.seq));
                let doc = FleetDoc::next(
                    previous.as_ref(),
                    &mine,
                    rolled_back.clone(),
                    true,
                    crate::rollout::fleet::unix_ms(std::time::SystemTime::now()),
                    &self.config.replica,
                    None,
                );
                match self.write_doc(Op::Transition, &route, &doc, None).await? {
                    Written::Yes => {
                        let from = stored.doc.map_or(State::Promoted, |d| d.state);
                        rollouts.reported(&route, Some((&doc, &from)));
                        break;
                    }
                    Written::Refused { .. } => continue,
                }
            }
        }
        Ok(())
    }
}

/// A stand-in for an unreadable document, carrying its `seq` so the
/// compare-and-set that replaces it still holds.
pub fn placeholder(seq: u64) -> Option<FleetDoc> {
    (seq > 0).then(|| {
        let mut d = FleetDoc::next(None, "", State::Promoted, true, 0, "", None);
        d.seq = seq;
        d
    })
}

fn unavailable(e: &CallError) -> ActError {
    ActError::Unavailable(format!(
        "the fleet's Redis cannot be reached, nothing was changed: {e}"
    ))
}
