//! The judge: is the canary, on this step, shown not worse than the
//! baseline? Each gate of `[routes.rollout.gates]` answers Pass, Fail or
//! Inconclusive with its numbers; `docs/judge.md` explains the method.
//!
//! # Anytime validity
//!
//! The controller looks every second, so every bound here is a *confidence
//! sequence*: a sequence of intervals that holds at every sample size at
//! once with probability ≥ 1 − α (Ville's inequality on a nonnegative
//! martingale), so peeking as often as we like costs nothing.
//!
//! * Proportions (failure rate, task success, and the share of requests
//!   slower than a latency): Robbins' conjugate-mixture confidence sequence
//!   for a Bernoulli mean with a Beta(½, ½) mixing prior (Robbins 1970;
//!   Howard, Ramdas, McAuliffe, Sekhon 2021, "Time-uniform, nonparametric,
//!   nonasymptotic confidence sequences", Ann. Statist. 49(2), §3). It is
//!   exact for Bernoulli data and adapts to the variance: at a 2 % failure
//!   rate it is several times narrower than a bound for [0, 1] variables.
//! * A difference of two rates: the two versions' sequences are
//!   independent and each holds uniformly in its own sample size, so
//!   `[L_c − U_b, U_c − L_b]` holds with probability ≥ 1 − α when each
//!   sequence is at α/2, whatever the (outcome-independent) traffic split.
//! * Quantiles (p95): the count of samples at or below the true p95 is
//!   Binomial(n, 0.95); a confidence sequence on that count gives ranks
//!   whose order statistics bound the p95 at every n (Howard & Ramdas 2022,
//!   "Sequential estimation of quantiles with applications to A/B-testing
//!   and best-arm identification", Bernoulli 28(3)). Read from histogram
//!   buckets, the lower bound takes the bucket's lower edge and the upper
//!   bound its upper edge, so bucketing only widens them.
//! * Mean cost: costs are unbounded, so no exact sequence exists without a
//!   bound on them; we use the asymptotic confidence sequence of
//!   Waudby-Smith, Arnold, Wu, McAuliffe, Ramdas (2024), "Time-uniform
//!   central limit theory and asymptotic confidence sequences", Ann.
//!   Statist., judged only from `min_requests` cost samples on.
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

use std::time::Duration;

use serde::Serialize;

use crate::config::GatesConfig;
use crate::rollout::stats::{HistogramSnapshot, VersionSnapshot, bucket_bounds};

