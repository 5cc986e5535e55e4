//! The rollout state machine of SPEC §9, as pure logic on an injected clock.
//!
//! The controller owns no task, no timer and no I/O: the caller (the 1 s
//! control-plane tick) hands it the step snapshots, the canary's window and
//! its breaker state, and applies what it returns (publish the weight,
//! persist, reset the step stats, post the webhook, count metrics).
//!
//! # Lifecycle
//!
//! ```text
//!                 gates pass, min_duration, min_requests
//!  (shadow_first) Shadowing ─────────────────────────────► Canary{0}
//!                    │                                         │ gates pass, interval,
//!                    │                                         │ min_requests
//!                    │                                         ▼
//!                    │                                     Canary{i+1} ─ … ─► Promoted
//!                    │  gate fails, trigger, abort              │   (next step is 100 %)
//!                    └──────────────┬───────────────────────────┘
//!                                   ▼                        trigger, abort
//!                             RolledBack{reason} ◄──────────────── Promoted
//!   pause: Shadowing | Canary{i} → Paused{stage}; resume: back to the stage
//!   restart: any state → the first stage, a fresh step
//! ```
//!
//! * The last step is 100 %: the baseline gets no traffic there, so there is
//!   nothing to compare, and entering it *is* `Promoted`. `Canary{step}`
//!   only ever holds a step below 100 % (the constructor and every
//!   transition keep `step < live_steps.len()`).
//! * Rollback triggers are checked in every state but `RolledBack`,
//!   including `Paused` and `Promoted`: pausing stops advancing, not safety.
//! * While `Paused`, the gates are still judged and a Fail still rolls back;
//!   a Pass does not advance. Paused time counts towards the step's
//!   interval (the step keeps its start).

use std::fmt;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use crate::config::{RollbackConfig, RolloutConfig, ShadowFirstConfig, WeightBps};
use crate::rollout::judge::{GateName, GateVerdict, Judge, Judgement};
use crate::rollout::stats::{VersionSnapshot, WindowSnapshot};

/// A stage that judges the canary against the baseline.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "stage", rename_all = "snake_case")]
pub enum Stage {
    Shadowing,
    /// `step` indexes the steps below 100 %.
    Canary {
        step: usize,
    },
}

/// The rollout state.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "state", rename_all = "snake_case")]
pub enum State {
    Shadowing,
    Canary { step: usize },
    Paused { stage: Stage },
    Promoted,
    RolledBack { reason: RollbackReason },
}

impl State {
    /// The `state` label of `cutover_rollout_state`.
    pub fn name(&self) -> &'static str {
        match self {
            State::Shadowing => "shadowing",
            State::Canary { .. } => "canary",
            State::Paused { .. } => "paused",
            State::Promoted => "promoted",
            State::RolledBack { .. } => "rolled_back",
        }
    }

    /// Every state name, for zeroing the other `cutover_rollout_state` series.
    pub const NAMES: [&'static str; 5] =
        ["shadowing", "canary", "paused", "promoted", "rolled_back"];

    fn stage(&self) -> Option<Stage> {
        match *self {
            State::Shadowing => Some(Stage::Shadowing),
            State::Canary { step } => Some(Stage::Canary { step }),
            State::Paused { stage } => Some(stage),
            State::Promoted | State::RolledBack { .. } => None,
        }
    }
}

impl From<Stage> for State {
    fn from(stage: Stage) -> State {
        match stage {
            Stage::Shadowing => State::Shadowing,
            Stage::Canary { step } => State::Canary { step },
        }
    }
}

/// Why a rollout rolled back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub enum ReasonKind {
    /// `rollback.error_rate` on the window.
    ErrorRate,
    /// `rollback.latency_p99` on the window.
    LatencyP99,
    /// `rollback.on_breaker_open`.
    BreakerOpen,
    /// A gate failed.
    Gate(GateName),
    /// The operator's `abort`.
    Abort,
}

