//! Per-step and sliding-window statistics of a rollout, recorded on the hot
//! path.
//!
//! Recording is a handful of relaxed atomic adds: no lock, no allocation.
//! The controller reads plain [`VersionSnapshot`]s once per tick.
//!
//! # Reset on a step change, without racing recorders
//!
//! A step's counters live in one [`StepStats`] behind an `ArcSwap`. A step
//! change stores a fresh `Arc<StepStats>` (an allocation on the control
//! plane, once per step). A recorder loads the current `Arc` and adds to it;
//! one that loaded the old `Arc` just before the swap adds to the old step,
//! which nobody judges any more. No counter is ever zeroed in place, so no
//! increment can be lost or smeared across two steps, and there is no
//! lock-step between the controller and the recorders.
//!
//! # The sliding window
//!
//! The rollback triggers look at the canary's last `rollback.window`, cut
//! into [`WINDOW_SLOTS`] time slots on the injected clock (as the breaker's
//! window). Here the slots are shared by concurrent recorders without a
//! lock, so every counter word carries the slot's tick in its top bits: an
//! add to a word from an older tick restarts it at 1 (one compare-and-swap
//! loop), and a reader ignores words whose tick is not the one that slot
//! holds inside the window. Nothing clears a slot; stale words simply stop
//! matching. The tick tag has [`TAG_BITS`] bits, so a word untouched for
//! exactly a multiple of 2^22 slot widths could be mistaken for current: at
//! the smallest sensible slot (100 ms) that is 4.8 days of total silence on
//! that one histogram bucket, and it would only add a few stale counts.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;

use crate::clock::Clock;
use crate::telemetry::{Outcome, OutcomeSink};

/// Histogram buckets per octave (power of two): each bucket spans at most
/// 1/16 = 6.25 % of its lower edge, so a quantile read from bucket edges is
/// within 6.25 %.
pub const SUB_BUCKETS: usize = 16;
/// The first octave, in microseconds: 2^10 µs ≈ 1 ms. Faster answers share
/// bucket 0.
const MIN_OCTAVE: u32 = 10;
/// One past the last octave: 2^30 µs ≈ 17.9 min. Slower answers share the
/// last (overflow) bucket.
const MAX_OCTAVE: u32 = 30;
/// Underflow + 20 octaves × 16 + overflow.
pub const LATENCY_BUCKETS: usize = 2 + (MAX_OCTAVE - MIN_OCTAVE) as usize * SUB_BUCKETS;

/// The histogram bucket of a latency.
pub fn bucket_of(latency: Duration) -> usize {
    let us = u64::try_from(latency.as_micros()).unwrap_or(u64::MAX);
    if us < (1 << MIN_OCTAVE) {
        return 0;
    }
    let octave = 63 - us.leading_zeros();
    if octave >= MAX_OCTAVE {
        return LATENCY_BUCKETS - 1;
    }
    // The 4 bits after the leading one pick the sub-bucket.
    let sub = (us >> (octave - 4)) & (SUB_BUCKETS as u64 - 1);
    1 + (octave - MIN_OCTAVE) as usize * SUB_BUCKETS + sub as usize
}

/// `[lower, upper)` edges of a bucket, in seconds. The overflow bucket's
/// upper edge is infinite.
pub fn bucket_bounds(index: usize) -> (f64, f64) {
    if index == 0 {
        return (0.0, micros_to_secs(1 << MIN_OCTAVE));
    }
    if index >= LATENCY_BUCKETS - 1 {
        return (micros_to_secs(1 << MAX_OCTAVE), f64::INFINITY);
    }
    let i = index - 1;
    let octave = MIN_OCTAVE + (i / SUB_BUCKETS) as u32;
    let sub = (i % SUB_BUCKETS) as u64;
    let base = 1u64 << octave;
    let step = base / SUB_BUCKETS as u64;
    (
        micros_to_secs(base + sub * step),
        micros_to_secs(base + (sub + 1) * step),
    )
}

fn micros_to_secs(us: u64) -> f64 {
    us as f64 / 1e6
}

