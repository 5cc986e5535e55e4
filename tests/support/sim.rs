//! A simulation harness: synthetic traffic through [`RolloutStats`], the
//! judge and the [`Controller`] on a manual clock, one tick per simulated
//! second, no real sleeping. The tests in `tests/rollout_sim.rs` and the
//! plot of `examples/judge_plot.rs` include it (`#[path]`): it is test
//! support, and the library does not ship it.
//!
//! Each tick, `requests_per_tick` requests arrive; each goes to the canary
//! with the controller's current weight (while shadowing, every request is
//! also mirrored to the canary). Per version, the tick's failures, latency
//! histogram, costs and task outcomes are drawn from the version's [`Arm`]
//! as binomial / multinomial counts and recorded in bulk, which is exactly
//! what recording the requests one by one would produce, at a fraction of
//! the cost.

use std::sync::Arc;
use std::time::Duration;

use rand::rngs::SmallRng;
use rand::{RngExt, SeedableRng};

use cutover::clock::{Clock, ManualClock};
use cutover::config::RolloutConfig;
use cutover::rollout::controller::{Controller, ReasonKind, State, TickInputs};
use cutover::rollout::judge::Judgement;
use cutover::rollout::stats::{LATENCY_BUCKETS, Observation, Role, RolloutStats, bucket_bounds};

/// How one version behaves.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Arm {
    /// Share of requests whose own attempt fails (no response, no latency).
    pub failure_rate: f64,
    /// Log-normal latency of the answered requests: its median and the
    /// standard deviation of its log.
    pub latency_median: Duration,
    pub latency_sigma: f64,
    /// Mean USD per answered request; each costs 0.5× or 1.5× of it.
    pub cost_usd: f64,
    /// Share of answered requests whose task succeeds; `None`: no outcomes.
    pub task_success: Option<f64>,
}

impl Arm {
    /// 2 % failures, 1 s median latency (p95 ≈ 2.3 s), $0.01, 80 % success.
    pub fn typical() -> Arm {
        Arm {
            failure_rate: 0.02,
            latency_median: Duration::from_secs(1),
            latency_sigma: 0.5,
            cost_usd: 0.01,
            task_success: Some(0.8),
        }
    }

    /// The probability of each latency bucket.
    fn bucket_probabilities(&self) -> Vec<f64> {
        let mu = self.latency_median.as_secs_f64().max(1e-9).ln();
        let sigma = self.latency_sigma.max(1e-9);
        let cdf = |x: f64| {
            if x <= 0.0 {
                0.0
            } else if !x.is_finite() {
                1.0
            } else {
                normal_cdf((x.ln() - mu) / sigma)
            }
        };
        (0..LATENCY_BUCKETS)
            .map(|i| {
                let (lo, hi) = bucket_bounds(i);
                (cdf(hi) - cdf(lo)).max(0.0)
            })
            .collect()
    }
}

/// One simulated rollout's setting.
#[derive(Clone, Debug)]
pub struct Scenario {
    pub rollout: RolloutConfig,
    pub baseline: Arm,
    pub canary: Arm,
    pub requests_per_tick: u64,
    /// Stop undecided after this many ticks.
    pub max_ticks: u64,
    /// The canary's breaker reads open from this tick on.
    pub breaker_opens_at: Option<u64>,
}

/// How a simulated rollout ended.
#[derive(Clone, Debug)]
pub struct RunResult {
    /// `Promoted`, `RolledBack`, or the state it was in at `max_ticks`.
    pub state: State,
    pub ticks: u64,
    /// Canary requests (live or mirrored) from the start to the end.
    pub canary_requests: u64,
    /// Canary requests on the stage where it ended.
    pub canary_requests_on_stage: u64,
    /// The judgement of the last tick of the last judged stage.
    pub last_judgement: Option<Judgement>,
    /// The first transition and the canary requests seen until it: the
    /// time to the judge's first decision.
    pub first_decision: Option<(u64, State)>,
    /// States entered, in order (without the first).
    pub path: Vec<State>,
}

impl RunResult {
    pub fn rolled_back(&self) -> Option<ReasonKind> {
        match &self.state {
            State::RolledBack { reason } => Some(reason.kind),
            _ => None,
        }
    }
}

/// Per-arm tick sampler with its precomputed latency distribution.
struct ArmSampler {
    arm: Arm,
    buckets: Vec<(usize, f64)>,
}

impl ArmSampler {
    fn new(arm: Arm) -> ArmSampler {
        let buckets = arm
            .bucket_probabilities()
            .into_iter()
            .enumerate()
            .filter(|(_, p)| *p > 1e-12)
            .collect();
        ArmSampler { arm, buckets }
    }

    fn record(&self, rng: &mut SmallRng, stats: &RolloutStats, role: Role, n: u64) {
        if n == 0 {
            return;
        }
        let failed = binomial(rng, n, self.arm.failure_rate);
        stats.record_n(
            role,
            &Observation {
                failed: true,
                latency: None,
                cost_usd: None,
            },
            failed,
        );
        let answered = n - failed;
        let mut left = answered;
        let mut mass = 1.0f64;
        for &(bucket, p) in &self.buckets {
            if left == 0 {
                break;
            }
            let x = binomial(rng, left, (p / mass).min(1.0));
            left -= x;
            mass -= p;
            if x == 0 {
                continue;
            }
            let (lo, _) = bucket_bounds(bucket);
            let latency = Some(Duration::from_secs_f64(lo.max(0.0005)));
            let cheap = binomial(rng, x, 0.5);
            for (count, factor) in [(cheap, 0.5), (x - cheap, 1.5)] {
                stats.record_n(
                    role,
                    &Observation {
                        failed: false,
                        latency,
                        cost_usd: Some(self.arm.cost_usd * factor),
                    },
                    count,
                );
            }
            if mass <= 0.0 {
                break;
            }
        }
        if let Some(s) = self.arm.task_success {
            let ok = binomial(rng, answered, s);
            stats.record_outcomes(role, ok, answered - ok);
        }
    }
}