impl ReasonKind {
    /// Every kind: the triggers, each gate, the operator's abort.
    pub fn all() -> impl Iterator<Item = ReasonKind> {
        [
            ReasonKind::ErrorRate,
            ReasonKind::LatencyP99,
            ReasonKind::BreakerOpen,
        ]
        .into_iter()
        .chain(GateName::ALL.map(ReasonKind::Gate))
        .chain([ReasonKind::Abort])
    }

    /// The `reason` label of `cutover_rollbacks_total`.
    pub fn as_str(self) -> &'static str {
        match self {
            ReasonKind::ErrorRate => "error_rate",
            ReasonKind::LatencyP99 => "latency_p99",
            ReasonKind::BreakerOpen => "breaker_open",
            ReasonKind::Gate(g) => g.as_str(),
            ReasonKind::Abort => "abort",
        }
    }

    pub fn parse(s: &str) -> Option<ReasonKind> {
        match s {
            "error_rate" => Some(ReasonKind::ErrorRate),
            "latency_p99" => Some(ReasonKind::LatencyP99),
            "breaker_open" => Some(ReasonKind::BreakerOpen),
            "abort" => Some(ReasonKind::Abort),
            other => GateName::parse(other).map(ReasonKind::Gate),
        }
    }
}

impl From<ReasonKind> for String {
    fn from(k: ReasonKind) -> String {
        k.as_str().to_string()
    }
}

impl TryFrom<String> for ReasonKind {
    type Error = String;
    fn try_from(s: String) -> Result<ReasonKind, String> {
        ReasonKind::parse(&s).ok_or_else(|| format!("unknown rollback reason {s:?}"))
    }
}

/// A rollback's kind (the metric label) and a sentence with its numbers.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RollbackReason {
    pub kind: ReasonKind,
    pub detail: String,
}

impl fmt::Display for RollbackReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.kind.as_str(), self.detail)
    }
}

/// An operator action (`POST /routes/{route}/rollout/{action}`, and
/// `cutover rollout ACTION`, whose help shows these comments).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, clap::ValueEnum)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    /// Move to the next step now, without waiting for the gates.
    Advance,
    /// Go straight to 100 %.
    Promote,
    /// Stop advancing (rollback triggers still fire).
    Pause,
    /// Continue from where it paused.
    Resume,
    /// Roll back now.
    Abort,
    /// Start the rollout again from its first stage.
    Restart,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::Advance => "advance",
            Action::Promote => "promote",
            Action::Pause => "pause",
            Action::Resume => "resume",
            Action::Abort => "abort",
            Action::Restart => "restart",
        }
    }

    pub fn parse(s: &str) -> Option<Action> {
        <Action as clap::ValueEnum>::value_variants()
            .iter()
            .copied()
            .find(|a| a.as_str() == s)
    }
}

/// An action the current state does not allow (the admin API's 409).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("cannot {action} a rollout that is {state}")]
pub struct NotAllowed {
    pub action: &'static str,
    pub state: &'static str,
}

/// What caused a transition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Cause {
    /// Every gate passed with enough time and requests on the stage.
    GatesPassed,
    /// A gate failed or a trigger fired (the reason is in the new state).
    Rollback,
    Operator(Action),
}

/// A state change, for the caller to apply.
#[derive(Clone, Debug, PartialEq)]
pub struct Transition {
    pub from: State,
    pub to: State,
    pub at: Instant,
    pub cause: Cause,
    /// A new stage began: reset the step stats.
    pub stage_changed: bool,
}

impl Transition {
    /// A one-line reason for the webhook and the log.
    pub fn reason(&self) -> String {
        match (&self.to, self.cause) {
            (State::RolledBack { reason }, _) => reason.to_string(),
            (_, Cause::GatesPassed) => "gates passed".to_string(),
            (_, Cause::Operator(a)) => format!("operator {}", a.as_str()),
            (_, Cause::Rollback) => "rollback".to_string(),
        }
    }
}