/// Cost is summed in micro-USD so that an atomic integer add is exact.
fn usd_to_micros(usd: f64) -> u64 {
    if usd.is_finite() && usd > 0.0 {
        // `as` saturates; a cost above 1.8e13 USD is not a concern.
        (usd * 1e6).round() as u64
    } else {
        0
    }
}

/// What one judged request says about its version.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Observation {
    /// The version's own attempt failed (status in `failure_statuses`,
    /// timeout, connect or stream error, breaker rejection), even if a
    /// fallback then rescued the client.
    pub failed: bool,
    /// Time to the last byte of the version's response. `None` when there
    /// was no response to time (connect error, rejection): a 2 ms connect
    /// error must not make the version look fast.
    pub latency: Option<Duration>,
    /// USD, from the usage block and the version's prices. `None` when
    /// unknown; the cost gate averages over requests with a known cost.
    pub cost_usd: Option<f64>,
}

/// Atomic counts per latency bucket.
pub struct Histogram {
    counts: Box<[AtomicU64; LATENCY_BUCKETS]>,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

impl Histogram {
    fn record_n(&self, latency: Duration, n: u64) {
        self.counts[bucket_of(latency)].fetch_add(n, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> HistogramSnapshot {
        HistogramSnapshot {
            counts: self
                .counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .collect(),
        }
    }
}

/// A plain copy of a histogram's counts.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistogramSnapshot {
    /// One count per bucket ([`LATENCY_BUCKETS`]); empty for "no data".
    pub counts: Vec<u64>,
}

impl HistogramSnapshot {
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    /// The bucket holding the `rank`-th smallest observation (1-based).
    pub fn bucket_of_rank(&self, rank: u64) -> Option<usize> {
        if rank == 0 {
            return None;
        }
        let mut seen = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            seen += c;
            if seen >= rank {
                return Some(i);
            }
        }
        None
    }

    /// A point estimate of quantile `q` in seconds, interpolated linearly
    /// inside its bucket. `None` without data.
    pub fn quantile(&self, q: f64) -> Option<f64> {
        let n = self.total();
        if n == 0 {
            return None;
        }
        let rank = ((q * n as f64).ceil() as u64).clamp(1, n);
        let mut before = 0u64;
        for (i, &c) in self.counts.iter().enumerate() {
            if before + c >= rank {
                let (lo, hi) = bucket_bounds(i);
                if !hi.is_finite() {
                    return Some(lo);
                }
                let within = (rank - before) as f64 / c as f64;
                return Some(lo + (hi - lo) * within);
            }
            before += c;
        }
        None
    }

    /// Adds another histogram's counts.
    pub fn merge(&mut self, other: &HistogramSnapshot) {
        if self.counts.len() < other.counts.len() {
            self.counts.resize(other.counts.len(), 0);
        }
        for (a, b) in self.counts.iter_mut().zip(&other.counts) {
            *a += b;
        }
    }
}

/// One version's counters for the current step.
pub struct VersionStats {
    requests: AtomicU64,
    failures: AtomicU64,
    /// Requests with a known cost, and their sum in micro-USD.
    cost_n: AtomicU64,
    cost_micros: AtomicU64,
    /// Sum of squared costs in USD², as f64 bits: the cost gate's variance.
    /// (Squares of micro-USD would overflow a u64 after a few thousand
    /// $10 requests.)
    cost_sq_bits: AtomicU64,
    outcome_success: AtomicU64,
    outcome_failure: AtomicU64,
    latency: Histogram,
}

impl Default for VersionStats {
    fn default() -> Self {
        VersionStats {
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            cost_n: AtomicU64::new(0),
            cost_micros: AtomicU64::new(0),
            cost_sq_bits: AtomicU64::new(0f64.to_bits()),
            outcome_success: AtomicU64::new(0),
            outcome_failure: AtomicU64::new(0),
            latency: Histogram::default(),
        }
    }
}

impl VersionStats {
    pub fn record(&self, obs: &Observation) {
        self.record_n(obs, 1);
    }

