//! A rollout shared by a fleet (SPEC §12), as the rollout module sees it:
//! the document that Redis holds for a route ([`FleetDoc`]), where one
//! replica stands with it ([`FleetLink`]), and the fleet's summed counts
//! ([`FleetCounts`]). The transport (scripts, keys, the sync loop) is
//! `crate::cluster`'s; the state machine is the same [`Controller`].
//!
//! [`Controller`]: super::Controller
//!
//! # Who decides
//!
//! The fleet's state lives in one document per route. Every write goes
//! through a compare-and-set on its `seq` (and, for the leader's own
//! decisions, on its fencing epoch), so of two concurrent writers exactly
//! one wins and the other re-reads. Each replica *adopts* the document: its
//! controller takes the document's state and stage start, and its step
//! counters restart when the document names a new stage. Only the replica
//! that wins a write logs it as a transition, counts a rollback and posts
//! the webhook: once per transition for the fleet.

use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::rollout::controller::{RollbackReason, State};
use crate::rollout::stats::{VersionSnapshot, WindowSnapshot};

/// The document's format; another format is ignored as if absent (the
/// leader then writes a fresh one).
pub const DOC_FORMAT: u32 = 1;

/// The fleet's rollout of one route, as stored in Redis.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetDoc {
    pub format: u32,
    /// The canary's fingerprint (upstream url and deps): one rollout, one
    /// canary.
    pub canary: String,
    #[serde(flatten)]
    pub state: State,
    /// When the current stage began, Unix milliseconds.
    pub stage_started_ms: u64,
    /// The `seq` of the write that began the current stage: counts pushed
    /// for this stage are stored under it.
    pub stage_seq: u64,
    /// A random id of the current stage, unique even across a Redis that
    /// lost its data and numbers from 1 again: counts are only summed, and
    /// step counters only kept, within one stage id.
    pub stage_id: String,
    /// This write's sequence number (the script checks it is the stored
    /// one plus one).
    pub seq: u64,
    /// The replica that wrote it.
    pub by: String,
    /// The writer's fencing epoch, when the leader wrote it.
    pub epoch: Option<u64>,
    /// Unix milliseconds of the write.
    pub at_ms: u64,
    /// A random id: a writer whose answer was lost can tell its own write.
    pub write_id: String,
}

impl FleetDoc {
    /// The document that follows `previous` (`None`: the first one) with
    /// `state`; a new stage begins at this write when `new_stage`.
    pub fn next(
        previous: Option<&FleetDoc>,
        canary: &str,
        state: State,
        new_stage: bool,
        stage_started_ms: u64,
        by: &str,
        epoch: Option<u64>,
    ) -> FleetDoc {
        let seq = previous.map_or(0, |p| p.seq) + 1;
        let (stage_seq, stage_id) = match previous {
            Some(p) if !new_stage => (p.stage_seq, p.stage_id.clone()),
            _ => (seq, format!("{:016x}", rand::random::<u64>())),
        };
        let id: u64 = rand::random();
        FleetDoc {
            format: DOC_FORMAT,
            canary: canary.to_string(),
            state,
            stage_started_ms,
            stage_seq,
            stage_id,
            seq,
            by: by.to_string(),
            epoch,
            at_ms: unix_ms(SystemTime::now()),
            write_id: format!("{id:016x}"),
        }
    }
}

pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The fleet's counts on one stage: every replica's latest push summed.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct FleetCounts {
    pub baseline: VersionSnapshot,
    pub canary: VersionSnapshot,
    /// The canary over the rollback window, from the replicas that pushed
    /// recently.
    pub window: WindowSnapshot,
    /// A recently pushing replica sees the canary's breaker open.
    pub breaker_open: bool,
    /// Replicas whose counts are in the sums.
    pub replicas: usize,
}

/// Where this replica stands with the fleet's rollout of a route.
#[derive(Clone, Debug, PartialEq)]
pub struct FleetLink {
    /// The document last adopted (its `seq`; 0 before the first).
    pub seq: u64,
    pub stage_seq: u64,
    /// Its `write_id` and `stage_id`: what adoption compares (a `seq` can
    /// repeat after Redis lost its data).
    pub doc_id: String,
    pub stage_id: String,
    /// Its `at_ms`: an older document read before a newer one was written
    /// here (an operator action racing the sync loop) is not adopted.
    pub at_ms: u64,
    /// This replica's config names the fleet's canary. While not, the
    /// route serves its baseline only and counts nothing (SPEC §12).
    pub agrees: bool,
    /// The fleet's sums at the last sync.
    pub counts: Option<FleetCounts>,
    /// A rollback this replica decided on its own window while Redis was
    /// unreachable, to report when it answers again.
    pub pending: Option<RollbackReason>,
}