/// What the controller needs to see each tick.
#[derive(Clone, Copy, Debug)]
pub struct TickInputs<'a> {
    /// The current step's counters. While shadowing, `canary` holds the
    /// shadow's own observations.
    pub baseline: &'a VersionSnapshot,
    pub canary: &'a VersionSnapshot,
    /// The canary over `rollback.window`.
    pub window: &'a WindowSnapshot,
    /// The canary upstream's breaker is open.
    pub canary_breaker_open: bool,
}

/// A rollout's configuration, as the controller uses it.
#[derive(Clone, Debug)]
struct Plan {
    /// The steps below 100 %; past the last one is `Promoted`.
    live_steps: Vec<WeightBps>,
    /// Index of the 100 % step in the configured steps (the metric's step
    /// while promoted).
    full_step: usize,
    interval: Duration,
    min_requests: u64,
    shadow_first: Option<ShadowFirstConfig>,
    rollback: Option<RollbackConfig>,
    judge: Judge,
}

impl Plan {
    fn new(cfg: &RolloutConfig) -> Plan {
        let live_steps: Vec<WeightBps> = cfg
            .steps
            .iter()
            .copied()
            .take_while(|w| *w < WeightBps::FULL)
            .collect();
        let stages = live_steps.len() + usize::from(cfg.shadow_first.is_some());
        Plan {
            full_step: live_steps.len(),
            judge: Judge::new(&cfg.gates, stages, cfg.min_requests),
            live_steps,
            interval: cfg.interval,
            min_requests: cfg.min_requests,
            shadow_first: cfg.shadow_first.clone(),
            rollback: cfg.rollback.clone(),
        }
    }

    fn first_state(&self) -> State {
        if self.shadow_first.is_some() {
            State::Shadowing
        } else {
            self.step_state(0)
        }
    }

    /// `Canary{step}`, or `Promoted` past the steps below 100 %.
    fn step_state(&self, step: usize) -> State {
        if step < self.live_steps.len() {
            State::Canary { step }
        } else {
            State::Promoted
        }
    }

    fn next(&self, stage: Stage) -> State {
        match stage {
            Stage::Shadowing => self.step_state(0),
            Stage::Canary { step } => self.step_state(step + 1),
        }
    }
}

/// One route's rollout.
#[derive(Clone, Debug)]
pub struct Controller {
    plan: Plan,
    state: State,
    /// When the current stage began: its interval (or `min_duration`) runs
    /// from here, across pauses and restarts.
    stage_started: Instant,
    /// The last tick's gate results, for `/status`.
    judgement: Option<Judgement>,
}

impl Controller {
    /// A new rollout: shadowing with `shadow_first`, else step 0.
    pub fn new(cfg: &RolloutConfig, now: Instant) -> Controller {
        let plan = Plan::new(cfg);
        Controller {
            state: plan.first_state(),
            plan,
            stage_started: now,
            judgement: None,
        }
    }

    /// A rollout resumed from persisted state, its stage begun `elapsed`
    /// ago. A state the config no longer allows is mapped to the nearest one
    /// that never skips ahead: a step past the new steps becomes the last
    /// step below 100 %; shadowing without `shadow_first` becomes step 0.
    pub fn restore(
        cfg: &RolloutConfig,
        state: State,
        elapsed: Duration,
        now: Instant,
    ) -> Controller {
        let plan = Plan::new(cfg);
        let fit = |stage: Stage| -> State {
            match stage {
                Stage::Shadowing if plan.shadow_first.is_none() => plan.step_state(0),
                Stage::Shadowing => State::Shadowing,
                Stage::Canary { step } => {
                    plan.step_state(step.min(plan.live_steps.len().saturating_sub(1)))
                }
            }
        };
        let state = match state {
            State::Shadowing => fit(Stage::Shadowing),
            State::Canary { step } => fit(Stage::Canary { step }),
            State::Paused { stage } => match fit(stage).stage() {
                Some(stage) => State::Paused { stage },
                None => State::Promoted,
            },
            other @ (State::Promoted | State::RolledBack { .. }) => other,
        };
        Controller {
            plan,
            state,
            stage_started: now.checked_sub(elapsed).unwrap_or(now),
            judgement: None,
        }
    }

