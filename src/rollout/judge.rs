//! The judge: is the canary, on this step, shown not worse than the
//! baseline? Each gate of `[routes.rollout.gates]` answers Pass, Fail or
//! Inconclusive with its numbers; `docs/judge.md` explains the method.
//!
//! Every bound comes from an anytime-valid confidence sequence
//! ([`cs`]), so the controller may look every second. This module owns the
//! gates: which bound each compares with which threshold, and the error
//! budget they share.
//!
//! # The error budget
//!
//! Passing a step is the dangerous direction for a bad canary, failing it is
//! the dangerous direction for a good one, and they compose differently:
//! * a canary is promoted only if it passes *every* step, so a canary that
//!   really is worse passes the first step with probability ≤ α, and is
//!   promoted with probability ≤ α: pass-side bounds use α per gate;
//! * a canary is rolled back if *any* gate fails on *any* step, so the
//!   fail-side bounds split α over every (stage, gate) pair (Bonferroni):
//!   α_fail = α / (stages × gates). An A/A rollout then rolls back through
//!   the gates with probability ≤ α over the whole rollout, not per look,
//!   not per step.

pub mod cs;

use std::time::Duration;

use serde::Serialize;

use crate::config::GatesConfig;
use crate::rollout::stats::{HistogramSnapshot, VersionSnapshot};

use cs::{asymptotic_cs_radius, proportion_cs, quantile_cs};

/// What one gate says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GateVerdict {
    /// Shown within the threshold at `confidence`.
    Pass,
    /// Shown beyond the threshold: the rollout rolls back.
    Fail,
    /// Not shown either way yet: the step waits. Never a pass.
    Inconclusive,
    /// Does not apply (no outcomes on one side, or the outcome gate while
    /// shadowing).
    Skipped,
}

/// The gates, named by their config keys.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GateName {
    ErrorRateMargin,
    MaxErrorRate,
    OutcomeMargin,
    LatencyP95Ratio,
    MaxLatencyP95,
    MaxCostPerRequest,
}

impl GateName {
    /// Every gate, in the order of the config's `gates` keys.
    pub const ALL: [GateName; 6] = [
        GateName::ErrorRateMargin,
        GateName::MaxErrorRate,
        GateName::OutcomeMargin,
        GateName::LatencyP95Ratio,
        GateName::MaxLatencyP95,
        GateName::MaxCostPerRequest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            GateName::ErrorRateMargin => "error_rate_margin",
            GateName::MaxErrorRate => "max_error_rate",
            GateName::OutcomeMargin => "outcome_margin",
            GateName::LatencyP95Ratio => "latency_p95_ratio",
            GateName::MaxLatencyP95 => "max_latency_p95",
            GateName::MaxCostPerRequest => "max_cost_per_request",
        }
    }

    pub fn parse(s: &str) -> Option<GateName> {
        GateName::ALL.into_iter().find(|g| g.as_str() == s)
    }
}

/// One gate's verdict with the numbers behind it, for `/status`.
///
/// `lower` is the fail-side bound (at the fail-side error budget) and
/// `upper` the pass-side bound: Fail when `lower > threshold`, Pass when
/// `upper < threshold` (≤ for the latency and cost ceilings).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GateResult {
    pub gate: GateName,
    pub verdict: GateVerdict,
    /// The point estimate: canary − baseline failure rate; baseline −
    /// canary success rate; canary failure rate; canary p95 / baseline p95;
    /// canary p95 in seconds; canary mean cost in USD.
    pub estimate: Option<f64>,
    pub lower: Option<f64>,
    pub upper: Option<f64>,
    pub threshold: f64,
    /// Canary samples the gate used (requests, outcomes, timed responses or
    /// costed requests).
    pub n_canary: u64,
    /// Baseline samples, for two-sample gates.
    pub n_baseline: Option<u64>,
}

/// Every configured gate's result for one step, at one tick.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Judgement {
    pub gates: Vec<GateResult>,
}

impl Judgement {
    /// Fail if any gate fails; Pass if every gate passes or is skipped;
    /// else Inconclusive.
    pub fn verdict(&self) -> GateVerdict {
        if self.gates.iter().any(|g| g.verdict == GateVerdict::Fail) {
            GateVerdict::Fail
        } else if self
            .gates
            .iter()
            .all(|g| matches!(g.verdict, GateVerdict::Pass | GateVerdict::Skipped))
        {
            GateVerdict::Pass
        } else {
            GateVerdict::Inconclusive
        }
    }

    pub fn first_failure(&self) -> Option<&GateResult> {
        self.gates.iter().find(|g| g.verdict == GateVerdict::Fail)
    }
}

