//! One route's rollout, assembled: its controller, its stats and its
//! canary fingerprint, with the invariants that tie them together kept in
//! one place (a new stage gets fresh stats; a changed canary starts over).
//!
//! The control plane owns one [`RouteRollout`] per route with a rollout
//! (behind a `Mutex`, shared by the 1 s ticker and the admin actions); the
//! data plane only ever sees `Arc<RolloutStats>`.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::SystemTime;

use serde::Serialize;

use crate::clock::Clock;
use crate::config::{Deps, RolloutConfig, WeightBps};
use crate::rollout::controller::{Action, Controller, NotAllowed, State, TickInputs, Transition};
use crate::rollout::fleet::{FleetCounts, FleetDoc, FleetLink, FleetLinkView, unix_ms};
use crate::rollout::judge::Judgement;
use crate::rollout::persist::{self, PersistError, PersistedState};
use crate::rollout::stats::{RolloutStats, StepSummary, VersionSnapshot};
use crate::rollout::webhook::WebhookEvent;

/// What `/status` shows for a route's rollout.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct RolloutStatus {
    /// shadowing, canary, paused, promoted, rolled_back.
    pub state: &'static str,
    /// The full state (paused stage, rollback reason).
    pub detail: State,
    /// `cutover_rollout_step`.
    pub step: i64,
    /// Why the rollout stands where it does, when not by its own progress:
    /// the rollback's reason (`kind: detail`), or the operator's pause.
    pub reason: Option<String>,
    /// The canary's effective live weight, percent.
    pub canary_weight: f64,
    pub mirrored: bool,
    pub stage_seconds: f64,
    pub baseline: StepSummary,
    pub canary: StepSummary,
    /// `baseline` and `canary` again, under their version names: the
    /// per-version stats of the current step SPEC §10 names.
    pub versions: BTreeMap<String, StepSummary>,
    pub window_requests: u64,
    pub window_failures: u64,
    /// The gates at the last tick.
    pub judgement: Option<Judgement>,
    /// With `[cluster]`: `baseline`, `canary` and the window above are the
    /// fleet's sums, and these are this replica's own.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub replica: Option<ReplicaFigures>,
    /// With `[cluster]`: this replica's link with the fleet's rollout.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fleet: Option<FleetLinkView>,
}

/// One replica's own step and window figures.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ReplicaFigures {
    pub baseline: StepSummary,
    pub canary: StepSummary,
    pub window_requests: u64,
    pub window_failures: u64,
}

pub struct RouteRollout {
    route: String,
    cfg: RolloutConfig,
    fingerprint: String,
    stats: Arc<RolloutStats>,
    controller: Controller,
    clock: Arc<dyn Clock>,
    /// `rollback.webhook`: where transitions are announced.
    webhook: Option<String>,
    /// With `[cluster]`: where this replica stands with the fleet's
    /// rollout. `None`: this process decides alone.
    link: Option<FleetLink>,
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
            cfg: cfg.clone(),
            fingerprint,
            stats: Arc::new(RolloutStats::new(window, Arc::clone(&clock))),
            controller,
            clock,
            webhook: webhook(cfg),
            link: None,
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
        // Another canary: whatever this replica adopted from the fleet was
        // about the old one.
        let link = match &self.link {
            Some(_) if restarted => Some(FleetLink::default()),
            other => other.clone(),
        };
        let next = RouteRollout {
            route: self.route.clone(),
            cfg: cfg.clone(),
            fingerprint,
            stats: Arc::clone(&self.stats),
            controller,
            clock: Arc::clone(&self.clock),
            webhook: webhook(cfg),
            link,
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

    /// The canary's live weight here: the controller's, or 0 while this
    /// replica's config names another canary than the fleet's.
    pub fn canary_weight(&self) -> WeightBps {
        if self.counted() {
            self.controller.canary_weight()
        } else {
            WeightBps::ZERO
        }
    }

    /// Every request is mirrored to the canary (shadowing), here.
    pub fn mirrored(&self) -> bool {
        self.counted() && self.controller.mirrored()
    }

    /// Requests are judged and counted here: always alone; in a fleet,
    /// while this replica's config names the fleet's canary.
    pub fn counted(&self) -> bool {
        self.link.as_ref().is_none_or(|l| l.agrees)
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
            reason: match c.state() {
                State::RolledBack { reason } => Some(reason.to_string()),
                State::Paused { .. } => Some("paused by the operator".to_string()),
                _ => None,
            },
            canary_weight: c.canary_weight().percent(),
            mirrored: c.mirrored(),
            stage_seconds: self
                .clock
                .now()
                .saturating_duration_since(c.stage_started())
                .as_secs_f64(),
            baseline: baseline.summary(),
            canary: canary.summary(),
            versions: BTreeMap::new(),
            window_requests: window.requests,
            window_failures: window.failures,
            judgement: c.judgement().cloned(),
            replica: None,
            fleet: None,
        }
        .with_fleet(self.link.as_ref())
        .named(&self.cfg)
    }