    pub fn state(&self) -> &State {
        &self.state
    }

    pub fn stage_started(&self) -> Instant {
        self.stage_started
    }

    /// The last tick's gate results (`None` before the first judged tick of
    /// a stage).
    pub fn judgement(&self) -> Option<&Judgement> {
        self.judgement.as_ref()
    }

    /// The canary's effective live weight; the baseline gets the rest.
    pub fn canary_weight(&self) -> WeightBps {
        match self.state {
            State::Shadowing | State::RolledBack { .. } => WeightBps::ZERO,
            State::Canary { step } => self.live_weight(step),
            State::Paused { stage } => match stage {
                Stage::Shadowing => WeightBps::ZERO,
                Stage::Canary { step } => self.live_weight(step),
            },
            State::Promoted => WeightBps::FULL,
        }
    }

    fn live_weight(&self, step: usize) -> WeightBps {
        self.plan
            .live_steps
            .get(step)
            .copied()
            .unwrap_or(WeightBps::ZERO)
    }

    /// The canary is mirrored at 100 % (shadowing, or paused while
    /// shadowing).
    pub fn mirrored(&self) -> bool {
        self.state.stage() == Some(Stage::Shadowing)
    }

    /// `cutover_rollout_step`: the index into `steps`; -1 while shadowing
    /// and once rolled back (no live step).
    pub fn step_metric(&self) -> i64 {
        let step = match self.state {
            State::Canary { step } => step,
            State::Paused {
                stage: Stage::Canary { step },
            } => step,
            State::Promoted => self.plan.full_step,
            State::Shadowing
            | State::Paused {
                stage: Stage::Shadowing,
            }
            | State::RolledBack { .. } => return -1,
        };
        i64::try_from(step).unwrap_or(i64::MAX)
    }

    /// One control-plane tick. Returns the transition, if any; the caller
    /// applies it (weights, persistence, stats reset, webhook, metrics).
    pub fn tick(&mut self, now: Instant, inputs: &TickInputs<'_>) -> Option<Transition> {
        if matches!(self.state, State::RolledBack { .. }) {
            return None;
        }
        if let Some(reason) = self.trigger(inputs) {
            return Some(self.rollback(now, reason));
        }
        let stage = self.state.stage()?;
        let shadowing = stage == Stage::Shadowing;
        let judgement = self
            .plan
            .judge
            .judge(inputs.baseline, inputs.canary, !shadowing);
        let verdict = judgement.verdict();
        let failed = judgement.first_failure().map(|g| RollbackReason {
            kind: ReasonKind::Gate(g.gate),
            detail: format!(
                "{}gate {} failed: estimate {}, bound {:.4} > threshold {} (n canary {}{})",
                if shadowing { "shadow " } else { "" },
                g.gate.as_str(),
                g.estimate.map_or("n/a".to_string(), |e| format!("{e:.4}")),
                g.lower.unwrap_or(f64::NAN),
                g.threshold,
                g.n_canary,
                g.n_baseline
                    .map_or(String::new(), |n| format!(", baseline {n}")),
            ),
        });
        self.judgement = Some(judgement);
        if let Some(reason) = failed {
            return Some(self.rollback(now, reason));
        }
        if verdict != GateVerdict::Pass || matches!(self.state, State::Paused { .. }) {
            return None;
        }
        let (least_time, least_requests) = match (stage, &self.plan.shadow_first) {
            (Stage::Shadowing, Some(sf)) => (sf.min_duration, sf.min_requests),
            _ => (self.plan.interval, self.plan.min_requests),
        };
        let lasted = now.saturating_duration_since(self.stage_started);
        if lasted < least_time || inputs.canary.requests < least_requests {
            return None;
        }
        let to = self.plan.next(stage);
        Some(self.go(now, to, Cause::GatesPassed, true))
    }