/// Runs one rollout to its end (or `max_ticks`).
pub fn run(scenario: &Scenario, seed: u64) -> RunResult {
    let mut rng = SmallRng::seed_from_u64(seed);
    let clock = ManualClock::new();
    let window = scenario
        .rollout
        .rollback
        .as_ref()
        .map_or(Duration::from_secs(60), |r| r.window);
    let stats = RolloutStats::new(window, Arc::new(clock.clone()));
    let mut controller = Controller::new(&scenario.rollout, clock.now());
    let baseline = ArmSampler::new(scenario.baseline);
    let canary = ArmSampler::new(scenario.canary);
    let mut result = RunResult {
        state: controller.state().clone(),
        ticks: 0,
        canary_requests: 0,
        canary_requests_on_stage: 0,
        last_judgement: None,
        first_decision: None,
        path: Vec::new(),
    };
    for tick in 1..=scenario.max_ticks {
        let n = scenario.requests_per_tick;
        let (to_baseline, to_canary) = if controller.mirrored() {
            (n, n)
        } else {
            let c = binomial(&mut rng, n, controller.canary_weight().percent() / 100.0);
            (n - c, c)
        };
        baseline.record(&mut rng, &stats, Role::Baseline, to_baseline);
        canary.record(&mut rng, &stats, Role::Canary, to_canary);
        result.canary_requests += to_canary;
        clock.advance(Duration::from_secs(1));
        let (b, c) = stats.step_snapshot();
        let w = stats.window_snapshot();
        let inputs = TickInputs {
            baseline: &b,
            canary: &c,
            window: &w,
            canary_breaker_open: scenario.breaker_opens_at.is_some_and(|t| tick >= t),
        };
        result.ticks = tick;
        result.canary_requests_on_stage = c.requests;
        let transition = controller.tick(clock.now(), &inputs);
        if let Some(j) = controller.judgement() {
            result.last_judgement = Some(j.clone());
        }
        if let Some(t) = transition {
            if t.stage_changed {
                stats.reset_step();
            }
            if result.first_decision.is_none() {
                result.first_decision = Some((result.canary_requests, t.to.clone()));
            }
            result.path.push(t.to.clone());
            if matches!(t.to, State::Promoted | State::RolledBack { .. }) {
                break;
            }
        }
    }
    result.state = controller.state().clone();
    result
}

/// A Binomial(n, p) draw: inversion by geometric gaps when the mean is
/// small (exact), a rounded normal when it is large (error far below what
/// the tests measure).
pub fn binomial(rng: &mut SmallRng, n: u64, p: f64) -> u64 {
    if n == 0 || p <= 0.0 || p.is_nan() {
        return 0;
    }
    if p >= 1.0 {
        return n;
    }
    if p > 0.5 {
        return n - binomial(rng, n, 1.0 - p);
    }
    let mean = n as f64 * p;
    if mean < 40.0 {
        let log_q = (1.0 - p).ln();
        let mut count = 0u64;
        let mut position = 0u64;
        loop {
            let u: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
            let gap = (u.ln() / log_q).floor() as u64 + 1;
            position = position.saturating_add(gap);
            if position > n {
                return count;
            }
            count += 1;
        }
    }
    let sd = (mean * (1.0 - p)).sqrt();
    let u1: f64 = rng.random::<f64>().max(f64::MIN_POSITIVE);
    let u2: f64 = rng.random::<f64>();
    let z = (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos();
    (mean + sd * z).round().clamp(0.0, n as f64) as u64
}

/// Φ(z), from erfc (Abramowitz & Stegun 7.1.26, |error| < 1.5e-7).
fn normal_cdf(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erfc = poly * (-x * x).exp();
    if z >= 0.0 {
        1.0 - 0.5 * erfc
    } else {
        0.5 * erfc
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binomial_has_the_right_mean() {
        let mut rng = SmallRng::seed_from_u64(1);
        for (n, p) in [(100u64, 0.02), (10_000, 0.3), (50, 0.9), (1_000_000, 0.01)] {
            let draws = 2_000;
            let sum: u64 = (0..draws).map(|_| binomial(&mut rng, n, p)).sum();
            let mean = sum as f64 / draws as f64;
            let expect = n as f64 * p;
            let se = (expect * (1.0 - p) / draws as f64).sqrt();
            assert!(
                (mean - expect).abs() < 5.0 * se + 0.01,
                "n {n} p {p}: {mean} vs {expect}"
            );
        }
    }

    #[test]
    fn latency_buckets_sum_to_one_around_the_median() {
        let probs = Arm::typical().bucket_probabilities();
        let total: f64 = probs.iter().sum();
        assert!((total - 1.0).abs() < 1e-6);
        assert!((normal_cdf(1.644_853_6) - 0.95).abs() < 1e-6);
    }
}
