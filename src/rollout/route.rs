//! One route's rollout, assembled: its controller, its stats and its
//! canary fingerprint, with the invariants that tie them together kept in
//! one place (a new stage gets fresh stats; a changed canary starts over).
//!
//! The control plane owns one [`RouteRollout`] per route with a rollout
//! (behind a `Mutex`, shared by the 1 s ticker and the admin actions); the
//! data plane only ever sees `Arc<RolloutStats>`.

use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::config::{Deps, RolloutConfig, WeightBps};
use crate::rollout::controller::{Action, Controller, NotAllowed, State, TickInputs, Transition};
use crate::rollout::judge::Judgement;
use crate::rollout::persist::{self, PersistError, PersistedState};
use crate::rollout::stats::{RolloutStats, StepSummary};
use crate::rollout::webhook::WebhookEvent;
use crate::upstream::breaker::Clock;

/// What `/status` shows for a route's rollout.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RolloutStatus {
    /// shadowing, canary, paused, promoted, rolled_back.
    pub state: &'static str,
    /// The full state (paused stage, rollback reason).
    pub detail: State,
    /// `cutover_rollout_step`.
    pub step: i64,
    /// The canary's effective live weight, percent.
    pub canary_weight: f64,
    pub mirrored: bool,
    pub stage_seconds: f64,
    pub baseline: StepSummary,
    pub canary: StepSummary,
    pub window_requests: u64,
    pub window_failures: u64,
    /// The gates at the last tick.
    pub judgement: Option<Judgement>,
}

pub struct RouteRollout {
    route: String,
    fingerprint: String,
    stats: Arc<RolloutStats>,
    controller: Controller,
    clock: Arc<dyn Clock>,
    /// `rollback.webhook`: where transitions are announced.
    webhook: Option<String>,
}

impl RouteRollout {
    /// Builds the rollout at start or when a route first gets one,
    /// restoring `state_dir/<route>.json` when it belongs to this canary.
    /// A state file that cannot be read starts a new rollout; the error is
    /// returned beside it for the caller to log.
    pub fn start(
        route: &str,
        cfg: &RolloutConfig,
        canary_upstream_url: &str,
        canary_deps: &Deps,
        state_dir: Option<&Path>,
        clock: Arc<dyn Clock>,
    ) -> (RouteRollout, Option<PersistError>) {
        let fingerprint = persist::fingerprint(canary_upstream_url, canary_deps);
        let (persisted, error) = match state_dir.map(|d| persist::load(d, route)) {
            Some(Ok(p)) => (p, None),
            Some(Err(e)) => (None, Some(e)),
            None => (None, None),
        };
        let controller = persist::restore_controller(
            cfg,
            &fingerprint,
            persisted,
            clock.now(),
            SystemTime::now(),
        );
        let window = cfg
            .rollback
            .as_ref()
            .map_or(std::time::Duration::from_secs(60), |r| r.window);
        let rollout = RouteRollout {
            route: route.to_string(),
            fingerprint,
            stats: Arc::new(RolloutStats::new(window, Arc::clone(&clock))),
            controller,
            clock,
            webhook: webhook(cfg),
        };
        (rollout, error)
    }

    /// A reload: the same canary keeps its state and stage start under the
    /// new config (steps, gates); a changed canary starts a new rollout,
    /// returned as `true` (persist it). Stats survive unless the rollout
    /// restarts. (A changed `rollback.window` takes effect on restart.)
    pub fn reconfigure(
        &mut self,
        cfg: &RolloutConfig,
        canary_upstream_url: &str,
        canary_deps: &Deps,
    ) -> bool {
        let (next, restarted) = self.reconfigured(cfg, canary_upstream_url, canary_deps);
        if restarted {
            next.stats.reset_step();
        }
        *self = next;
        restarted
    }

    /// What [`Self::reconfigure`] would make of this rollout, without
    /// changing it: the new rollout (sharing this one's stats) and whether
    /// it restarts, in which case the caller resets the step stats when it
    /// commits the reload.
    pub fn reconfigured(
        &self,
        cfg: &RolloutConfig,
        canary_upstream_url: &str,
        canary_deps: &Deps,
    ) -> (RouteRollout, bool) {
        let now = self.clock.now();
        let fingerprint = persist::fingerprint(canary_upstream_url, canary_deps);
        let (controller, restarted) = if fingerprint == self.fingerprint {
            let elapsed = now.saturating_duration_since(self.controller.stage_started());
            (
                Controller::restore(cfg, self.controller.state().clone(), elapsed, now),
                false,
            )
        } else {
            (Controller::new(cfg, now), true)
        };
        let next = RouteRollout {
            route: self.route.clone(),
            fingerprint,
            stats: Arc::clone(&self.stats),
            controller,
            clock: Arc::clone(&self.clock),
            webhook: webhook(cfg),
        };
        (next, restarted)
    }

    /// The hot path's handle: record judged requests here.
    pub fn stats(&self) -> &Arc<RolloutStats> {
        &self.stats
    }

    pub fn controller(&self) -> &Controller {
        &self.controller
    }

    pub fn route(&self) -> &str {
        &self.route
    }

    /// Where transitions are POSTed, if anywhere.
    pub fn webhook_url(&self) -> Option<&str> {
        self.webhook.as_deref()
    }

    pub fn canary_weight(&self) -> WeightBps {
        self.controller.canary_weight()
    }

    /// The 1 s tick. On a transition the caller publishes the new weight,
    /// persists [`Self::persisted`], posts [`Self::event`] and counts
    /// metrics.
    pub fn tick(&mut self, canary_breaker_open: bool) -> Option<Transition> {
        let (baseline, canary) = self.stats.step_snapshot();
        let window = self.stats.window_snapshot();
        let inputs = TickInputs {
            baseline: &baseline,
            canary: &canary,
            window: &window,
            canary_breaker_open,
        };
        let t = self.controller.tick(self.clock.now(), &inputs)?;
        self.after(&t);
        Some(t)
    }