/// What one gate says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Verdict {
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
        [
            GateName::ErrorRateMargin,
            GateName::MaxErrorRate,
            GateName::OutcomeMargin,
            GateName::LatencyP95Ratio,
            GateName::MaxLatencyP95,
            GateName::MaxCostPerRequest,
        ]
        .into_iter()
        .find(|g| g.as_str() == s)
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
    pub verdict: Verdict,
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
    pub fn verdict(&self) -> Verdict {
        if self.gates.iter().any(|g| g.verdict == Verdict::Fail) {
            Verdict::Fail
        } else if self
            .gates
            .iter()
            .all(|g| matches!(g.verdict, Verdict::Pass | Verdict::Skipped))
        {
            Verdict::Pass
        } else {
            Verdict::Inconclusive
        }
    }

    pub fn first_failure(&self) -> Option<&GateResult> {
        self.gates.iter().find(|g| g.verdict == Verdict::Fail)
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
                        verdict: Verdict::Skipped,
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
            verdict: Verdict::Inconclusive,
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

fn decide(fail: bool, pass: bool) -> Verdict {
    if fail {
        Verdict::Fail
    } else if pass {
        Verdict::Pass
    } else {
        Verdict::Inconclusive
    }
}

fn finite(x: f64) -> Option<f64> {
    x.is_finite().then_some(x)
}

/// ln Γ(x) for x > 0 (Lanczos, g = 7, 9 terms; relative error ~1e-15).
pub fn ln_gamma(x: f64) -> f64 {
    const G: f64 = 7.0;
    const C: [f64; 9] = [
        0.999_999_999_999_809_9,
        676.520_368_121_885_1,
        -1_259.139_216_722_402_8,
        771.323_428_777_653_1,
        -176.615_029_162_140_6,
        12.507_343_278_686_905,
        -0.138_571_095_265_720_12,
        9.984_369_578_019_572e-6,
        1.505_632_735_149_311_6e-7,
    ];
    if x < 0.5 {
        // Reflection: Γ(x)Γ(1−x) = π / sin(πx).
        let pi = std::f64::consts::PI;
        return (pi / (pi * x).sin()).ln() - ln_gamma(1.0 - x);
    }
    let x = x - 1.0;
    let mut a = C[0];
    let t = x + G + 0.5;
    for (i, c) in C.iter().enumerate().skip(1) {
        a += c / (x + i as f64);
    }
    0.5 * (2.0 * std::f64::consts::PI).ln() + (x + 0.5) * t.ln() - t + a.ln()
}

fn ln_beta(a: f64, b: f64) -> f64 {
    ln_gamma(a) + ln_gamma(b) - ln_gamma(a + b)
}

/// The Beta(½, ½) mixing prior: Jeffreys', symmetric and heavy at the ends,
/// so it stays tight for rates near 0 (failures) and near 1 (p95 counts).
const PRIOR_A: f64 = 0.5;
const PRIOR_B: f64 = 0.5;

/// ln of the prior-mixed likelihood ratio of `k` events in `n` Bernoulli
/// trials against the point hypothesis `p`, without its `p`-free part
/// `ln B(a+k, b+n−k) − ln B(a, b)`, which the caller adds once.
fn ln_lr_p_part(n: u64, k: u64, p: f64) -> f64 {
    let k = k as f64;
    let n = n as f64;
    -(k * p.ln() + (n - k) * (1.0 - p).ln())
}

/// A two-sided confidence sequence for a Bernoulli mean after `k` events in
/// `n` trials: the set of `p` whose mixture martingale is below 1/α. With
/// probability ≥ 1 − α it contains the true `p` at every `n` at once.
pub fn proportion_cs(n: u64, k: u64, alpha: f64) -> (f64, f64) {
    if n == 0 {
        return (0.0, 1.0);
    }
    let k = k.min(n);
    let threshold = (1.0 / alpha).ln();
    let constant =
        ln_beta(PRIOR_A + k as f64, PRIOR_B + (n - k) as f64) - ln_beta(PRIOR_A, PRIOR_B);
    let inside = |p: f64| constant + ln_lr_p_part(n, k, p) < threshold;
    let mle = k as f64 / n as f64;
    // The statistic is convex in p with its minimum (≤ 0) at the MLE, so
    // each side is found by bisection. 50 halvings: below 1e-15.
    let upper = if k == n {
        1.0
    } else {
        let (mut lo, mut hi) = (mle, 1.0);
        for _ in 0..50 {
            let mid = 0.5 * (lo + hi);
            if inside(mid) {
                lo = mid;
            } else {
                hi = mid;
            }
        }
        hi
    };
    let lower = if k == 0 {
        0.0
    } else {
        let (mut lo, mut hi) = (0.0, mle);
        for _ in 0..50 {
            let mid = 0.5 * (lo + hi);
            if inside(mid) {
                hi = mid;
            } else {
                lo = mid;
            }
        }
        lo
    };
    (lower, upper)
}

/// The range of event counts `[k_lo, k_hi]` in `n` trials that the
/// confidence sequence at `alpha` does not reject for rate `p`.
fn count_range(n: u64, p: f64, alpha: f64) -> (u64, u64) {
    let threshold = (1.0 / alpha).ln();
    let stat = |k: u64| {
        ln_beta(PRIOR_A + k as f64, PRIOR_B + (n - k) as f64) - ln_beta(PRIOR_A, PRIOR_B)
            + ln_lr_p_part(n, k, p)
    };
    let centre = ((p * n as f64).round() as u64).min(n);
    if stat(centre) >= threshold {
        return (centre, centre);
    }
    // Convex in k: bisect each side for the last count inside.
    let k_lo = if stat(0) < threshold {
        0
    } else {
        let (mut out, mut inn) = (0u64, centre);
        while inn - out > 1 {
            let mid = out + (inn - out) / 2;
            if stat(mid) < threshold {
                inn = mid;
            } else {
                out = mid;
            }
        }
        inn
    };
    let k_hi = if stat(n) < threshold {
        n
    } else {
        let (mut inn, mut out) = (centre, n);
        while out - inn > 1 {
            let mid = inn + (out - inn) / 2;
            if stat(mid) < threshold {
                inn = mid;
            } else {
                out = mid;
            }
        }
        inn
    };
    (k_lo, k_hi)
}

/// A confidence sequence for quantile `q` of the latencies in `hist`, in
/// seconds: `(0, ∞)` until there is data. See the module doc.
pub fn quantile_cs(hist: &HistogramSnapshot, q: f64, alpha: f64) -> (f64, f64) {
    let n = hist.total();
    if n == 0 {
        return (0.0, f64::INFINITY);
    }
    let (k_lo, k_hi) = count_range(n, q, alpha);
    // At least k_lo samples are ≤ the true quantile: the k_lo-th smallest
    // is a lower bound. At most k_hi are: the (k_hi+1)-th is an upper bound.
    let lower = hist
        .bucket_of_rank(k_lo)
        .map_or(0.0, |b| bucket_bounds(b).0);
    let upper = hist
        .bucket_of_rank(k_hi + 1)
        .map_or(f64::INFINITY, |b| bucket_bounds(b).1);
    (lower, upper)
}

/// The radius of the two-sided asymptotic (Gaussian-mixture) confidence
/// sequence for a mean after `n` samples with standard deviation `sd`,
/// tuned to be tightest near `t_opt` samples (Waudby-Smith et al. 2024,
/// Thm 2.2 with the ρ of Howard et al. 2021, eq. 3.8).
pub fn asymptotic_cs_radius(n: u64, sd: f64, alpha: f64, t_opt: f64) -> f64 {
    if n == 0 {
        return f64::INFINITY;
    }
    let l = -2.0 * alpha.ln();
    let rho2 = (l + (l + 1.0).ln()) / t_opt.max(1.0);
    let t = n as f64;
    let a = t * rho2 + 1.0;
    sd * ((2.0 * a / (t * t * rho2)) * (a.sqrt() / alpha).ln()).sqrt()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rollout::stats::{LATENCY_BUCKETS, bucket_of};

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

    fn hist(values_ms: impl IntoIterator<Item = (u64, u64)>) -> HistogramSnapshot {
        let mut counts = vec![0; LATENCY_BUCKETS];
        for (ms, n) in values_ms {
            counts[bucket_of(Duration::from_millis(ms))] += n;
        }
        HistogramSnapshot { counts }
    }

    #[test]
    fn ln_gamma_matches_known_values() {
        assert!((ln_gamma(1.0)).abs() < 1e-12);
        assert!((ln_gamma(0.5) - std::f64::consts::PI.sqrt().ln()).abs() < 1e-12);
        assert!((ln_gamma(10.0) - 362_880f64.ln()).abs() < 1e-10);
        // Stirling territory.
        let x = 1e6f64;
        let stirling = (x - 0.5) * x.ln() - x + 0.5 * (2.0 * std::f64::consts::PI).ln();
        assert!((ln_gamma(x) - stirling).abs() < 1e-6);
    }

    #[test]
    fn proportion_cs_contains_the_estimate_and_shrinks() {
        let (l0, u0) = proportion_cs(0, 0, 0.05);
        assert_eq!((l0, u0), (0.0, 1.0));
        let (l1, u1) = proportion_cs(1_000, 20, 0.05);
        let (l2, u2) = proportion_cs(100_000, 2_000, 0.05);
        assert!(l1 < 0.02 && 0.02 < u1, "{l1} {u1}");
        assert!(l2 < 0.02 && 0.02 < u2, "{l2} {u2}");
        assert!(u2 - l2 < (u1 - l1) / 5.0);
        // A smaller alpha is wider.
        let (l3, u3) = proportion_cs(1_000, 20, 0.001);
        assert!(l3 < l1 && u3 > u1);
        // Variance-adaptive: far narrower at 2 % than at 50 %.
        let (lh, uh) = proportion_cs(1_000, 500, 0.05);
        assert!(uh - lh > 2.5 * (u1 - l1));
        assert_eq!(proportion_cs(50, 0, 0.05).0, 0.0);
        assert_eq!(proportion_cs(50, 50, 0.05).1, 1.0);
    }

    /// The sequence must hold at every n at once: simulate many paths of
    /// Bernoulli(0.02) and count paths where any look escapes.
    #[test]
    fn proportion_cs_is_time_uniform() {
        use rand::{RngExt, SeedableRng};
        let mut rng = rand::rngs::SmallRng::seed_from_u64(7);
        let alpha = 0.1;
        let paths = 300;
        let mut escaped = 0;
        for _ in 0..paths {
            let mut k = 0;
            for n in 1..=2_000u64 {
                k += u64::from(rng.random_bool(0.02));
                // Look at every 10th sample (every one is slow in debug).
                if n % 10 == 0 {
                    let (l, u) = proportion_cs(n, k, alpha);
                    if !(l <= 0.02 && 0.02 <= u) {
                        escaped += 1;
                        break;
                    }
                }
            }
        }
        assert!(
            (escaped as f64) / (paths as f64) <= alpha,
            "{escaped}/{paths} paths escaped"
        );
    }

    #[test]
    fn count_range_brackets_the_mean() {
        let (lo, hi) = count_range(10_000, 0.95, 0.05);
        assert!(lo < 9_500 && 9_500 < hi);
        assert!(hi <= 10_000);
        let (lo, hi) = count_range(3, 0.95, 0.05);
        assert!(lo <= 3 && hi == 3);
    }

    #[test]
    fn quantile_cs_brackets_p95() {
        // 1..=1000 ms uniformly, 10 each: p95 ≈ 950 ms.
        let h = hist((1..=1000).map(|ms| (ms, 10)));
        let (l, u) = quantile_cs(&h, 0.95, 0.05);
        assert!(l < 0.95 && 0.95 < u, "{l} {u}");
        assert!(l > 0.85 && u < 1.1, "too wide: {l} {u}");
        let (l, u) = quantile_cs(&HistogramSnapshot::default(), 0.95, 0.05);
        assert_eq!((l, u), (0.0, f64::INFINITY));
    }

    #[test]
    fn equal_versions_with_little_traffic_are_inconclusive() {
        let judge = Judge::new(&gates(), 5, 200);
        let j = judge.judge(&version(100, 2), &version(20, 0), true);
        assert_eq!(j.verdict(), Verdict::Inconclusive);
        assert_eq!(j.gates.len(), 2);
    }

    #[test]
    fn equal_versions_with_much_traffic_pass() {
        let judge = Judge::new(&gates(), 5, 200);
        let j = judge.judge(&version(200_000, 4_000), &version(20_000, 400), true);
        assert_eq!(j.verdict(), Verdict::Pass, "{j:?}");
    }

    #[test]
    fn a_much_worse_canary_fails_both_error_gates() {
        let judge = Judge::new(&gates(), 5, 200);
        let j = judge.judge(&version(50_000, 1_000), &version(1_000, 120), true);
        assert_eq!(j.verdict(), Verdict::Fail);
        assert!(j.gates.iter().all(|g| g.verdict == Verdict::Fail), "{j:?}");
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
        assert_eq!(outcome.map(|r| r.verdict), Some(Verdict::Skipped));
        // Both sides: judged; a canary that fails far more tasks fails.
        b.outcome_success = 9_000;
        b.outcome_failure = 1_000;
        c.outcome_success = 600;
        c.outcome_failure = 400;
        let j = judge.judge(&b, &c, true);
        let outcome = j.gates.iter().find(|r| r.gate == GateName::OutcomeMargin);
        assert_eq!(outcome.map(|r| r.verdict), Some(Verdict::Fail), "{j:?}");
        // While shadowing the outcome gate does not apply.
        let j = judge.judge(&b, &c, false);
        let outcome = j.gates.iter().find(|r| r.gate == GateName::OutcomeMargin);
        assert_eq!(outcome.map(|r| r.verdict), Some(Verdict::Skipped));
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
        assert_eq!(judge.judge(&base, &same, true).verdict(), Verdict::Pass);
        let j = judge.judge(&base, &slow, true);
        assert_eq!(
            j.first_failure().map(|r| r.gate),
            Some(GateName::LatencyP95Ratio)
        );
        let ceiling = j.gates.iter().find(|r| r.gate == GateName::MaxLatencyP95);
        assert_eq!(ceiling.map(|r| r.verdict), Some(Verdict::Pass));
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
            Verdict::Inconclusive
        );
        assert_eq!(
            judge.judge(&b, &costly(1_000, 0.2), true).verdict(),
            Verdict::Fail
        );
        assert_eq!(
            judge.judge(&b, &costly(1_000, 0.02), true).verdict(),
            Verdict::Pass
        );
        assert_eq!(
            judge.judge(&b, &costly(1_000, 0.049), true).verdict(),
            Verdict::Inconclusive
        );
    }
}