    /// Only the rollback triggers, for a replica that cannot reach its fleet
    /// (SPEC §12): no gate is judged and nothing advances, but a trigger
    /// still rolls back, the fail-safe direction.
    pub fn tick_triggers(&mut self, now: Instant, inputs: &TickInputs<'_>) -> Option<Transition> {
        if matches!(self.state, State::RolledBack { .. }) {
            return None;
        }
        let reason = self.trigger(inputs)?;
        Some(self.rollback(now, reason))
    }

    /// The first rollback trigger that fires, if any.
    fn trigger(&self, inputs: &TickInputs<'_>) -> Option<RollbackReason> {
        let rb = self.plan.rollback.as_ref()?;
        if rb.on_breaker_open && inputs.canary_breaker_open {
            return Some(RollbackReason {
                kind: ReasonKind::BreakerOpen,
                detail: "the canary upstream's circuit breaker is open".to_string(),
            });
        }
        let w = inputs.window;
        if w.requests < rb.min_requests.max(1) {
            return None;
        }
        if let (Some(max), Some(rate)) = (rb.error_rate, w.failure_rate())
            && rate >= max
        {
            return Some(RollbackReason {
                kind: ReasonKind::ErrorRate,
                detail: format!(
                    "canary failure rate {rate:.4} over the last {:?} ({} of {}) reached {max}",
                    rb.window, w.failures, w.requests
                ),
            });
        }
        if let (Some(max), Some(p99)) = (rb.latency_p99, w.latency.quantile(0.99))
            && p99 > max.as_secs_f64()
        {
            return Some(RollbackReason {
                kind: ReasonKind::LatencyP99,
                detail: format!(
                    "canary p99 {p99:.3}s over the last {:?} ({} requests) above {:?}",
                    rb.window,
                    w.latency.total(),
                    max
                ),
            });
        }
        None
    }

    fn rollback(&mut self, now: Instant, reason: RollbackReason) -> Transition {
        self.go(now, State::RolledBack { reason }, Cause::Rollback, true)
    }

    fn go(&mut self, now: Instant, to: State, cause: Cause, stage_changed: bool) -> Transition {
        let from = std::mem::replace(&mut self.state, to.clone());
        if stage_changed {
            self.stage_started = now;
            self.judgement = None;
        }
        Transition {
            from,
            to,
            at: now,
            cause,
            stage_changed,
        }
    }