impl Default for FleetLink {
    fn default() -> Self {
        FleetLink {
            seq: 0,
            stage_seq: 0,
            doc_id: String::new(),
            stage_id: String::new(),
            at_ms: 0,
            agrees: true,
            counts: None,
            pending: None,
        }
    }
}

/// What `/status` shows of a route's link with the fleet.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct FleetLinkView {
    /// The fleet document's sequence number adopted here (0: none yet).
    pub seq: u64,
    /// The stage the counts belong to.
    pub stage_seq: u64,
    /// This replica's config names the fleet's canary; when false it serves
    /// the baseline only until its config agrees.
    pub agrees: bool,
    /// Replicas whose counts are summed in `baseline` and `canary`.
    pub replicas_counted: usize,
    /// A local rollback waiting to be reported to the fleet.
    pub pending_rollback: Option<String>,
}

impl FleetLink {
    /// `doc` is news to this replica: another document than the one it
    /// holds, and not an older one (a higher `seq`, or a later write, as
    /// after Redis lost its data and numbers from 1 again).
    pub fn is_news(&self, doc: &FleetDoc) -> bool {
        doc.write_id != self.doc_id && (doc.seq > self.seq || doc.at_ms > self.at_ms)
    }

    /// Hold `doc` from now on.
    pub fn hold(&mut self, doc: &FleetDoc) {
        self.seq = doc.seq;
        self.stage_seq = doc.stage_seq;
        self.doc_id = doc.write_id.clone();
        self.stage_id = doc.stage_id.clone();
        self.at_ms = doc.at_ms;
    }

    pub fn view(&self) -> FleetLinkView {
        FleetLinkView {
            seq: self.seq,
            stage_seq: self.stage_seq,
            agrees: self.agrees,
            replicas_counted: self.counts.as_ref().map_or(0, |c| c.replicas),
            pending_rollback: self.pending.as_ref().map(ToString::to_string),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_news_is_adopted() {
        let mut a = FleetDoc::next(
            None,
            "fp",
            State::Canary { step: 0 },
            true,
            1,
            "r1",
            Some(1),
        );
        a.at_ms = 1_000;
        let mut b = FleetDoc::next(
            Some(&a),
            "fp",
            State::Canary { step: 1 },
            true,
            2,
            "r2",
            None,
        );
        b.at_ms = 2_000;
        let mut link = FleetLink::default();
        assert!(link.is_news(&a));
        link.hold(&b);
        assert!(!link.is_news(&b), "the same document");
        assert!(
            !link.is_news(&a),
            "an older one, read before the newer was written here"
        );
        // Redis lost its data: numbering starts again, later in time.
        let mut fresh = FleetDoc::next(
            None,
            "fp",
            State::Canary { step: 1 },
            true,
            3,
            "r1",
            Some(1),
        );
        fresh.at_ms = 3_000;
        assert!(link.is_news(&fresh));
    }

    #[test]
    fn stages_begin_at_the_write_that_starts_them() {
        let first = FleetDoc::next(
            None,
            "fp",
            State::Canary { step: 0 },
            true,
            1,
            "r1",
            Some(1),
        );
        assert_eq!((first.seq, first.stage_seq), (1, 1));
        let paused = FleetDoc::next(
            Some(&first),
            "fp",
            State::Paused {
                stage: crate::rollout::Stage::Canary { step: 0 },
            },
            false,
            1,
            "r2",
            None,
        );
        assert_eq!(
            (paused.seq, paused.stage_seq),
            (2, 1),
            "a pause keeps the stage"
        );
        let next = FleetDoc::next(
            Some(&paused),
            "fp",
            State::Canary { step: 1 },
            true,
            9,
            "r1",
            Some(3),
        );
        assert_eq!((next.seq, next.stage_seq), (3, 3));
        assert_ne!(first.write_id, next.write_id);
        let json = serde_json::to_string(&next).unwrap_or_default();
        assert!(json.contains(r#""state":"canary","step":1"#), "{json}");
        let back: Option<FleetDoc> = serde_json::from_str(&json).ok();
        assert_eq!(back.as_ref(), Some(&next));
        // Every state reads back (the flattened state's own fields must not
        // meet the document's).
        for doc in [&first, &paused] {
            let json = serde_json::to_string(doc).unwrap_or_default();
            let back: Result<FleetDoc, _> = serde_json::from_str(&json);
            assert_eq!(back.as_ref().ok(), Some(doc), "{json}: {back:?}");
        }
    }
}