/// The gates of one rollout with their error budgets.
#[derive(Clone, Debug)]
pub struct Judge {
    gates: GatesConfig,
    /// Pass-side error per gate.
    alpha_pass: f64,
    /// Fail-side error per gate and stage.
    alpha_fail: f64,
    /// Cost samples needed before the (asymptotic) cost gate decides.
    min_cost_samples: u64,
}

impl Judge {
    /// `stages`: how many stages the rollout judges (the steps below 100 %,
    /// plus one for `shadow_first`); the fail-side budget is split over them.
    pub fn new(gates: &GatesConfig, stages: usize, min_requests: u64) -> Judge {
        let alpha = (1.0 - gates.confidence).clamp(1e-9, 0.5);
        let configured = [
            gates.error_rate_margin.is_some(),
            gates.max_error_rate.is_some(),
            gates.outcome_margin.is_some(),
            gates.latency_p95_ratio.is_some(),
            gates.max_latency_p95.is_some(),
            gates.max_cost_per_request.is_some(),
        ]
        .into_iter()
        .filter(|c| *c)
        .count();
        let looks = (stages.max(1) * configured.max(1)) as f64;
        Judge {
            gates: gates.clone(),
            alpha_pass: alpha,
            alpha_fail: alpha / looks,
            min_cost_samples: min_requests.max(30),
        }
    }

    pub fn alpha_pass(&self) -> f64 {
        self.alpha_pass
    }

    pub fn alpha_fail(&self) -> f64 {
        self.alpha_fail
    }

    /// Judges one step. `with_outcome` is false while shadowing (a shadow's
    /// response never reaches the client, so it has no task outcome).
    pub fn judge(
        &self,
        baseline: &VersionSnapshot,
        canary: &VersionSnapshot,
        with_outcome: bool,
    ) -> Judgement {
        let mut gates = Vec::with_capacity(6);
        let g = &self.gates;
        if let Some(margin) = g.error_rate_margin {
            gates.push(self.non_inferiority(
                GateName::ErrorRateMargin,
                (canary.failures, canary.requests),
                (baseline.failures, baseline.requests),
                margin,
            ));
        }
        if let Some(max) = g.max_error_rate {
            gates.push(self.max_error_rate(canary, max));
        }
        if let Some(margin) = g.outcome_margin {
            gates.push(
                if !with_outcome || canary.outcomes() == 0 || baseline.outcomes() == 0 {
                    GateResult {
                        gate: GateName::OutcomeMargin,
                        verdict: GateVerdict::Skipped,
                        estimate: None,
                        lower: None,
                        upper: None,
                        threshold: margin,
                        n_canary: canary.outcomes(),
                        n_baseline: Some(baseline.outcomes()),
                    }
                } else {
                    // Worse = more *failed* tasks: the same test on failure counts.
                    self.non_inferiority(
                        GateName::OutcomeMargin,
                        (canary.outcome_failure, canary.outcomes()),
                        (baseline.outcome_failure, baseline.outcomes()),
                        margin,
                    )
                },
            );
        }
        if let Some(ratio) = g.latency_p95_ratio {
            gates.push(self.latency_ratio(&baseline.latency, &canary.latency, ratio));
        }
        if let Some(max) = g.max_latency_p95 {
            gates.push(self.max_latency(&canary.latency, max));
        }
        if let Some(max) = g.max_cost_per_request {
            gates.push(self.max_cost(canary, max));
        }
        Judgement { gates }
    }

    /// `p_canary − p_baseline < margin`, each rate from (events, n).
    fn non_inferiority(
        &self,
        gate: GateName,
        (kc, nc): (u64, u64),
        (kb, nb): (u64, u64),
        margin: f64,
    ) -> GateResult {
        let (_, uc) = proportion_cs(nc, kc, self.alpha_pass / 2.0);
        let (lb, _) = proportion_cs(nb, kb, self.alpha_pass / 2.0);
        let (lc, _) = proportion_cs(nc, kc, self.alpha_fail / 2.0);
        let (_, ub) = proportion_cs(nb, kb, self.alpha_fail / 2.0);
        let upper = uc - lb;
        let lower = lc - ub;
        GateResult {
            gate,
            verdict: decide(lower > margin, upper < margin),
            estimate: (nc > 0 && nb > 0).then(|| kc as f64 / nc as f64 - kb as f64 / nb as f64),
            lower: Some(lower),
            upper: Some(upper),
            threshold: margin,
            n_canary: nc,
            n_baseline: Some(nb),
        }
    }

    fn max_error_rate(&self, canary: &VersionSnapshot, max: f64) -> GateResult {
        let (_, upper) = proportion_cs(canary.requests, canary.failures, self.alpha_pass);
        let (lower, _) = proportion_cs(canary.requests, canary.failures, self.alpha_fail);
        GateResult {
            gate: GateName::MaxErrorRate,
            verdict: decide(lower > max, upper < max),
            estimate: canary.failure_rate(),
            lower: Some(lower),
            upper: Some(upper),
            threshold: max,
            n_canary: canary.requests,
            n_baseline: None,
        }
    }