    /// An operator action. `Err` when the state does not allow it.
    pub fn act(&mut self, action: Action, now: Instant) -> Result<Transition, NotAllowed> {
        let not_allowed = NotAllowed {
            action: action.as_str(),
            state: self.state.name(),
        };
        let cause = Cause::Operator(action);
        let (to, stage_changed) = match (action, &self.state) {
            (Action::Advance, State::Shadowing) => (self.plan.next(Stage::Shadowing), true),
            (Action::Advance, &State::Canary { step }) => {
                (self.plan.next(Stage::Canary { step }), true)
            }
            (Action::Promote, State::Shadowing | State::Canary { .. } | State::Paused { .. }) => {
                (State::Promoted, true)
            }
            (Action::Pause, State::Shadowing | State::Canary { .. }) => match self.state.stage() {
                Some(stage) => (State::Paused { stage }, false),
                None => return Err(not_allowed),
            },
            (Action::Resume, &State::Paused { stage }) => (State::from(stage), false),
            (
                Action::Abort,
                State::Shadowing | State::Canary { .. } | State::Paused { .. } | State::Promoted,
            ) => (
                State::RolledBack {
                    reason: RollbackReason {
                        kind: ReasonKind::Abort,
                        detail: "aborted by the operator".to_string(),
                    },
                },
                true,
            ),
            (Action::Restart, _) => (self.plan.first_state(), true),
            _ => return Err(not_allowed),
        };
        Ok(self.go(now, to, cause, stage_changed))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::stats::HistogramSnapshot;

    fn cfg() -> RolloutConfig {
        crate::rollout::test_config(
            &[100, 500, 10_000],
            Duration::from_secs(60),
            100,
            0.05,
            Some(RollbackConfig {
                window: Duration::from_secs(60),
                min_requests: 20,
                error_rate: Some(0.5),
                latency_p99: Some(Duration::from_secs(10)),
                on_breaker_open: true,
                webhook: None,
            }),
        )
    }

    fn v(requests: u64, failures: u64) -> VersionSnapshot {
        VersionSnapshot {
            requests,
            failures,
            ..VersionSnapshot::default()
        }
    }

    struct World {
        baseline: VersionSnapshot,
        canary: VersionSnapshot,
        window: WindowSnapshot,
        breaker_open: bool,
    }

    impl World {
        fn healthy() -> World {
            World {
                baseline: v(100_000, 0),
                canary: v(10_000, 0),
                window: WindowSnapshot::default(),
                breaker_open: false,
            }
        }
        fn inputs(&self) -> TickInputs<'_> {
            TickInputs {
                baseline: &self.baseline,
                canary: &self.canary,
                window: &self.window,
                canary_breaker_open: self.breaker_open,
            }
        }
    }

    /// `all` (the series created at 0) names every kind once, and each
    /// label reads back as its kind.
    #[test]
    fn every_rollback_reason_is_listed_once() {
        let labels: std::collections::BTreeSet<&str> =
            ReasonKind::all().map(|k| k.as_str()).collect();
        assert_eq!(labels.len(), ReasonKind::all().count());
        for kind in ReasonKind::all() {
            assert_eq!(ReasonKind::parse(kind.as_str()), Some(kind));
            // A new kind must be added to `all`: this match says which.
            match kind {
                ReasonKind::ErrorRate
                | ReasonKind::LatencyP99
                | ReasonKind::BreakerOpen
                | ReasonKind::Gate(_)
                | ReasonKind::Abort => {}
            }
        }
        let gates = ReasonKind::all()
            .filter(|k| matches!(k, ReasonKind::Gate(_)))
            .count();
        let every_gate = [
            "error_rate_margin",
            "max_error_rate",
            "outcome_margin",
            "latency_p95_ratio",
            "max_latency_p95",
            "max_cost_per_request",
        ];
        assert_eq!(gates, every_gate.len());
        assert!(every_gate.iter().all(|g| GateName::parse(g).is_some()));
    }

    #[test]
    fn healthy_canary_walks_the_steps_then_promotes() {
        let t0 = Instant::now();
        let mut c = Controller::new(&cfg(), t0);
        assert_eq!(c.state(), &State::Canary { step: 0 });
        assert_eq!(c.canary_weight().get(), 100);
        let w = World::healthy();
        // Gates pass at once, but the interval has not elapsed.
        assert_eq!(c.tick(t0 + Duration::from_secs(30), &w.inputs()), None);
        assert_eq!(c.judgement().map(|j| j.verdict()), Some(GateVerdict::Pass));
        let t = c.tick(t0 + Duration::from_secs(60), &w.inputs());
        assert_eq!(t.as_ref().map(|t| &t.to), Some(&State::Canary { step: 1 }));
        assert_eq!(t.map(|t| t.stage_changed), Some(true));
        assert_eq!(c.canary_weight().get(), 500);
        assert_eq!(c.step_metric(), 1);
        // The interval restarts with the step.
        assert_eq!(c.tick(t0 + Duration::from_secs(90), &w.inputs()), None);
        let t = c.tick(t0 + Duration::from_secs(120), &w.inputs());
        assert_eq!(t.map(|t| t.to), Some(State::Promoted));
        assert_eq!(c.canary_weight(), WeightBps::FULL);
        assert_eq!(c.step_metric(), 2);
        assert_eq!(c.tick(t0 + Duration::from_secs(999), &w.inputs()), None);
    }