    /// Records `n` identical observations at once: the simulation feeds
    /// whole ticks of synthetic traffic through this.
    pub fn record_n(&self, obs: &Observation, n: u64) {
        if n == 0 {
            return;
        }
        self.requests.fetch_add(n, Ordering::Relaxed);
        if obs.failed {
            self.failures.fetch_add(n, Ordering::Relaxed);
        }
        if let Some(latency) = obs.latency {
            self.latency.record_n(latency, n);
        }
        if let Some(usd) = obs.cost_usd.filter(|c| c.is_finite() && *c >= 0.0) {
            self.cost_n.fetch_add(n, Ordering::Relaxed);
            self.cost_micros
                .fetch_add(usd_to_micros(usd).saturating_mul(n), Ordering::Relaxed);
            let add = usd * usd * n as f64;
            // f64 has no atomic add: a CAS loop, uncontended in practice.
            let _ = self
                .cost_sq_bits
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |bits| {
                    Some((f64::from_bits(bits) + add).to_bits())
                });
        }
    }

    /// A task outcome (header or feedback) of a request of this version.
    pub fn record_outcome(&self, success: bool) {
        let counter = if success {
            &self.outcome_success
        } else {
            &self.outcome_failure
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Records `n` outcomes at once (simulation).
    pub fn record_outcomes(&self, successes: u64, failures: u64) {
        self.outcome_success.fetch_add(successes, Ordering::Relaxed);
        self.outcome_failure.fetch_add(failures, Ordering::Relaxed);
    }

    pub fn snapshot(&self) -> VersionSnapshot {
        let requests = self.requests.load(Ordering::Relaxed);
        // Loaded after `requests`: a racing recorder can only make the
        // failures lag, never exceed the requests they belong to.
        let failures = self.failures.load(Ordering::Relaxed).min(requests);
        VersionSnapshot {
            requests,
            failures,
            cost_n: self.cost_n.load(Ordering::Relaxed),
            cost_sum_usd: self.cost_micros.load(Ordering::Relaxed) as f64 / 1e6,
            cost_sq_sum_usd: f64::from_bits(self.cost_sq_bits.load(Ordering::Relaxed)),
            outcome_success: self.outcome_success.load(Ordering::Relaxed),
            outcome_failure: self.outcome_failure.load(Ordering::Relaxed),
            latency: self.latency.snapshot(),
        }
    }
}

/// A plain copy of one version's step counters, for the judge and `/status`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct VersionSnapshot {
    /// Judged requests.
    pub requests: u64,
    pub failures: u64,
    pub cost_n: u64,
    pub cost_sum_usd: f64,
    pub cost_sq_sum_usd: f64,
    pub outcome_success: u64,
    pub outcome_failure: u64,
    pub latency: HistogramSnapshot,
}

impl VersionSnapshot {
    pub fn failure_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.failures as f64 / self.requests as f64)
    }

    pub fn outcomes(&self) -> u64 {
        self.outcome_success + self.outcome_failure
    }

    pub fn mean_cost(&self) -> Option<f64> {
        (self.cost_n > 0).then(|| self.cost_sum_usd / self.cost_n as f64)
    }

    /// The summary `/status` shows.
    pub fn summary(&self) -> StepSummary {
        StepSummary {
            requests: self.requests,
            failures: self.failures,
            failure_rate: self.failure_rate(),
            p95_seconds: self.latency.quantile(0.95),
            p99_seconds: self.latency.quantile(0.99),
            mean_cost_usd: self.mean_cost(),
            outcome_success: self.outcome_success,
            outcome_failure: self.outcome_failure,
        }
    }
}

/// n, failures, p95, p99, mean cost and outcome counts of one version.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct StepSummary {
    pub requests: u64,
    pub failures: u64,
    pub failure_rate: Option<f64>,
    pub p95_seconds: Option<f64>,
    pub p99_seconds: Option<f64>,
    pub mean_cost_usd: Option<f64>,
    pub outcome_success: u64,
    pub outcome_failure: u64,
}

/// Which side of the comparison a request belongs to. While shadowing, the
/// canary's mirrored requests are recorded as `Canary`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Role {
    Baseline,
    Canary,
}

