//! Confidence sequences: the statistics behind the judge's gates.
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

use crate::rollout::stats::{HistogramSnapshot, bucket_bounds};

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
pub(super) mod tests {
    use std::time::Duration;

    use super::*;
    use crate::rollout::stats::{LATENCY_BUCKETS, bucket_of};

    /// A histogram of `(milliseconds, count)` samples.
    pub(in crate::rollout::judge) fn hist(
        values_ms: impl IntoIterator<Item = (u64, u64)>,
    ) -> HistogramSnapshot {
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
}
