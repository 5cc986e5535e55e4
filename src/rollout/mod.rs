//! Progressive rollout (SPEC §9): shadow → canary steps → promoted, judged
//! by anytime-valid statistics, with automatic rollback.
//!
//! * [`stats`]: the hot path records each judged request into
//!   [`stats::RolloutStats`] (lock-free; per-step counters swapped on a step
//!   change; the canary's sliding window for the rollback triggers).
//! * [`judge`]: the gates, each Pass / Fail / Inconclusive with its numbers,
//!   on confidence sequences so that looking every tick stays valid.
//! * [`controller`]: the state machine, pure logic on an injected clock:
//!   `tick` once a second, `act` for the operator's actions.
//! * [`persist`]: `state.dir/<route>.json`, atomic write, restore at start.
//! * [`webhook`]: a JSON event per transition, never blocking the tick.
//!
//! The simulation that proves the judge (synthetic traffic on a manual
//! clock) is test support: `tests/support/sim.rs`.
//!
//! `docs/judge.md` explains the method and how to wire these together.

pub mod controller;
pub mod fleet;
pub mod judge;
pub mod persist;
pub mod registry;
pub mod route;
pub mod stats;
pub mod webhook;

pub use controller::{
    Action, Cause, Controller, NotAllowed, ReasonKind, RollbackReason, Stage, State, TickInputs,
    Transition,
};
pub use judge::{GateName, GateResult, GateVerdict, Judge, Judgement};
pub use route::{ReplicaFigures, RolloutStatus, RouteRollout};
pub use stats::{Observation, Role, RolloutStats, StepSummary, VersionSnapshot, WindowSnapshot};

/// A v1 → v2 rollout for unit tests, judged by the error-rate gate alone
/// at 95 %; each test module passes the numbers its assertions are about.
#[cfg(test)]
pub(crate) fn test_config(
    steps_bps: &[u16],
    interval: std::time::Duration,
    min_requests: u64,
    error_rate_margin: f64,
    rollback: Option<crate::config::RollbackConfig>,
) -> crate::config::RolloutConfig {
    crate::config::RolloutConfig {
        baseline: "v1".into(),
        canary: "v2".into(),
        shadow_first: None,
        steps: steps_bps
            .iter()
            .filter_map(|b| crate::config::WeightBps::new(*b))
            .collect(),
        interval,
        min_requests,
        gates: crate::config::GatesConfig {
            error_rate_margin: Some(error_rate_margin),
            max_error_rate: None,
            latency_p95_ratio: None,
            max_latency_p95: None,
            max_cost_per_request: None,
            outcome_margin: None,
            confidence: 0.95,
        },
        rollback,
    }
}