/// Both versions' counters for one step.
#[derive(Default)]
pub struct StepStats {
    pub baseline: VersionStats,
    pub canary: VersionStats,
}

impl StepStats {
    pub fn version(&self, role: Role) -> &VersionStats {
        match role {
            Role::Baseline => &self.baseline,
            Role::Canary => &self.canary,
        }
    }
}

/// Everything the hot path records for one route's rollout: the current
/// step's counters and the canary's sliding window.
pub struct RolloutStats {
    step: ArcSwap<StepStats>,
    window: Window,
    clock: Arc<dyn Clock>,
}

impl RolloutStats {
    pub fn new(window: Duration, clock: Arc<dyn Clock>) -> RolloutStats {
        let now = clock.now();
        RolloutStats {
            step: ArcSwap::from_pointee(StepStats::default()),
            window: Window::new(window, now),
            clock,
        }
    }

    /// Hot path: one judged request of `role` finished. Pinned requests must
    /// not be recorded (they are not a random sample).
    pub fn record(&self, role: Role, obs: &Observation) {
        self.step.load().version(role).record(obs);
        if role == Role::Canary {
            self.window.record_n(self.clock.now(), obs, 1);
        }
    }

    /// `n` identical observations (simulation).
    pub fn record_n(&self, role: Role, obs: &Observation, n: u64) {
        self.step.load().version(role).record_n(obs, n);
        if role == Role::Canary {
            self.window.record_n(self.clock.now(), obs, n);
        }
    }

    /// A task outcome arrived for a judged request of `role`. It counts in
    /// the step current when it arrives.
    pub fn record_outcome(&self, role: Role, success: bool) {
        self.step.load().version(role).record_outcome(success);
    }

    /// Outcomes in bulk (simulation).
    pub fn record_outcomes(&self, role: Role, successes: u64, failures: u64) {
        self.step
            .load()
            .version(role)
            .record_outcomes(successes, failures);
    }

    /// Starts a new step: later records go to fresh counters (see the module
    /// doc for why this cannot race with recorders).
    pub fn reset_step(&self) {
        self.step.store(Arc::new(StepStats::default()));
    }

    /// (baseline, canary) counters of the current step.
    pub fn step_snapshot(&self) -> (VersionSnapshot, VersionSnapshot) {
        let step = self.step.load();
        (step.baseline.snapshot(), step.canary.snapshot())
    }

    /// The canary over the last rollback window, ending now.
    pub fn window_snapshot(&self) -> WindowSnapshot {
        self.window.snapshot(self.clock.now())
    }
}

/// Slots per sliding window, as in the breaker's window.
pub const WINDOW_SLOTS: usize = 10;
/// Bits of each window word that hold the slot's tick.
pub const TAG_BITS: u32 = 22;
const COUNT_BITS: u32 = 64 - TAG_BITS;
const COUNT_MASK: u64 = (1 << COUNT_BITS) - 1;
const TAG_MASK: u64 = (1 << TAG_BITS) - 1;

/// A sliding window of the canary's requests, failures and latencies.
struct Window {
    origin: Instant,
    slot_nanos: u64,
    slots: Box<[Slot]>,
}

struct Slot {
    requests: AtomicU64,
    failures: AtomicU64,
    latency: Box<[AtomicU64; LATENCY_BUCKETS]>,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            requests: AtomicU64::new(0),
            failures: AtomicU64::new(0),
            latency: Box::new(std::array::from_fn(|_| AtomicU64::new(0))),
        }
    }
}

/// Adds `n` to a tagged word, restarting it if it holds an older tick.
fn tagged_add(word: &AtomicU64, tag: u64, n: u64) {
    let _ = word.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |w| {
        let count = if w >> COUNT_BITS == tag {
            (w & COUNT_MASK).saturating_add(n).min(COUNT_MASK)
        } else {
            n.min(COUNT_MASK)
        };
        Some(tag << COUNT_BITS | count)
    });
}

/// The count of a tagged word if it holds `tag`, else 0.
fn tagged_get(word: &AtomicU64, tag: u64) -> u64 {
    let w = word.load(Ordering::Relaxed);
    if w >> COUNT_BITS == tag {
        w & COUNT_MASK
    } else {
        0
    }
}