    fn latency_ratio(
        &self,
        baseline: &HistogramSnapshot,
        canary: &HistogramSnapshot,
        ratio: f64,
    ) -> GateResult {
        // Two sequences per side (canary, baseline), each at half the budget.
        let (_, cu) = quantile_cs(canary, 0.95, self.alpha_pass / 2.0);
        let (bl, _) = quantile_cs(baseline, 0.95, self.alpha_pass / 2.0);
        let (cl, _) = quantile_cs(canary, 0.95, self.alpha_fail / 2.0);
        let (_, bu) = quantile_cs(baseline, 0.95, self.alpha_fail / 2.0);
        // A zero baseline lower bound (no data) makes the pass side infinite.
        let upper = if bl > 0.0 { cu / bl } else { f64::INFINITY };
        let lower = if bu.is_finite() && bu > 0.0 {
            cl / bu
        } else {
            0.0
        };
        let estimate = match (canary.quantile(0.95), baseline.quantile(0.95)) {
            (Some(c), Some(b)) if b > 0.0 => Some(c / b),
            _ => None,
        };
        GateResult {
            gate: GateName::LatencyP95Ratio,
            verdict: decide(lower > ratio, upper <= ratio),
            estimate,
            lower: Some(lower),
            upper: finite(upper),
            threshold: ratio,
            n_canary: canary.total(),
            n_baseline: Some(baseline.total()),
        }
    }

    fn max_latency(&self, canary: &HistogramSnapshot, max: Duration) -> GateResult {
        let max = max.as_secs_f64();
        let (_, upper) = quantile_cs(canary, 0.95, self.alpha_pass);
        let (lower, _) = quantile_cs(canary, 0.95, self.alpha_fail);
        GateResult {
            gate: GateName::MaxLatencyP95,
            verdict: decide(lower > max, upper <= max),
            estimate: canary.quantile(0.95),
            lower: Some(lower),
            upper: finite(upper),
            threshold: max,
            n_canary: canary.total(),
            n_baseline: None,
        }
    }

    fn max_cost(&self, canary: &VersionSnapshot, max: f64) -> GateResult {
        let n = canary.cost_n;
        let mean = canary.mean_cost();
        let mut result = GateResult {
            gate: GateName::MaxCostPerRequest,
            verdict: GateVerdict::Inconclusive,
            estimate: mean,
            lower: None,
            upper: None,
            threshold: max,
            n_canary: n,
            n_baseline: None,
        };
        let Some(mean) = mean else {
            return result;
        };
        if n < self.min_cost_samples {
            return result;
        }
        let var = (canary.cost_sq_sum_usd / n as f64 - mean * mean).max(0.0);
        let sd = var.sqrt();
        let t_opt = self.min_cost_samples as f64;
        let lower = mean - asymptotic_cs_radius(n, sd, self.alpha_fail, t_opt);
        let upper = mean + asymptotic_cs_radius(n, sd, self.alpha_pass, t_opt);
        result.lower = Some(lower);
        result.upper = Some(upper);
        result.verdict = decide(lower > max, upper <= max);
        result
    }
}

