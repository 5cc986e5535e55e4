//! The counts each replica pushes, and their sum (SPEC §12: "one decision
//! on the fleet's counts").
//!
//! # Shape: per-replica totals, summed by the reader
//!
//! Each replica writes its *cumulative* counts for the current stage into
//! its own field of one hash per (route, stage): `HSET counts:ROUTE:STAGE
//! REPLICA/INCARNATION JSON`. The sum is every field added up. This is
//! exact (integers; cost in micro-USD) and safe to retry: a push that
//! repeats overwrites the field with the same totals, where a repeated
//! `HINCRBY` delta would count twice and a lost one would count never. A
//! replica that dies keeps its last totals in the hash (its requests
//! happened); one that restarts writes under a new incarnation, so its
//! earlier totals stay too. A new stage is a new hash, so nothing is ever
//! reset in place, and the old hashes expire.
//!
//! The rollback window is different: it slides, so only *recent* pushes
//! count towards the fleet's window (and a replica's breaker), see
//! [`sum`].

use serde::{Deserialize, Serialize};

use crate::rollout::fleet::FleetCounts;
use crate::rollout::stats::{HistogramSnapshot, LATENCY_BUCKETS, VersionSnapshot, WindowSnapshot};

/// One replica's push for one route and stage.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Pushed {
    /// Unix ms of the push.
    pub at_ms: u64,
    /// The canary fingerprint the counts are about.
    pub canary: String,
    /// The stage id (`FleetDoc::stage_id`) they belong to.
    pub stage: String,
    pub baseline: Counts,
    #[serde(rename = "canary_counts")]
    pub canary_side: Counts,
    pub window: WindowCounts,
    /// The canary upstream's breaker is open on this replica.
    pub breaker_open: bool,
}

/// A version's step counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Counts {
    pub requests: u64,
    pub failures: u64,
    pub cost_n: u64,
    /// Micro-USD, an integer: sums exactly.
    pub cost_micros: u64,
    /// USD², for the cost gate's variance.
    pub cost_sq: f64,
    pub outcome_success: u64,
    pub outcome_failure: u64,
    /// Non-zero latency buckets: (index, count).
    pub latency: Vec<(u16, u64)>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct WindowCounts {
    pub requests: u64,
    pub failures: u64,
    pub latency: Vec<(u16, u64)>,
}

fn sparse(h: &HistogramSnapshot) -> Vec<(u16, u64)> {
    h.counts
        .iter()
        .enumerate()
        .filter(|(_, c)| **c > 0)
        .filter_map(|(i, c)| Some((u16::try_from(i).ok()?, *c)))
        .collect()
}

/// Adds sparse buckets into a dense histogram; out-of-range indexes (a
/// replica of another build) are dropped.
fn add_dense(into: &mut HistogramSnapshot, buckets: &[(u16, u64)]) {
    if into.counts.len() < LATENCY_BUCKETS {
        into.counts.resize(LATENCY_BUCKETS, 0);
    }
    for (i, c) in buckets {
        if let Some(slot) = into.counts.get_mut(usize::from(*i)) {
            *slot = slot.saturating_add(*c);
        }
    }
}

impl From<&VersionSnapshot> for Counts {
    fn from(v: &VersionSnapshot) -> Counts {
        Counts {
            requests: v.requests,
            failures: v.failures,
            cost_n: v.cost_n,
            // The snapshot's sum is micro-USD / 1e6: this is exact again.
            cost_micros: (v.cost_sum_usd * 1e6).round() as u64,
            cost_sq: v.cost_sq_sum_usd,
            outcome_success: v.outcome_success,
            outcome_failure: v.outcome_failure,
            latency: sparse(&v.latency),
        }
    }
}

impl From<&WindowSnapshot> for WindowCounts {
    fn from(w: &WindowSnapshot) -> WindowCounts {
        WindowCounts {
            requests: w.requests,
            failures: w.failures,
            latency: sparse(&w.latency),
        }
    }
}

impl Counts {
    fn add_to(&self, v: &mut VersionSnapshot) {
        v.requests = v.requests.saturating_add(self.requests);
        v.failures = v.failures.saturating_add(self.failures.min(self.requests));
        v.cost_n = v.cost_n.saturating_add(self.cost_n);
        // Summed as integers, converted once.
        let micros = (v.cost_sum_usd * 1e6).round() as u64;
        v.cost_sum_usd = micros.saturating_add(self.cost_micros) as f64 / 1e6;
        if self.cost_sq.is_finite() && self.cost_sq >= 0.0 {
            v.cost_sq_sum_usd += self.cost_sq;
        }
        v.outcome_success = v.outcome_success.saturating_add(self.outcome_success);
        v.outcome_failure = v.outcome_failure.saturating_add(self.outcome_failure);
        add_dense(&mut v.latency, &self.latency);
    }
}