impl Window {
    fn new(window: Duration, now: Instant) -> Window {
        let slot = window.as_nanos() / WINDOW_SLOTS as u128;
        Window {
            origin: now,
            slot_nanos: u64::try_from(slot).unwrap_or(u64::MAX).max(1),
            slots: (0..WINDOW_SLOTS).map(|_| Slot::new()).collect(),
        }
    }

    fn tick(&self, now: Instant) -> u64 {
        let since = now.saturating_duration_since(self.origin).as_nanos();
        u64::try_from(since / u128::from(self.slot_nanos)).unwrap_or(u64::MAX)
    }

    fn record_n(&self, now: Instant, obs: &Observation, n: u64) {
        let t = self.tick(now);
        let tag = t & TAG_MASK;
        let slot = &self.slots[(t % WINDOW_SLOTS as u64) as usize];
        tagged_add(&slot.requests, tag, n);
        if obs.failed {
            tagged_add(&slot.failures, tag, n);
        }
        if let Some(latency) = obs.latency {
            tagged_add(&slot.latency[bucket_of(latency)], tag, n);
        }
    }

    fn snapshot(&self, now: Instant) -> WindowSnapshot {
        let t = self.tick(now);
        let mut requests = 0;
        let mut failures = 0;
        let mut latency = vec![0u64; LATENCY_BUCKETS];
        for back in 0..WINDOW_SLOTS as u64 {
            let Some(slot_tick) = t.checked_sub(back) else {
                break;
            };
            let tag = slot_tick & TAG_MASK;
            let slot = &self.slots[(slot_tick % WINDOW_SLOTS as u64) as usize];
            requests += tagged_get(&slot.requests, tag);
            failures += tagged_get(&slot.failures, tag);
            for (sum, word) in latency.iter_mut().zip(slot.latency.iter()) {
                *sum += tagged_get(word, tag);
            }
        }
        WindowSnapshot {
            requests,
            failures: failures.min(requests),
            latency: HistogramSnapshot { counts: latency },
        }
    }
}

/// The canary over the rollback window.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct WindowSnapshot {
    pub requests: u64,
    pub failures: u64,
    pub latency: HistogramSnapshot,
}

impl WindowSnapshot {
    pub fn failure_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.failures as f64 / self.requests as f64)
    }
}

/// One judged version's outcomes, as its [`crate::telemetry::VersionMetrics`]
/// sees them: each goes to the rollout's statistics under the version's role.
pub struct JudgedOutcomes {
    pub stats: Arc<RolloutStats>,
    pub role: Role,
}