    // ---- a replica of a fleet (SPEC §12; see `rollout::fleet`) --------

    /// From now on this rollout follows the fleet's document.
    pub fn join_fleet(&mut self) {
        self.link.get_or_insert_with(FleetLink::default);
    }

    pub fn fleet_link(&self) -> Option<&FleetLink> {
        self.link.as_ref()
    }

    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn config(&self) -> &RolloutConfig {
        &self.cfg
    }

    /// The live split as the runtime compiles it: changed means republish.
    fn live_key(&self) -> (WeightBps, bool, bool) {
        (self.canary_weight(), self.mirrored(), self.counted())
    }

    /// Take the fleet's document: its state and stage start; fresh step
    /// counters when it names a new stage. A document about another canary
    /// makes this route serve its baseline only. A local rollback still to
    /// be reported is kept. Returns whether the live split changed.
    pub fn adopt(&mut self, doc: &FleetDoc) -> bool {
        let before = self.live_key();
        let now = self.clock.now();
        let link = self.link.get_or_insert_with(FleetLink::default);
        if doc.canary != self.fingerprint {
            link.agrees = false;
            link.counts = None;
        } else if link.pending.is_none() {
            link.agrees = true;
            if link.is_news(doc) {
                let elapsed = std::time::Duration::from_millis(
                    unix_ms(SystemTime::now()).saturating_sub(doc.stage_started_ms),
                );
                self.controller = Controller::restore(&self.cfg, doc.state.clone(), elapsed, now);
                if link.stage_id != doc.stage_id {
                    self.stats.reset_step();
                    link.counts = None;
                }
                link.hold(doc);
            }
        }
        before != self.live_key()
    }

    /// The document for `controller`'s state after `previous`.
    pub fn doc_after(
        &self,
        previous: Option<&FleetDoc>,
        controller: &Controller,
        new_stage: bool,
        by: &str,
        epoch: Option<u64>,
    ) -> FleetDoc {
        let lasted = self
            .clock
            .now()
            .saturating_duration_since(controller.stage_started());
        let started = SystemTime::now()
            .checked_sub(lasted)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        FleetDoc::next(
            previous,
            &self.fingerprint,
            controller.state().clone(),
            new_stage,
            unix_ms(started),
            by,
            epoch,
        )
    }

    /// Judge the fleet's sums on a copy of the controller. Without a
    /// transition the copy (with its fresh gate results for `/status`)
    /// replaces the controller; with one, the caller commits it through
    /// Redis and then [`Self::commit`]s it, or drops it.
    pub fn judge_fleet(&mut self, counts: FleetCounts) -> Option<(Controller, Transition)> {
        let mut c = self.controller.clone();
        let inputs = TickInputs {
            baseline: &counts.baseline,
            canary: &counts.canary,
            window: &counts.window,
            canary_breaker_open: counts.breaker_open,
        };
        let t = c.tick(self.clock.now(), &inputs);
        if let Some(link) = &mut self.link {
            link.counts = Some(counts);
        }
        match t {
            None => {
                self.controller = c;
                None
            }
            Some(t) => Some((c, t)),
        }
    }

    /// A transition this replica wrote to the fleet's document: take it.
    pub fn commit(&mut self, controller: Controller, t: &Transition, doc: &FleetDoc) {
        self.controller = controller;
        self.after(t);
        let link = self.link.get_or_insert_with(FleetLink::default);
        link.agrees = true;
        link.pending = None;
        if link.stage_id != doc.stage_id {
            link.counts = None;
        }
        link.hold(doc);
    }