fn decide(fail: bool, pass: bool) -> GateVerdict {
    if fail {
        GateVerdict::Fail
    } else if pass {
        GateVerdict::Pass
    } else {
        GateVerdict::Inconclusive
    }
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

#[cfg(test)]
mod tests {
    use super::cs::tests::hist;
    use super::*;

    fn gates() -> GatesConfig {
        GatesConfig {
            error_rate_margin: Some(0.01),
            max_error_rate: Some(0.05),
            latency_p95_ratio: None,
            max_latency_p95: None,
            max_cost_per_request: None,
            outcome_margin: None,
            confidence: 0.95,
        }
    }

    fn version(requests: u64, failures: u64) -> VersionSnapshot {
        VersionSnapshot {
            requests,
            failures,
            ..VersionSnapshot::default()
        }
    }

    #[test]
    fn equal_versions_with_little_traffic_are_inconclusive() {
        let judge = Judge::new(&gates(), 5, 200);
        let j = judge.judge(&version(100, 2), &version(20, 0), true);
        assert_eq!(j.verdict(), GateVerdict::Inconclusive);
        assert_eq!(j.gates.len(), 2);
    }

    #[test]
    fn equal_versions_with_much_traffic_pass() {
        let judge = Judge::new(&gates(), 5, 200);
        let j = judge.judge(&version(200_000, 4_000), &version(20_000, 400), true);
        assert_eq!(j.verdict(), GateVerdict::Pass, "{j:?}");
    }

    #[test]
    fn a_much_worse_canary_fails_both_error_gates() {
        let judge = Judge::new(&gates(), 5, 200);
        let j = judge.judge(&version(50_000, 1_000), &version(1_000, 120), true);
        assert_eq!(j.verdict(), GateVerdict::Fail);
        assert!(
            j.gates.iter().all(|g| g.verdict == GateVerdict::Fail),
            "{j:?}"
        );
        assert_eq!(
            j.first_failure().map(|g| g.gate),
            Some(GateName::ErrorRateMargin)
        );
    }

    #[test]
    fn fail_side_budget_is_split_over_stages_and_gates() {
        let judge = Judge::new(&gates(), 5, 200);
        assert!((judge.alpha_pass() - 0.05).abs() < 1e-12);
        assert!((judge.alpha_fail() - 0.005).abs() < 1e-12);
    }

    #[test]
    fn outcome_gate_skipped_without_outcomes_on_both_sides() {
        let g = GatesConfig {
            outcome_margin: Some(0.05),
            ..gates()
        };
        let judge = Judge::new(&g, 1, 200);
        let mut b = version(10_000, 0);
        let mut c = version(10_000, 0);
        c.outcome_success = 100;
        let j = judge.judge(&b, &c, true);
        let outcome = j.gates.iter().find(|r| r.gate == GateName::OutcomeMargin);
        assert_eq!(outcome.map(|r| r.verdict), Some(GateVerdict::Skipped));
        // Both sides: judged; a canary that fails far more tasks fails.
        b.outcome_success = 9_000;
        b.outcome_failure = 1_000;
        c.outcome_success = 600;
        c.outcome_failure = 400;
        let j = judge.judge(&b, &c, true);
        let outcome = j.gates.iter().find(|r| r.gate == GateName::OutcomeMargin);
        assert_eq!(outcome.map(|r| r.verdict), Some(GateVerdict::Fail), "{j:?}");
        // While shadowing the outcome gate does not apply.
        let j = judge.judge(&b, &c, false);
        let outcome = j.gates.iter().find(|r| r.gate == GateName::OutcomeMargin);
        assert_eq!(outcome.map(|r| r.verdict), Some(GateVerdict::Skipped));
    }

    #[test]
    fn latency_gates() {
        let g = GatesConfig {
            error_rate_margin: None,
            max_error_rate: None,
            latency_p95_ratio: Some(1.25),
            max_latency_p95: Some(Duration::from_secs(20)),
            ..gates()
        };
        let judge = Judge::new(&g, 5, 200);
        let base = VersionSnapshot {
            latency: hist((1..=1000).map(|ms| (ms, 20))),
            ..VersionSnapshot::default()
        };
        let same = VersionSnapshot {
            latency: hist((1..=1000).map(|ms| (ms, 10))),
            ..VersionSnapshot::default()
        };
        let slow = VersionSnapshot {
            latency: hist((1..=1000).map(|ms| (2 * ms, 10))),
            ..VersionSnapshot::default()
        };
        assert_eq!(judge.judge(&base, &same, true).verdict(), GateVerdict::Pass);
        let j = judge.judge(&base, &slow, true);
        assert_eq!(
            j.first_failure().map(|r| r.gate),
            Some(GateName::LatencyP95Ratio)
        );
        let ceiling = j.gates.iter().find(|r| r.gate == GateName::MaxLatencyP95);
        assert_eq!(ceiling.map(|r| r.verdict), Some(GateVerdict::Pass));
    }

    #[test]
    fn cost_gate_waits_for_samples_then_decides() {
        let g = GatesConfig {
            error_rate_margin: None,
            max_error_rate: None,
            max_cost_per_request: Some(0.05),
            ..gates()
        };
        let judge = Judge::new(&g, 1, 200);
        let costly = |n: u64, mean: f64| VersionSnapshot {
            requests: n,
            cost_n: n,
            cost_sum_usd: mean * n as f64,
            // sd = mean / 2
            cost_sq_sum_usd: n as f64 * (mean * mean * 1.25),
            ..VersionSnapshot::default()
        };
        let b = VersionSnapshot::default();
        assert_eq!(
            judge.judge(&b, &costly(100, 0.2), true).verdict(),
            GateVerdict::Inconclusive
        );
        assert_eq!(
            judge.judge(&b, &costly(1_000, 0.2), true).verdict(),
            GateVerdict::Fail
        );
        assert_eq!(
            judge.judge(&b, &costly(1_000, 0.02), true).verdict(),
            GateVerdict::Pass
        );
        assert_eq!(
            judge.judge(&b, &costly(1_000, 0.049), true).verdict(),
            GateVerdict::Inconclusive
        );
    }
}