    #[test]
    fn too_few_requests_wait() {
        let t0 = Instant::now();
        let mut c = Controller::new(&cfg(), t0);
        let mut w = World::healthy();
        w.canary = v(99, 0);
        w.baseline = v(1_000_000, 0);
        assert_eq!(c.tick(t0 + Duration::from_secs(600), &w.inputs()), None);
    }

    #[test]
    fn triggers_roll_back_at_once_in_any_live_state() {
        let t0 = Instant::now();
        for setup in [None, Some(Action::Pause), Some(Action::Promote)] {
            let mut c = Controller::new(&cfg(), t0);
            if let Some(a) = setup {
                assert!(c.act(a, t0).is_ok());
            }
            let mut w = World::healthy();
            w.breaker_open = true;
            let t = c.tick(t0, &w.inputs());
            assert!(
                matches!(&t, Some(Transition { to: State::RolledBack { reason }, .. }) if reason.kind == ReasonKind::BreakerOpen),
                "{t:?}"
            );
            assert_eq!(c.canary_weight(), WeightBps::ZERO);
            assert!(!c.mirrored());
            // Rolled back stays rolled back.
            assert_eq!(c.tick(t0, &World::healthy().inputs()), None);
        }
        let mut c = Controller::new(&cfg(), t0);
        let mut w = World::healthy();
        w.window = WindowSnapshot {
            requests: 19,
            failures: 19,
            latency: HistogramSnapshot::default(),
        };
        assert_eq!(c.tick(t0, &w.inputs()), None, "below rollback.min_requests");
        w.window.requests = 30;
        w.window.failures = 15;
        let t = c.tick(t0, &w.inputs());
        assert!(
            matches!(t.map(|t| t.to), Some(State::RolledBack { reason }) if reason.kind == ReasonKind::ErrorRate)
        );
    }

    #[test]
    fn a_failed_gate_rolls_back_with_its_numbers() {
        let t0 = Instant::now();
        let mut c = Controller::new(&cfg(), t0);
        let mut w = World::healthy();
        w.canary = v(1_000, 300);
        let t = c.tick(t0, &w.inputs());
        match t.map(|t| t.to) {
            Some(State::RolledBack { reason }) => {
                assert_eq!(reason.kind, ReasonKind::Gate(GateName::ErrorRateMargin));
                assert!(reason.detail.contains("error_rate_margin"), "{reason}");
            }
            other => panic!("not rolled back: {other:?}"),
        }
    }

    #[test]
    fn shadow_first_needs_duration_and_requests_then_goes_live() {
        let mut cfg = cfg();
        cfg.shadow_first = Some(ShadowFirstConfig {
            min_duration: Duration::from_secs(300),
            min_requests: 500,
        });
        let t0 = Instant::now();
        let mut c = Controller::new(&cfg, t0);
        assert_eq!(c.state(), &State::Shadowing);
        assert!(c.mirrored());
        assert_eq!(c.canary_weight(), WeightBps::ZERO);
        assert_eq!(c.step_metric(), -1);
        let w = World::healthy();
        assert_eq!(c.tick(t0 + Duration::from_secs(299), &w.inputs()), None);
        let t = c.tick(t0 + Duration::from_secs(300), &w.inputs());
        assert_eq!(t.map(|t| t.to), Some(State::Canary { step: 0 }));
        assert!(!c.mirrored());
        // A bad shadow rolls back.
        let mut c = Controller::new(&cfg, t0);
        let mut w = World::healthy();
        w.canary = v(1_000, 400);
        let t = c.tick(t0, &w.inputs());
        assert!(matches!(t.map(|t| t.to), Some(State::RolledBack { .. })));
    }