    /// Redis is unreachable: only the rollback triggers, on this replica's
    /// own window and breaker. A rollback is applied here at once and kept
    /// to be reported.
    pub fn local_rollback(&mut self, canary_breaker_open: bool) -> Option<Transition> {
        if !self.counted() {
            return None;
        }
        let window = self.stats.window_snapshot();
        let none = VersionSnapshot::default();
        let inputs = TickInputs {
            baseline: &none,
            canary: &none,
            window: &window,
            canary_breaker_open,
        };
        let t = self.controller.tick_triggers(self.clock.now(), &inputs)?;
        if let (State::RolledBack { reason }, Some(link)) = (&t.to, &mut self.link) {
            link.pending = Some(reason.clone());
        }
        self.after(&t);
        Some(t)
    }

    /// The local rollback was reported (or the fleet had already moved on).
    pub fn reported(&mut self) {
        if let Some(link) = &mut self.link {
            link.pending = None;
            // Adopt the fleet's document afresh at the next read.
            link.doc_id.clear();
            link.seq = 0;
            link.at_ms = 0;
        }
    }
}

impl RolloutStatus {
    /// `versions` filled from what `baseline` and `canary` hold now.
    fn named(mut self, cfg: &RolloutConfig) -> RolloutStatus {
        self.versions = BTreeMap::from([
            (cfg.baseline.clone(), self.baseline.clone()),
            (cfg.canary.clone(), self.canary.clone()),
        ]);
        self
    }

    /// With a fleet link: the fleet's sums in front, this replica's own
    /// figures under `replica`.
    fn with_fleet(mut self, link: Option<&FleetLink>) -> RolloutStatus {
        let Some(link) = link else {
            return self;
        };
        if let Some(sums) = &link.counts {
            self.replica = Some(ReplicaFigures {
                baseline: std::mem::replace(&mut self.baseline, sums.baseline.summary()),
                canary: std::mem::replace(&mut self.canary, sums.canary.summary()),
                window_requests: std::mem::replace(&mut self.window_requests, sums.window.requests),
                window_failures: std::mem::replace(&mut self.window_failures, sums.window.failures),
            });
        }
        if !link.agrees {
            self.canary_weight = 0.0;
            self.mirrored = false;
        }
        self.fleet = Some(link.view());
        self
    }
}

fn webhook(cfg: &RolloutConfig) -> Option<String> {
    cfg.rollback.as_ref().and_then(|r| r.webhook.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;
    use crate::config::RollbackConfig;
    use crate::rollout::stats::{Observation, Role};
    use std::time::Duration;

    fn cfg() -> RolloutConfig {
        crate::rollout::test_config(
            &[1_000, 10_000],
            Duration::from_secs(10),
            10,
            0.2,
            Some(RollbackConfig {
                window: Duration::from_secs(60),
                min_requests: 10,
                error_rate: Some(0.5),
                latency_p99: None,
                on_breaker_open: true,
                webhook: None,
            }),
        )
    }

    /// Route `chat`'s rollout of `cfg()`, its canary at `url` with no deps.
    fn start(
        url: &str,
        state_dir: Option<&Path>,
        clock: &ManualClock,
    ) -> (RouteRollout, Option<PersistError>) {
        RouteRollout::start(
            "chat",
            &cfg(),
            url,
            &Deps::new(),
            state_dir,
            Arc::new(clock.clone()),
        )
    }

    #[test]
    fn tick_resets_stats_on_a_new_stage_and_restores_from_disk() {
        let dir = tempfile::tempdir().expect("tempdir");
        let clock = ManualClock::new();
        let (mut r, err) = start("http://c", Some(dir.path()), &clock);
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
        let (again, err) = start("http://c", Some(dir.path()), &clock);
        assert!(err.is_none());
        assert_eq!(again.controller().state(), &State::Promoted);
        // A new canary url: a new rollout.
        let (fresh, _) = start("http://other", Some(dir.path()), &clock);
        assert_eq!(fresh.controller().state(), &State::Canary { step: 0 });
        assert!(serde_json::to_string(&fresh.status()).is_ok());
    }

    #[test]
    fn reconfigure_keeps_the_same_canary_and_restarts_a_new_one() {
        let clock = ManualClock::new();
        let deps = Deps::new();
        let (mut r, _) = start("http://c", None, &clock);
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
