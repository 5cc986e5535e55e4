//! The proof by simulation (issue 7): synthetic traffic through the rollout
//! stats, judge and controller on a manual clock. Every test is seeded, so a
//! failure reproduces; each prints its numbers (`cargo test --test
//! rollout_sim -- --nocapture`), which `docs/judge.md` quotes.

use std::time::Duration;

use cutover::config::{GatesConfig, RollbackConfig, RolloutConfig, ShadowFirstConfig, WeightBps};
use cutover::rollout::judge::{GateName, GateVerdict, Judge};
#[path = "support/sim.rs"]
mod sim;

use cutover::rollout::{ReasonKind, State, VersionSnapshot};
use sim::{Arm, RunResult, Scenario};

/// SPEC §2's example rollout, with a 10 s interval so that a rollout is a
/// few hundred simulated seconds.
fn rollout() -> RolloutConfig {
    RolloutConfig {
        baseline: "v1".into(),
        canary: "v2".into(),
        shadow_first: None,
        steps: [100u16, 500, 1_000, 2_500, 5_000, 10_000]
            .iter()
            .filter_map(|b| WeightBps::new(*b))
            .collect(),
        interval: Duration::from_secs(10),
        min_requests: 200,
        gates: GatesConfig {
            error_rate_margin: Some(0.01),
            max_error_rate: Some(0.05),
            latency_p95_ratio: Some(1.25),
            max_latency_p95: Some(Duration::from_secs(20)),
            max_cost_per_request: Some(0.05),
            outcome_margin: Some(0.05),
            confidence: 0.95,
        },
        rollback: Some(RollbackConfig {
            window: Duration::from_secs(60),
            min_requests: 20,
            error_rate: Some(0.25),
            latency_p99: Some(Duration::from_secs(60)),
            on_breaker_open: true,
            webhook: None,
        }),
    }
}

fn scenario(canary: Arm, requests_per_tick: u64) -> Scenario {
    Scenario {
        rollout: rollout(),
        baseline: Arm::typical(),
        canary,
        requests_per_tick,
        max_ticks: 20_000,
        breaker_opens_at: None,
    }
}

/// Runs `runs` seeded rollouts on two threads (CI has two cores).
fn run_many(s: &Scenario, runs: u64, seed: u64) -> Vec<RunResult> {
    let half = runs / 2;
    let (a, b) = std::thread::scope(|scope| {
        let first = scope.spawn(|| (0..half).map(|i| sim::run(s, seed + i)).collect::<Vec<_>>());
        let second = (half..runs)
            .map(|i| sim::run(s, seed + i))
            .collect::<Vec<_>>();
        (first.join().unwrap_or_default(), second)
    });
    a.into_iter().chain(b).collect()
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v.get(v.len() / 2).copied().unwrap_or(0)
}

/// A/A: canary = baseline (2 % failures, same latency, cost and task
/// success), confidence 0.95, every gate on, SPEC's six steps: at most 5 %
/// of rollouts may roll back.
#[test]
fn aa_rollouts_rarely_roll_back() {
    let s = scenario(Arm::typical(), 20_000);
    let runs = 500;
    let results = run_many(&s, runs, 1_000);
    assert_eq!(results.len() as u64, runs);
    let rolled_back: Vec<_> = results.iter().filter_map(RunResult::rolled_back).collect();
    let promoted = results
        .iter()
        .filter(|r| r.state == State::Promoted)
        .count();
    let share = rolled_back.len() as f64 / runs as f64;
    let ticks = median(results.iter().map(|r| r.ticks).collect());
    let canary = median(results.iter().map(|r| r.canary_requests).collect());
    println!(
        "A/A: {} of {runs} rolled back ({:.1} %), {promoted} promoted; median {ticks} s and {canary} canary requests to promotion; reasons {:?}",
        rolled_back.len(),
        share * 100.0,
        rolled_back
    );
    assert!(share <= 0.05, "A/A rollback share {share}");
    // And the judge is not merely stuck: equal canaries do get promoted.
    assert!(promoted as f64 >= 0.9 * runs as f64, "{promoted} promoted");
}

/// A/A at the edge, where the budget is spent in full: a zero margin (the
/// true difference sits exactly on it), one gate, one stage (so the gate
/// gets all of α = 0.05), and 1 000 looks over 100 000 requests per
/// version. The judge is fed the same counts as a naive fixed-n z-test
/// (95 %, one-sided) peeked at every look: the naive test rolls back a
/// large share of these identical canaries, the confidence sequence must
/// stay at ≤ 5 %.
#[test]
fn aa_at_a_zero_margin_stays_within_alpha_where_peeking_does_not() {
    use rand::SeedableRng;
    let gates = GatesConfig {
        error_rate_margin: Some(0.0),
        max_error_rate: None,
        latency_p95_ratio: None,
        max_latency_p95: None,
        max_cost_per_request: None,
        outcome_margin: None,
        confidence: 0.95,
    };
    let judge = Judge::new(&gates, 1, 200);
    let runs = 500;
    let (mut ours, mut naive) = (0, 0);
    for seed in 0..runs {
        let mut rng = rand::rngs::SmallRng::seed_from_u64(8_000 + seed);
        let mut b = VersionSnapshot::default();
        let mut c = VersionSnapshot::default();
        let (mut ours_failed, mut naive_failed) = (false, false);
        for _ in 0..1_000 {
            for v in [&mut b, &mut c] {
                v.requests += 100;
                v.failures += sim::binomial(&mut rng, 100, 0.02);
            }
            if !ours_failed && judge.judge(&b, &c, false).verdict() == GateVerdict::Fail {
                ours_failed = true;
            }
            let (pb, pc) = (
                b.failures as f64 / b.requests as f64,
                c.failures as f64 / c.requests as f64,
            );
            let se =
                (pb * (1.0 - pb) / b.requests as f64 + pc * (1.0 - pc) / c.requests as f64).sqrt();
            if se > 0.0 && (pc - pb) - 1.645 * se > 0.0 {
                naive_failed = true;
            }
        }
        ours += u64::from(ours_failed);
        naive += u64::from(naive_failed);
    }
    let share = ours as f64 / runs as f64;
    let naive_share = naive as f64 / runs as f64;
    println!(
        "A/A, zero margin, alpha 0.05, 1000 looks: confidence sequence {ours} of {runs} ({:.1} %), peeked z-test {naive} of {runs} ({:.1} %)",
        share * 100.0,
        naive_share * 100.0
    );
    assert!(share <= 0.05, "share {share}");
    assert!(
        naive_share > 0.15,
        "the naive test should show the peeking problem: {naive_share}"
    );
}