    #[test]
    fn actions_and_their_409s() {
        let t0 = Instant::now();
        let mut c = Controller::new(&cfg(), t0);
        assert!(c.act(Action::Resume, t0).is_err());
        let t = c.act(Action::Pause, t0);
        assert_eq!(t.as_ref().map(|t| t.stage_changed), Ok(false));
        assert_eq!(c.state().name(), "paused");
        assert_eq!(
            c.canary_weight().get(),
            100,
            "paused holds the step's weight"
        );
        assert_eq!(
            c.act(Action::Pause, t0),
            Err(NotAllowed {
                action: "pause",
                state: "paused"
            })
        );
        assert!(c.act(Action::Advance, t0).is_err());
        // Paused: passing gates do not advance, even past the interval.
        let w = World::healthy();
        assert_eq!(c.tick(t0 + Duration::from_secs(600), &w.inputs()), None);
        assert!(c.act(Action::Resume, t0).is_ok());
        assert_eq!(c.state(), &State::Canary { step: 0 });
        // The step kept its start through the pause: it advances at once.
        assert!(c.tick(t0 + Duration::from_secs(600), &w.inputs()).is_some());
        assert!(c.act(Action::Advance, t0).is_ok());
        assert_eq!(c.state(), &State::Promoted);
        assert!(c.act(Action::Advance, t0).is_err());
        assert!(c.act(Action::Promote, t0).is_err());
        assert!(c.act(Action::Abort, t0).is_ok());
        assert_eq!(c.state().name(), "rolled_back");
        for a in [
            Action::Advance,
            Action::Promote,
            Action::Pause,
            Action::Resume,
            Action::Abort,
        ] {
            assert!(c.act(a, t0).is_err(), "{a:?} allowed while rolled back");
        }
        let t = c.act(Action::Restart, t0 + Duration::from_secs(5));
        assert_eq!(t.map(|t| t.to), Ok(State::Canary { step: 0 }));
        assert_eq!(c.stage_started(), t0 + Duration::from_secs(5));
        assert_eq!(Action::parse("abort"), Some(Action::Abort));
        assert_eq!(Action::parse("nope"), None);
    }

    #[test]
    fn restore_keeps_the_step_and_its_start_and_never_skips() {
        let now = Instant::now();
        let c = Controller::restore(
            &cfg(),
            State::Canary { step: 1 },
            Duration::from_secs(50),
            now,
        );
        assert_eq!(c.state(), &State::Canary { step: 1 });
        assert_eq!(
            now.duration_since(c.stage_started()),
            Duration::from_secs(50)
        );
        // Steps shortened in the config: the last step below 100 %, not promoted.
        let c = Controller::restore(&cfg(), State::Canary { step: 7 }, Duration::ZERO, now);
        assert_eq!(c.state(), &State::Canary { step: 1 });
        let c = Controller::restore(
            &cfg(),
            State::Paused {
                stage: Stage::Shadowing,
            },
            Duration::ZERO,
            now,
        );
        assert_eq!(
            c.state(),
            &State::Paused {
                stage: Stage::Canary { step: 0 }
            }
        );
    }

    #[test]
    fn states_serialise_with_their_names() {
        let s = State::RolledBack {
            reason: RollbackReason {
                kind: ReasonKind::Gate(GateName::MaxLatencyP95),
                detail: "x".into(),
            },
        };
        let json = serde_json::to_string(&s).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"state":"rolled_back","reason":{"kind":"max_latency_p95","detail":"x"}}"#
        );
        let back: Result<State, _> = serde_json::from_str(&json);
        assert_eq!(back.ok(), Some(s));
        let paused = State::Paused {
            stage: Stage::Canary { step: 2 },
        };
        let json = serde_json::to_string(&paused).unwrap_or_default();
        assert_eq!(
            json,
            r#"{"state":"paused","stage":{"stage":"canary","step":2}}"#
        );
    }
}
