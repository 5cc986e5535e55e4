//! Shadow traffic (SPEC §4): what a route's shadows are, and the state that
//! bounds and counts their mirrors.
//!
//! The mirror itself (building the request, sending it in the background,
//! reading the answer to its end) is data-plane work in
//! `proxy::mirror`; [`compare`] turns both answers into comparable JSON.

pub mod compare;
pub mod reach;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{ShadowConfig, WeightBps};
use crate::rollout::RolloutStats;
use crate::routing::{self, split};
use crate::runtime::target::Target;
use crate::telemetry::{ShadowMetrics, ShadowResult};
use reach::Reach;

/// The primary's answer as one JSON document (`None`: not comparable),
/// handed to each comparing mirror when the primary's response completes.
pub type PrimaryAnswer = Option<Arc<compare::Comparable>>;

/// Mirrors in flight per shadow when `max_in_flight` is not configured.
pub const DEFAULT_MAX_IN_FLIGHT: usize = 64;

/// One `[[routes.shadows]]` entry, compiled.
pub struct Shadow {
    pub target: Target,
    pub percent: WeightBps,
    /// The salt of this shadow's own sticky draw (see [`Shadow::selects`]).
    salt: Box<[u8]>,
    pub max_in_flight: usize,
    pub timeout: Duration,
    /// JSON pointers compared with the primary's answer.
    pub compare: Box<[String]>,
    /// What of its answer those pointers reach: all that is parsed.
    pub reach: Arc<Reach>,
    /// Survives reloads (see [`ShadowStates`]).
    pub state: Arc<ShadowState>,
    pub metrics: ShadowMetrics,
    /// A shadowing rollout's canary: its answers are judged as the canary's.
    pub judged: Option<Arc<RolloutStats>>,
}

impl Shadow {
    /// `target` is the compiled `config.target`.
    pub fn new(
        config: &ShadowConfig,
        target: Target,
        route: &str,
        route_salt: &str,
        state: Arc<ShadowState>,
    ) -> Shadow {
        let metrics = ShadowMetrics::new(route, &target.name);
        Shadow {
            // Its own salt: the mirrored users are not the ones in the
            // first bucket range (those are all on the first version), but
            // a fixed, independent sample of the route's users.
            salt: format!("{route_salt}/shadow/{}", target.name)
                .into_bytes()
                .into(),
            target,
            percent: config.percent,
            max_in_flight: config.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT),
            timeout: config.timeout,
            compare: config.compare.clone().into_boxed_slice(),
            reach: Arc::new(Reach::of(config.compare.iter().map(String::as_str))),
            state,
            metrics,
            judged: None,
        }
    }

    /// Is this request mirrored? Sticky: a key's draw is fixed, so the same
    /// users are mirrored on every replica and raising `percent` only adds
    /// users. Without a key, a random draw.
    pub fn selects(&self, sticky_key: Option<&[u8]>) -> bool {
        let percent = self.percent.get();
        if percent >= routing::BUCKETS {
            return true;
        }
        if percent == 0 {
            return false;
        }
        let bucket = match sticky_key {
            Some(key) => split::bucket(&self.salt, key),
            None => rand::random_range(0..routing::BUCKETS),
        };
        bucket < percent
    }

    /// A mirror slot, or `None` (counted as dropped) when `max_in_flight`
    /// mirrors are already out. Never waits.
    pub fn try_slot(&self) -> Option<MirrorSlot> {
        let state = &self.state;
        let prev = state.in_flight.fetch_add(1, Ordering::AcqRel);
        if prev >= self.max_in_flight {
            state.in_flight.fetch_sub(1, Ordering::AcqRel);
            self.record(ShadowResult::Dropped);
            return None;
        }
        Some(MirrorSlot(Arc::clone(state)))
    }

    /// Count a mirror's result in the metrics and the `/status` counters.
    pub fn record(&self, result: ShadowResult) {
        self.metrics.result(result);
        let counter = match result {
            ShadowResult::Ok => &self.state.ok,
            ShadowResult::Failure => &self.state.failure,
            ShadowResult::Dropped => &self.state.dropped,
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    pub fn record_compare(&self, matched: bool) {
        self.metrics.compared(matched);
        let counter = if matched {
            &self.state.matched
        } else {
            &self.state.mismatched
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }
}

/// Counters of one shadow that outlive config generations, so that
/// `max_in_flight` holds across a reload (mirrors sent under the old config
/// still count) and `/status` shows totals since start.
#[derive(Debug, Default)]
pub struct ShadowState {
    in_flight: AtomicUsize,
    ok: AtomicU64,
    failure: AtomicU64,
    dropped: AtomicU64,
    matched: AtomicU64,
    mismatched: AtomicU64,
}

/// What `/status` shows of a shadow's traffic (`cutover status` and the
/// demo read it back).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ShadowStatus {
    pub in_flight: usize,
    pub ok: u64,
    pub failure: u64,
    pub dropped: u64,
    /// failure / (ok + failure); `None` before the first answer.
    pub failure_share: Option<f64>,
    pub compare_match: u64,
    pub compare_mismatch: u64,
    /// match / (match + mismatch); `None` before the first comparison.
    pub match_share: Option<f64>,
}

impl ShadowState {
    pub fn status(&self) -> ShadowStatus {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let (ok, failure) = (get(&self.ok), get(&self.failure));
        let (matched, mismatched) = (get(&self.matched), get(&self.mismatched));
        let share = |part: u64, other: u64| {
            let total = part + other;
            (total > 0).then(|| part as f64 / total as f64)
        };
        ShadowStatus {
            in_flight: self.in_flight.load(Ordering::Relaxed),
            ok,
            failure,
            dropped: get(&self.dropped),
            failure_share: share(failure, ok),
            compare_match: matched,
            compare_mismatch: mismatched,
            match_share: share(matched, mismatched),
        }
    }
}

/// A mirror's hold on one of its shadow's `max_in_flight` slots.
#[derive(Debug)]
pub struct MirrorSlot(Arc<ShadowState>);

impl Drop for MirrorSlot {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

/// Shadow states by (route, shadow) name, kept by the gateway across
/// reloads. Control plane only: consulted when a config is compiled.
#[derive(Debug, Default)]
pub struct ShadowStates {
    states: Mutex<HashMap<(String, String), Arc<ShadowState>>>,
}

impl ShadowStates {
    pub fn get(&self, route: &str, shadow: &str) -> Arc<ShadowState> {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        Arc::clone(
            states
                .entry((route.to_string(), shadow.to_string()))
                .or_default(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_bounded_and_released() {
        let state = Arc::new(ShadowState::default());
        let limit = 2;
        let take = || {
            let prev = state.in_flight.fetch_add(1, Ordering::AcqRel);
            if prev >= limit {
                state.in_flight.fetch_sub(1, Ordering::AcqRel);
                None
            } else {
                Some(MirrorSlot(Arc::clone(&state)))
            }
        };
        let a = take();
        let b = take();
        assert!(a.is_some() && b.is_some());
        assert!(take().is_none());
        drop(a);
        assert!(take().is_some());
        assert_eq!(state.status().in_flight, 1);
    }

    #[test]
    fn shares_are_none_until_counted() {
        let s = ShadowState::default();
        assert_eq!(s.status().failure_share, None);
        s.failure.fetch_add(1, Ordering::Relaxed);
        s.ok.fetch_add(3, Ordering::Relaxed);
        assert_eq!(s.status().failure_share, Some(0.25));
    }
}