    /// An operator action; `Err` is the admin API's 409.
    pub fn act(&mut self, action: Action) -> Result<Transition, NotAllowed> {
        let t = self.controller.act(action, self.clock.now())?;
        self.after(&t);
        Ok(t)
    }

    fn after(&self, t: &Transition) {
        if t.stage_changed {
            self.stats.reset_step();
        }
    }

    /// What to write to `state.dir` now.
    pub fn persisted(&self, wall_now: SystemTime) -> PersistedState {
        PersistedState::capture(
            &self.route,
            &self.fingerprint,
            &self.controller,
            self.clock.now(),
            wall_now,
        )
    }

    /// The webhook event for a transition that just happened.
    pub fn event(&self, t: &Transition, wall_now: SystemTime) -> WebhookEvent {
        WebhookEvent::new(&self.route, t, self.controller.step_metric(), wall_now)
    }

    pub fn status(&self) -> RolloutStatus {
        let (baseline, canary) = self.stats.step_snapshot();
        let window = self.stats.window_snapshot();
        let c = &self.controller;
        RolloutStatus {
            state: c.state().name(),
            detail: c.state().clone(),
            step: c.step_metric(),
            canary_weight: c.canary_weight().percent(),
            mirrored: c.mirrored(),
            stage_seconds: self
                .clock
                .now()
                .saturating_duration_since(c.stage_started())
                .as_secs_f64(),
            baseline: baseline.summary(),
            canary: canary.summary(),
            window_requests: window.requests,
            window_failures: window.failures,
            judgement: c.judgement().cloned(),
        }
    }
}

fn webhook(cfg: &RolloutConfig) -> Option<String> {
    cfg.rollback.as_ref().and_then(|r| r.webhook.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{GatesConfig, RollbackConfig};
    use crate::rollout::stats::{Observation, Role};
    use crate::upstream::breaker::ManualClock;
    use std::time::Duration;

    fn cfg() -> RolloutConfig {
        RolloutConfig {
            baseline: "v1".into(),
            canary: "v2".into(),
            shadow_first: None,
            steps: [1_000u16, 10_000]
                .iter()
                .filter_map(|b| WeightBps::new(*b))
                .collect(),
            interval: Duration::from_secs(10),
            min_requests: 10,
            gates: GatesConfig {
                error_rate_margin: Some(0.2),
                max_error_rate: None,
                latency_p95_ratio: None,
                max_latency_p95: None,
                max_cost_per_request: None,
                outcome_margin: None,
                confidence: 0.95,
            },
            rollback: Some(RollbackConfig {
                window: Duration::from_secs(60),
                min_requests: 10,
                error_rate: Some(0.5),
                latency_p99: None,
                on_breaker_open: true,
                webhook: None,
            }),
        }
    }

    #[test]
    fn tick_resets_stats_on_a_new_stage_and_restores_from_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new();
        let deps = Deps::new();
        let (mut r, err) = RouteRollout::start(
            "chat",
            &cfg(),
            "http://c",
            &deps,
            Some(dir.path()),
            Arc::new(clock.clone()),
        );
        assert!(err.is_none());
        let ok = Observation {
            failed: false,
            latency: Some(Duration::from_millis(5)),
            cost_usd: None,
        };
        r.stats().record_n(Role::Baseline, &ok, 10_000);
        r.stats().record_n(Role::Canary, &ok, 1_000);
        clock.advance(Duration::from_secs(10));
        let t = r.tick(false).expect("advances");
        assert_eq!(t.to, State::Promoted);
        assert_eq!(
            r.status().canary.requests,
            0,
            "fresh stats for the new stage"
        );
        assert_eq!(r.status().window_requests, 1_000, "the window is not reset");
        persist::save(dir.path(), &r.persisted(SystemTime::now())).expect("save");
        let (again, err) = RouteRollout::start(
            "chat",
            &cfg(),
            "http://c",
            &deps,
            Some(dir.path()),
            Arc::new(clock.clone()),
        );
        assert!(err.is_none());
        assert_eq!(again.controller().state(), &State::Promoted);
        // A new canary url: a new rollout.
        let (fresh, _) = RouteRollout::start(
            "chat",
            &cfg(),
            "http://other",
            &deps,
            Some(dir.path()),
            Arc::new(clock),
        );
        assert_eq!(fresh.controller().state(), &State::Canary { step: 0 });
        assert!(serde_json::to_string(&fresh.status()).is_ok());
    }

    #[test]
    fn reconfigure_keeps_the_same_canary_and_restarts_a_new_one() {
        let clock = ManualClock::new();
        let deps = Deps::new();
        let (mut r, _) = RouteRollout::start(
            "chat",
            &cfg(),
            "http://c",
            &deps,
            None,
            Arc::new(clock.clone()),
        );
        assert!(r.act(Action::Pause).is_ok());
        assert!(!r.reconfigure(&cfg(), "http://c", &deps));
        assert_eq!(r.controller().state().name(), "paused");
        let mut deps2 = Deps::new();
        deps2.insert("model".into(), "m2".into());
        assert!(r.reconfigure(&cfg(), "http://c", &deps2));
        assert_eq!(r.controller().state(), &State::Canary { step: 0 });
        let t = r.act(Action::Abort).expect("abort");
        let e = r.event(&t, SystemTime::UNIX_EPOCH);
        assert_eq!((e.from, e.to, e.step), ("canary", "rolled_back", -1));
    }
}