impl OutcomeSink for JudgedOutcomes {
    fn outcome(&self, outcome: Outcome) {
        self.stats
            .record_outcome(self.role, outcome == Outcome::Success);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn ok(ms: u64) -> Observation {
        Observation {
            failed: false,
            latency: Some(Duration::from_millis(ms)),
            cost_usd: Some(0.01),
        }
    }

    #[test]
    fn buckets_are_monotonic_and_cover_their_values() {
        let mut last = 0;
        for us in [0u64, 500, 1024, 1100, 2047, 2048, 5_000, 123_456, 9_999_999] {
            let d = Duration::from_micros(us);
            let b = bucket_of(d);
            assert!(b >= last, "bucket of {us} went down");
            last = b;
            let (lo, hi) = bucket_bounds(b);
            let s = us as f64 / 1e6;
            assert!(lo <= s && s < hi, "{us} µs not in [{lo}, {hi})");
        }
        assert_eq!(bucket_of(Duration::from_secs(3600)), LATENCY_BUCKETS - 1);
        // Relative width at most 1/16.
        for i in 1..LATENCY_BUCKETS - 1 {
            let (lo, hi) = bucket_bounds(i);
            assert!((hi - lo) / lo <= 1.0 / 16.0 + 1e-9);
            assert_eq!(bucket_bounds(i + 1).0, hi, "gap after bucket {i}");
        }
    }

    #[test]
    fn quantiles_within_a_bucket_width() {
        let h = Histogram::default();
        for ms in 1..=1000 {
            h.record_n(Duration::from_millis(ms), 1);
        }
        let s = h.snapshot();
        let p95 = s.quantile(0.95).unwrap_or(0.0);
        assert!((p95 - 0.95).abs() / 0.95 < 0.0625, "p95 {p95}");
        let p99 = s.quantile(0.99).unwrap_or(0.0);
        assert!((p99 - 0.99).abs() / 0.99 < 0.0625, "p99 {p99}");
        assert_eq!(HistogramSnapshot::default().quantile(0.5), None);
    }

    #[test]
    fn step_reset_starts_fresh_counters() {
        let clock = ManualClock::new();
        let stats = RolloutStats::new(Duration::from_secs(60), Arc::new(clock));
        stats.record(Role::Canary, &ok(10));
        stats.record(
            Role::Canary,
            &Observation {
                failed: true,
                latency: None,
                cost_usd: None,
            },
        );
        stats.record(Role::Baseline, &ok(20));
        stats.record_outcome(Role::Canary, true);
        let (b, c) = stats.step_snapshot();
        assert_eq!((b.requests, c.requests, c.failures), (1, 2, 1));
        assert_eq!(
            c.latency.total(),
            1,
            "no latency recorded without a response"
        );
        assert_eq!(c.cost_n, 1);
        assert!((c.mean_cost().unwrap_or(0.0) - 0.01).abs() < 1e-12);
        assert_eq!(c.outcome_success, 1);
        stats.reset_step();
        let (b, c) = stats.step_snapshot();
        assert_eq!((b.requests, c.requests, c.outcomes()), (0, 0, 0));
        // The window is not reset by a step change.
        assert_eq!(stats.window_snapshot().requests, 2);
    }

    #[test]
    fn window_slides_on_the_clock() {
        let clock = ManualClock::new();
        let stats = RolloutStats::new(Duration::from_secs(10), Arc::new(clock.clone()));
        let fail = Observation {
            failed: true,
            latency: Some(Duration::from_secs(2)),
            cost_usd: None,
        };
        stats.record_n(Role::Canary, &fail, 5);
        stats.record_n(Role::Baseline, &fail, 7);
        clock.advance(Duration::from_secs(5));
        stats.record_n(Role::Canary, &ok(10), 15);
        let w = stats.window_snapshot();
        assert_eq!((w.requests, w.failures), (20, 5));
        assert_eq!(w.latency.total(), 20);
        let p99 = w.latency.quantile(0.99).unwrap_or(0.0);
        assert!(p99 > 1.8, "p99 {p99}");
        // The first slot leaves the window; its stale words are ignored even
        // though the slot is reused.
        clock.advance(Duration::from_secs(6));
        stats.record_n(Role::Canary, &ok(10), 1);
        let w = stats.window_snapshot();
        assert_eq!((w.requests, w.failures), (16, 0));
        clock.advance(Duration::from_secs(60));
        assert_eq!(
            stats.window_snapshot(),
            WindowSnapshot {
                latency: HistogramSnapshot {
                    counts: vec![0; LATENCY_BUCKETS]
                },
                ..WindowSnapshot::default()
            }
        );
    }

    #[test]
    fn concurrent_recorders_lose_nothing() {
        let clock = ManualClock::new();
        let stats = Arc::new(RolloutStats::new(Duration::from_secs(60), Arc::new(clock)));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let stats = Arc::clone(&stats);
                std::thread::spawn(move || {
                    for i in 0..10_000u64 {
                        stats.record(
                            Role::Canary,
                            &Observation {
                                failed: i % 10 == 0,
                                latency: Some(Duration::from_millis(i % 100 + 1)),
                                cost_usd: None,
                            },
                        );
                    }
                })
            })
            .collect();
        for t in threads {
            assert!(t.join().is_ok());
        }
        let (_, c) = stats.step_snapshot();
        assert_eq!((c.requests, c.failures), (40_000, 4_000));
        let w = stats.window_snapshot();
        assert_eq!(
            (w.requests, w.failures, w.latency.total()),
            (40_000, 4_000, 40_000)
        );
    }
}