/// A canary at +10 percentage points of failures (12 % vs 2 %) is rolled
/// back; the median is within 300 canary requests.
#[test]
fn ten_points_more_failures_roll_back_fast() {
    let bad = Arm {
        failure_rate: 0.12,
        ..Arm::typical()
    };
    // 10 canary requests a second on step 0, so the count is fine-grained.
    let s = scenario(bad, 1_000);
    let runs = 101;
    let results = run_many(&s, runs, 2_000);
    let all_rolled_back = results.iter().all(|r| r.rolled_back().is_some());
    let requests = median(results.iter().map(|r| r.canary_requests).collect());
    let by_gate = results
        .iter()
        .filter(|r| matches!(r.rolled_back(), Some(ReasonKind::Gate(_))))
        .count();
    println!(
        "+10 pts: {} of {runs} rolled back, median {requests} canary requests; {by_gate} by a gate, the rest by the window trigger",
        results.iter().filter(|r| r.rolled_back().is_some()).count()
    );
    assert!(all_rolled_back);
    assert!(requests <= 300, "median {requests} canary requests");
}

/// A canary twice as slow (p95 2×) fails the latency ratio gate.
#[test]
fn a_canary_twice_as_slow_fails_the_latency_gate() {
    let slow = Arm {
        latency_median: Duration::from_secs(2),
        ..Arm::typical()
    };
    let s = scenario(slow, 2_000);
    let runs = 40;
    let results = run_many(&s, runs, 3_000);
    let by_latency = results
        .iter()
        .filter(|r| r.rolled_back() == Some(ReasonKind::Gate(GateName::LatencyP95Ratio)))
        .count();
    let requests = median(results.iter().map(|r| r.canary_requests).collect());
    println!(
        "2x p95: {by_latency} of {runs} rolled back by latency_p95_ratio, median {requests} canary requests"
    );
    assert_eq!(
        by_latency as u64,
        runs,
        "{:?}",
        results.iter().map(|r| &r.state).collect::<Vec<_>>()
    );
}

/// Too little traffic: the step has lasted long and even has its
/// `min_requests`, but the bounds are too wide to show non-inferiority, so
/// the step waits. Inconclusive is never a pass.
#[test]
fn too_little_traffic_stays_inconclusive() {
    // 1 canary request a second at 1 %: 600 requests after 10 minutes,
    // three times min_requests, yet far from the thousands a 1-point margin
    // at 2 % needs.
    let mut s = scenario(Arm::typical(), 100);
    s.max_ticks = 600;
    for seed in 0..5 {
        let r = sim::run(&s, 4_000 + seed);
        assert_eq!(
            r.state,
            State::Canary { step: 0 },
            "seed {seed}: {:?}",
            r.path
        );
        assert!(r.path.is_empty());
        let j = r.last_judgement.unwrap_or_default();
        assert_eq!(j.verdict(), GateVerdict::Inconclusive);
        let gate = j.gates.iter().find(|g| g.gate == GateName::ErrorRateMargin);
        assert_eq!(gate.map(|g| g.verdict), Some(GateVerdict::Inconclusive));
        assert!(
            r.canary_requests_on_stage >= 200,
            "{}",
            r.canary_requests_on_stage
        );
        if seed == 0 {
            println!("too little traffic: {:?}", gate);
        }
    }
    // A trickle that never reaches min_requests never advances either.
    let mut s = scenario(Arm::typical(), 5);
    s.max_ticks = 2_000;
    let r = sim::run(&s, 4_100);
    assert_eq!(r.state, State::Canary { step: 0 });
}

/// shadow_first: a good shadow goes live at step 0 (then on to promotion);
/// a bad one rolls back without ever taking live traffic.
#[test]
fn shadow_first_goes_live_or_rolls_back() {
    let mut s = scenario(Arm::typical(), 2_000);
    s.rollout.shadow_first = Some(ShadowFirstConfig {
        min_duration: Duration::from_secs(30),
        min_requests: 500,
    });
    let good = sim::run(&s, 5_000);
    assert_eq!(
        good.path.first(),
        Some(&State::Canary { step: 0 }),
        "{:?}",
        good.path
    );
    assert_eq!(good.state, State::Promoted);
    s.canary = Arm {
        failure_rate: 0.10,
        ..Arm::typical()
    };
    let bad = sim::run(&s, 5_001);
    assert!(
        matches!(bad.path.as_slice(), [State::RolledBack { .. }]),
        "{:?}",
        bad.path
    );
}

/// The breaker trigger rolls back on the tick it opens.
#[test]
fn breaker_open_rolls_back_at_once() {
    let mut s = scenario(Arm::typical(), 1_000);
    s.breaker_opens_at = Some(42);
    let r = sim::run(&s, 6_000);
    assert_eq!(r.rolled_back(), Some(ReasonKind::BreakerOpen));
    assert_eq!(r.ticks, 42);
}