/// The fleet's counts: every push about `canary` and `stage` summed; windows and
/// breakers only from pushes at most `fresh_ms` old at `now_ms` (a replica
/// that stopped pushing has nothing in the window any more, as far as
/// anyone can tell). Unreadable fields are skipped.
pub fn sum<'a>(
    pushes: impl IntoIterator<Item = &'a [u8]>,
    canary: &str,
    stage: &str,
    now_ms: u64,
    fresh_ms: u64,
) -> FleetCounts {
    let mut out = FleetCounts::default();
    add_dense(&mut out.baseline.latency, &[]);
    add_dense(&mut out.canary.latency, &[]);
    add_dense(&mut out.window.latency, &[]);
    for raw in pushes {
        let Ok(p) = serde_json::from_slice::<Pushed>(raw) else {
            continue;
        };
        if p.canary != canary || p.stage != stage {
            continue;
        }
        out.replicas += 1;
        p.baseline.add_to(&mut out.baseline);
        p.canary_side.add_to(&mut out.canary);
        if now_ms.saturating_sub(p.at_ms) <= fresh_ms {
            out.window.requests = out.window.requests.saturating_add(p.window.requests);
            out.window.failures = out
                .window
                .failures
                .saturating_add(p.window.failures.min(p.window.requests));
            add_dense(&mut out.window.latency, &p.window.latency);
            out.breaker_open |= p.breaker_open;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::rollout::stats::{Observation, Role, RolloutStats};
    use std::sync::Arc;
    use std::time::Duration;

    fn push(stats: &RolloutStats, at_ms: u64, breaker_open: bool) -> Vec<u8> {
        let (b, c) = stats.step_snapshot();
        let w = stats.window_snapshot();
        serde_json::to_vec(&Pushed {
            at_ms,
            canary: "fp".into(),
            stage: "s1".into(),
            baseline: (&b).into(),
            canary_side: (&c).into(),
            window: (&w).into(),
            breaker_open,
        })
        .unwrap_or_default()
    }

    fn obs(failed: bool, ms: u64, cost: f64) -> Observation {
        Observation {
            failed,
            latency: Some(Duration::from_millis(ms)),
            cost_usd: Some(cost),
        }
    }

    #[test]
    fn three_replicas_sum_to_what_one_process_would_count() {
        let clock = ManualClock::new();
        let one = RolloutStats::new(Duration::from_secs(60), Arc::new(clock.clone()));
        let replicas: Vec<RolloutStats> = (0..3)
            .map(|_| RolloutStats::new(Duration::from_secs(60), Arc::new(clock.clone())))
            .collect();
        for i in 0..3_000u64 {
            let r = &replicas[(i % 3) as usize];
            let role = if i % 10 == 0 {
                Role::Canary
            } else {
                Role::Baseline
            };
            let o = obs(i % 7 == 0, 5 + i % 400, 0.000_123 * (i % 5) as f64);
            r.record(role, &o);
            one.record(role, &o);
            if i % 11 == 0 {
                r.record_outcome(role, i % 2 == 0);
                one.record_outcome(role, i % 2 == 0);
            }
        }
        let pushes: Vec<Vec<u8>> = replicas.iter().map(|r| push(r, 1_000, false)).collect();
        let fleet = sum(pushes.iter().map(Vec::as_slice), "fp", "s1", 1_000, 3_000);
        let (b, c) = one.step_snapshot();
        assert_eq!(fleet.replicas, 3);
        for (got, want) in [(&fleet.baseline, &b), (&fleet.canary, &c)] {
            assert_eq!(
                (got.requests, got.failures, got.cost_n),
                (want.requests, want.failures, want.cost_n)
            );
            assert_eq!(
                (got.outcome_success, got.outcome_failure),
                (want.outcome_success, want.outcome_failure)
            );
            assert_eq!(got.latency, want.latency, "histograms sum exactly");
            assert_eq!(
                (got.cost_sum_usd * 1e6).round(),
                (want.cost_sum_usd * 1e6).round(),
                "cost sums exactly in micro-USD"
            );
            assert!((got.cost_sq_sum_usd - want.cost_sq_sum_usd).abs() < 1e-12);
        }
        assert_eq!(fleet.window, one.window_snapshot());
        // Pushing the same totals again changes nothing: retries are safe.
        let again = sum(
            pushes
                .iter()
                .chain(pushes.iter().take(0))
                .map(Vec::as_slice),
            "fp",
            "s1",
            1_000,
            3_000,
        );
        assert_eq!(again, fleet);
    }

    #[test]
    fn stale_pushes_keep_their_step_counts_but_leave_the_window() {
        let clock = ManualClock::new();
        let a = RolloutStats::new(Duration::from_secs(60), Arc::new(clock.clone()));
        let b = RolloutStats::new(Duration::from_secs(60), Arc::new(clock));
        a.record_n(Role::Canary, &obs(true, 10, 0.0), 5);
        b.record_n(Role::Canary, &obs(false, 10, 0.0), 7);
        let pushes = [push(&a, 1_000, true), push(&b, 9_000, false)];
        let fleet = sum(pushes.iter().map(Vec::as_slice), "fp", "s1", 10_000, 3_000);
        assert_eq!((fleet.canary.requests, fleet.canary.failures), (12, 5));
        assert_eq!((fleet.window.requests, fleet.window.failures), (7, 0));
        assert!(!fleet.breaker_open, "a stale replica's breaker is not news");
        // Another canary's counts, or garbage, are not summed.
        let other = sum(
            [push(&a, 9_000, true).as_slice(), b"{not json"],
            "another",
            "s1",
            10_000,
            3_000,
        );
        assert_eq!((other.replicas, other.canary.requests), (0, 0));
        // Nor another stage's (a Redis that lost its data numbers stages
        // from 1 again; the stage id tells them apart).
        let other = sum(pushes.iter().map(Vec::as_slice), "fp", "s2", 10_000, 3_000);
        assert_eq!(other.replicas, 0);
    }
}
