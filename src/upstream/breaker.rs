//! The circuit breaker of one upstream, shared by every route that uses it.
//!
//! A request asks [`Breaker::try_acquire`] for a [`Permit`] before it is
//! sent, and reports the attempt through [`Permit::success`] or
//! [`Permit::failure`]. An attempt that fails before the commit point is
//! reported at once; a committed one when its stream ends, so a stream that
//! breaks after its first byte counts against its upstream, as it does in
//! the rollout judge (a half-open probe is judged on its whole answer). A
//! permit dropped without a report counts as neither: a client that went
//! away, or sent a malformed request, says nothing about the upstream
//! (SPEC §5).
//!
//! The breaker lives in the upstream registry, outside the per-generation
//! runtime, so it keeps its state across a reload while the upstream's url is
//! unchanged; [`Breaker::set_config`] applies the reloaded thresholds.
//!
//! # Lifecycle
//!
//! ```text
//!                 consecutive failures >= consecutive_failures, or
//!                 window failures / requests >= failure_rate
//!                 with requests >= min_requests
//!   +--------+ ------------------------------------------> +---------------+
//!   | Closed |                                            | Open { until } | <--+
//!   +--------+ <--------------+                           +---------------+    |
//!       ^                      |                                  |            |
//!       |  counters reset      |                                  | now >= until
//!       |                      |                                  | (first caller
//!       |                      |                                  |  or reader)
//!       |                      |                                  v            |
//!       |                      |  all half_open_probes    +-----------------+  |
//!       |                      +------ succeed ---------- | HalfOpen        |  |
//!       |                                                 | { out, passed } | -+
//!       |                                                 +-----------------+
//!       |                                                   any probe fails:
//!       |                                                   Open for a fresh open_for
//! ```
//!
//! * Closed: every request is admitted (up to `max_in_flight`). Completed
//!   attempts feed the failure streak and the sliding window.
//! * Open: every request is refused with [`Rejection::Open`] until `until`.
//! * HalfOpen: up to `half_open_probes` requests are let through as probes;
//!   more are refused with [`Rejection::ProbesTaken`]. A probe dropped without
//!   a report gives its slot back, so the breaker cannot wedge half-open.
//!
//! Time-driven transitions (Open -> HalfOpen, window rotation) happen lazily,
//! on whichever call first observes the clock past the deadline: there is no
//! background task.
//!
//! # Locking
//!
//! While closed (the common case) neither admission nor a report takes the
//! lock: admission reads the published state, and a report of the current
//! epoch adds to the failure streak and the sliding window, which are
//! atomics ([`Closed`]), then checks the thresholds. Only a transition
//! (closed to open, and everything that happens while open or half-open)
//! takes the per-upstream mutex. A report that races a transition can land
//! in the counters just after it; the counters are reset when the breaker
//! closes again, so such a report is at worst counted once in a window the
//! breaker no longer judges by.
//!
//! Every transition starts a new *epoch*. A permit remembers the epoch it was
//! issued in, and a report from an older epoch is ignored: a long stream
//! admitted before the breaker opened must not close it again, nor count
//! against the upstream after the breaker has already judged it.
//!
//! # Clock
//!
//! The clock is injected as an `Arc<dyn Clock>` ([`crate::clock`]):
//! [`SystemClock`] in production, a `ManualClock` in tests. We do not use
//! tokio's paused time because the breaker is synchronous (it never
//! awaits), must be testable from plain threads, and the crate does not
//! enable tokio's `test-util`.

use std::fmt;
use std::sync::atomic::{AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use crate::clock::{Clock, SystemClock};
use crate::config::BreakerConfig;

/// The coarse state, for the `cutover_breaker_state` gauge and `/status`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BreakerState {
    Closed,
    HalfOpen,
    Open,
}

impl BreakerState {
    /// The gauge value: 0 closed, 1 half-open, 2 open.
    pub fn as_gauge(self) -> u8 {
        match self {
            BreakerState::Closed => 0,
            BreakerState::HalfOpen => 1,
            BreakerState::Open => 2,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            BreakerState::Closed => "closed",
            BreakerState::HalfOpen => "half-open",
            BreakerState::Open => "open",
        }
    }
}

impl fmt::Display for BreakerState {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why [`Breaker::try_acquire`] refused a request. Each counts as a failed
/// target attempt for the fallback chain (SPEC §5), but not as an upstream
/// failure for the breaker itself.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, thiserror::Error)]
pub enum Rejection {
    #[error("circuit breaker open")]
    Open,
    #[error("circuit breaker half-open and all probes taken")]
    ProbesTaken,
    #[error("max_in_flight reached")]
    MaxInFlight,
}

impl Rejection {
    /// A stable label for metrics and the access log.
    pub fn as_str(self) -> &'static str {
        match self {
            Rejection::Open => "breaker_open",
            Rejection::ProbesTaken => "breaker_probes_taken",
            Rejection::MaxInFlight => "max_in_flight",
        }
    }
}

/// What `/status` shows for one breaker.
#[derive(Clone, Debug, PartialEq)]
pub struct BreakerStatus {
    pub state: BreakerState,
    /// Failures in a row (reset by a success and on closing).
    pub consecutive_failures: u32,
    /// Completed (reported) requests in the current sliding window.
    pub window_requests: u64,
    /// Failed requests in the current sliding window.
    pub window_failures: u64,
    /// While open: how long until it half-opens. `None` otherwise.
    pub half_open_in: Option<Duration>,
    /// While half-open: probes out now, and probes that already succeeded.
    pub probes_in_flight: u32,
    pub probes_succeeded: u32,
    /// Requests holding a permit now, and the limit.
    pub in_flight: usize,
    pub max_in_flight: usize,
}

/// The circuit breaker of one upstream. Share it as `Arc<Breaker>`.
pub struct Breaker {
    clock: Arc<dyn Clock>,
    /// Permits alive now; decremented in `Permit::drop`. Reserved with a
    /// compare-and-swap loop so it never exceeds `max_in_flight`.
    in_flight: AtomicUsize,
    /// Reloadable without the lock.
    max_in_flight: AtomicUsize,
    /// `epoch << 2 | state tag`, republished at the end of every locked
    /// section. Lets `try_acquire` admit a request while closed (the common
    /// case) without taking the lock; a racing transition only means the
    /// permit carries the old epoch, so its report is ignored, exactly as if
    /// it had been admitted just before the transition.
    snapshot: AtomicU64,
    /// The failure streak, the sliding window and the thresholds they are
    /// judged by: what a report while closed touches, without the lock.
    closed: Closed,
    /// Everything that changes together on a transition: the state and the
    /// epoch. A `std::sync::Mutex` because a transition updates several
    /// fields at once and must not tear; it is per upstream, held for a few
    /// dozen instructions (no allocation, no I/O), never across an
    /// `.await`, and never taken while closed.
    inner: Mutex<Inner>,
}

const TAG_CLOSED: u64 = 0;
const TAG_HALF_OPEN: u64 = 1;
const TAG_OPEN: u64 = 2;

impl fmt::Debug for Breaker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Breaker")
            .field("status", &self.status())
            .finish_non_exhaustive()
    }
}

impl Breaker {
    /// A closed breaker on the system clock.
    pub fn new(cfg: BreakerConfig, max_in_flight: usize) -> Breaker {
        Breaker::with_clock(cfg, max_in_flight, Arc::new(SystemClock))
    }

    /// A closed breaker on the given clock.
    pub fn with_clock(cfg: BreakerConfig, max_in_flight: usize, clock: Arc<dyn Clock>) -> Breaker {
        let closed = Closed::new(&cfg, clock.now());
        let inner = Inner {
            cfg,
            state: State::Closed,
            epoch: 0,
        };
        Breaker {
            clock,
            in_flight: AtomicUsize::new(0),
            max_in_flight: AtomicUsize::new(max_in_flight),
            snapshot: AtomicU64::new(inner.packed()),
            closed,
            inner: Mutex::new(inner),
        }
    }

    /// Admits a request or refuses it. While open and past `until`, the first
    /// caller half-opens the breaker and becomes a probe.
    ///
    /// Takes `&Arc<Self>` so the permit can outlive the caller's frame (it
    /// travels with a streamed response body until the stream ends).
    pub fn try_acquire(self: &Arc<Self>) -> Result<Permit, Rejection> {
        let max = self.max_in_flight.load(Ordering::Relaxed);
        self.in_flight
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .map_err(|_| Rejection::MaxInFlight)?;

        let snap = self.snapshot.load(Ordering::Acquire);
        let admitted = if snap & 3 == TAG_CLOSED {
            Ok((snap >> 2, false))
        } else {
            let mut inner = self.lock();
            let r = inner.admit(self.clock.now());
            self.publish(&inner);
            r
        };
        match admitted {
            Ok((epoch, probe)) => Ok(Permit {
                breaker: Arc::clone(self),
                epoch,
                probe,
                reported: false,
            }),
            Err(e) => {
                self.in_flight.fetch_sub(1, Ordering::AcqRel);
                Err(e)
            }
        }
    }

    /// The coarse state, for the gauge. Observes the clock, so an open
    /// breaker past its deadline reads as half-open.
    pub fn state(&self) -> BreakerState {
        let mut inner = self.lock();
        inner.tick(self.clock.now());
        self.publish(&inner);
        inner.state.coarse()
    }

    /// Everything `/status` shows.
    pub fn status(&self) -> BreakerStatus {
        let now = self.clock.now();
        let mut inner = self.lock();
        inner.tick(now);
        self.publish(&inner);
        let (window_requests, window_failures) = self.closed.window.totals(now);
        let (half_open_in, probes_in_flight, probes_succeeded) = match inner.state {
            State::Closed => (None, 0, 0),
            State::Open { until } => (Some(until.saturating_duration_since(now)), 0, 0),
            State::HalfOpen { out, passed } => (None, out, passed),
        };
        BreakerStatus {
            state: inner.state.coarse(),
            consecutive_failures: self.closed.consecutive.load(Ordering::Relaxed),
            window_requests,
            window_failures,
            half_open_in,
            probes_in_flight,
            probes_succeeded,
            in_flight: self.in_flight(),
            max_in_flight: self.max_in_flight.load(Ordering::Relaxed),
        }
    }

    /// Requests holding a permit now.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    /// Applies a reloaded config without losing state: an open breaker stays
    /// open until its current deadline, the failure streak is kept and judged
    /// against the new threshold at the next report. A changed `window`
    /// length restarts the window counts (the old buckets have the wrong
    /// width). Permits already out keep their slots; a lower `max_in_flight`
    /// only refuses new requests until enough of them end.
    pub fn set_config(&self, cfg: BreakerConfig, max_in_flight: usize) {
        self.max_in_flight.store(max_in_flight, Ordering::Relaxed);
        let now = self.clock.now();
        let mut inner = self.lock();
        if inner.cfg.window != cfg.window {
            self.closed.window.reset(cfg.window, now);
        }
        self.closed.set_limits(&cfg);
        inner.cfg = cfg;
        // Fewer probes than already passed: nothing would ever report again,
        // so close now rather than wedge half-open.
        if let State::HalfOpen { passed, .. } = inner.state
            && passed >= inner.probes()
        {
            inner.close(&self.closed, now);
        }
        self.publish(&inner);
    }

    fn lock(&self) -> MutexGuard<'_, Inner> {
        // The critical sections do not panic, but a poisoned lock still holds
        // consistent counters: recover rather than take the proxy down.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn publish(&self, inner: &Inner) {
        self.snapshot.store(inner.packed(), Ordering::Release);
    }

    fn report(&self, epoch: u64, probe: bool, outcome: Outcome) {
        let now = self.clock.now();
        // Closed, and the permit is of this epoch: count without the lock,
        // and take it only to open.
        if !probe && self.snapshot.load(Ordering::Acquire) == (epoch << 2) | TAG_CLOSED {
            let failed = match outcome {
                Outcome::Success => false,
                Outcome::Failure => true,
                Outcome::Abandoned => return,
            };
            if self.closed.record(now, failed) {
                let mut inner = self.lock();
                // Judged again under the lock: another report may have
                // opened it (and it may even have closed again) meanwhile.
                if inner.state == State::Closed
                    && inner.epoch == epoch
                    && self.closed.should_open(now)
                {
                    inner.open(now);
                }
                self.publish(&inner);
            }
            return;
        }
        let mut inner = self.lock();
        inner.on_report(&self.closed, now, epoch, probe, outcome);
        self.publish(&inner);
    }
}

/// Admission for one request: holds its in-flight slot (and, while
/// half-open, a probe slot) until dropped. Report the attempt with
/// [`Permit::success`] or [`Permit::failure`]; dropping it unreported counts
/// as neither.
#[must_use = "a permit reports the attempt; dropping it counts as neither success nor failure"]
pub struct Permit {
    breaker: Arc<Breaker>,
    epoch: u64,
    probe: bool,
    reported: bool,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit")
            .field("epoch", &self.epoch)
            .field("probe", &self.probe)
            .finish_non_exhaustive()
    }
}

impl Permit {
    /// Whether this request is a half-open probe.
    pub fn is_probe(&self) -> bool {
        self.probe
    }

    /// The upstream answered well.
    pub fn success(mut self) {
        self.record_success();
    }

    /// Report success now but keep the in-flight slot until the permit
    /// drops. A second report is ignored. (The proxy itself reports once,
    /// when a committed stream ends: [`Permit::success`] or
    /// [`Permit::failure`].)
    pub fn record_success(&mut self) {
        if !std::mem::replace(&mut self.reported, true) {
            self.breaker
                .report(self.epoch, self.probe, Outcome::Success);
        }
    }

    /// The upstream failed: connect error, header timeout, a failure status,
    /// or a stream that broke (an error or `idle_timeout`) after its first
    /// byte reached the client (SPEC §5): the proxy keeps the permit of a
    /// committed attempt until its stream ends, and reports it then.
    pub fn failure(mut self) {
        self.reported = true;
        self.breaker
            .report(self.epoch, self.probe, Outcome::Failure);
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        if !self.reported && self.probe {
            self.breaker
                .report(self.epoch, self.probe, Outcome::Abandoned);
        }
        self.breaker.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Outcome {
    Success,
    Failure,
    /// Dropped unreported: frees a probe slot, counts as nothing.
    Abandoned,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Closed,
    Open {
        until: Instant,
    },
    /// `out` probes are in flight, `passed` have succeeded; at most
    /// `half_open_probes` of the two together.
    HalfOpen {
        out: u32,
        passed: u32,
    },
}

impl State {
    fn coarse(self) -> BreakerState {
        match self {
            State::Closed => BreakerState::Closed,
            State::Open { .. } => BreakerState::Open,
            State::HalfOpen { .. } => BreakerState::HalfOpen,
        }
    }

    fn tag(self) -> u64 {
        match self {
            State::Closed => TAG_CLOSED,
            State::HalfOpen { .. } => TAG_HALF_OPEN,
            State::Open { .. } => TAG_OPEN,
        }
    }
}

struct Inner {
    cfg: BreakerConfig,
    state: State,
    /// Bumped on every transition; see the module doc.
    epoch: u64,
}

impl Inner {
    fn packed(&self) -> u64 {
        (self.epoch << 2) | self.state.tag()
    }

    /// Validation guarantees at least 1; never trust it to wedge on 0.
    fn probes(&self) -> u32 {
        self.cfg.half_open_probes.max(1)
    }

    /// Time-driven transitions.
    fn tick(&mut self, now: Instant) {
        if let State::Open { until } = self.state
            && now >= until
        {
            self.state = State::HalfOpen { out: 0, passed: 0 };
            self.epoch += 1;
        }
    }

    /// Ok((epoch, is_probe)) or why not.
    fn admit(&mut self, now: Instant) -> Result<(u64, bool), Rejection> {
        self.tick(now);
        let probes = self.probes();
        match &mut self.state {
            State::Closed => Ok((self.epoch, false)),
            State::Open { .. } => Err(Rejection::Open),
            State::HalfOpen { out, passed } => {
                if out.saturating_add(*passed) < probes {
                    *out += 1;
                    Ok((self.epoch, true))
                } else {
                    Err(Rejection::ProbesTaken)
                }
            }
        }
    }

    fn on_report(
        &mut self,
        closed: &Closed,
        now: Instant,
        epoch: u64,
        probe: bool,
        outcome: Outcome,
    ) {
        self.tick(now);
        if epoch != self.epoch {
            return; // issued before the last transition: stale
        }
        match &mut self.state {
            // Reports while closed normally take the lock-free path in
            // `Breaker::report`; this one raced a publication.
            State::Closed => {
                let failed = match outcome {
                    Outcome::Success => false,
                    Outcome::Failure => true,
                    Outcome::Abandoned => return,
                };
                if closed.record(now, failed) {
                    self.open(now);
                }
            }
            // Nothing is admitted while open, so a same-epoch report cannot
            // come from there.
            State::Open { .. } => {}
            State::HalfOpen { out, passed } => {
                if !probe {
                    return;
                }
                *out = out.saturating_sub(1);
                match outcome {
                    Outcome::Abandoned => {}
                    Outcome::Failure => self.open(now),
                    Outcome::Success => {
                        *passed += 1;
                        if *passed >= self.cfg.half_open_probes.max(1) {
                            self.close(closed, now);
                        }
                    }
                }
            }
        }
    }

    fn open(&mut self, now: Instant) {
        // A huge configured `open_for` must not panic on overflow: cap it.
        const CAP: Duration = Duration::from_secs(100 * 365 * 24 * 3600);
        let until = now
            .checked_add(self.cfg.open_for)
            .or_else(|| now.checked_add(CAP))
            .unwrap_or(now);
        self.state = State::Open { until };
        self.epoch += 1;
    }

    fn close(&mut self, closed: &Closed, now: Instant) {
        // Counters first: reports of the new epoch start after `publish`.
        closed.consecutive.store(0, Ordering::Relaxed);
        closed.window.reset(self.cfg.window, now);
        self.state = State::Closed;
        self.epoch += 1;
    }
}

/// What a report while closed touches, all atomics: the failure streak,
/// the sliding window, and the thresholds (copied from the config, so they
/// are read without the lock; `set_config` updates them).
struct Closed {
    /// Failures in a row; a success resets it.
    consecutive: AtomicU32,
    window: AtomicWindow,
    consecutive_failures: AtomicU32,
    min_requests: AtomicU32,
    /// `failure_rate` as `f64` bits.
    failure_rate: AtomicU64,
}

impl Closed {
    fn new(cfg: &BreakerConfig, now: Instant) -> Closed {
        let closed = Closed {
            consecutive: AtomicU32::new(0),
            window: AtomicWindow::new(cfg.window, now),
            consecutive_failures: AtomicU32::new(0),
            min_requests: AtomicU32::new(0),
            failure_rate: AtomicU64::new(0),
        };
        closed.set_limits(cfg);
        closed
    }

    fn set_limits(&self, cfg: &BreakerConfig) {
        self.consecutive_failures
            .store(cfg.consecutive_failures, Ordering::Relaxed);
        self.min_requests.store(cfg.min_requests, Ordering::Relaxed);
        self.failure_rate
            .store(cfg.failure_rate.to_bits(), Ordering::Relaxed);
    }

    /// Count one completed attempt; returns whether the thresholds are now
    /// reached (the caller opens the breaker).
    fn record(&self, now: Instant, failed: bool) -> bool {
        self.window.record(now, failed);
        if failed {
            let _ = self
                .consecutive
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |n| {
                    Some(n.saturating_add(1))
                });
        } else if self.consecutive.load(Ordering::Relaxed) != 0 {
            // Read first: a streak of zero (nearly always) costs no write to
            // a line every worker shares.
            self.consecutive.store(0, Ordering::Relaxed);
        }
        self.should_open(now)
    }

    fn should_open(&self, now: Instant) -> bool {
        let streak = self.consecutive_failures.load(Ordering::Relaxed).max(1);
        if self.consecutive.load(Ordering::Relaxed) >= streak {
            return true;
        }
        let (requests, failures) = self.window.totals(now);
        let min = u64::from(self.min_requests.load(Ordering::Relaxed)).max(1);
        let rate = f64::from_bits(self.failure_rate.load(Ordering::Relaxed));
        // Division, not `failures >= rate * requests`: both sides are then
        // the double nearest an exact ratio, so 7 of 100 reaches 0.07
        // (while 0.07 * 100.0 == 7.000000000000001).
        requests >= min && failures as f64 / requests as f64 >= rate
    }
}

/// Buckets in the sliding window.
const BUCKETS: usize = 10;
/// A bucket's word: its tick in the high bits, its count in the low ones.
const COUNT_BITS: u32 = 24;
const COUNT_MAX: u64 = (1 << COUNT_BITS) - 1;
const TICK_MASK: u64 = (1 << (64 - COUNT_BITS)) - 1;

/// A sliding window of `BUCKETS` time buckets of `window / BUCKETS` each,
/// rotated lazily: a bucket found holding an old tick is reset before use,
/// and buckets older than the window are left out of the totals. The window
/// therefore covers between 9/10 and all of `window`.
///
/// Lock-free: each bucket is two words, requests and failures, each
/// `tick << 24 | count`, updated with a compare-and-swap that either adds
/// one or, on a new tick, starts the bucket over. Ticks are kept modulo
/// 2^40 (a bucket untouched for exactly 2^40 bucket widths, 348 years of a
/// 10 s bucket, would read as current), and a count stops at 2^24 - 1 per
/// bucket: past 16.7 M attempts in one bucket the rest of that bucket is
/// not counted, and the bucket keeps judging by the ones it holds.
struct AtomicWindow {
    /// The clock's zero: ticks count from `origin` nanoseconds after it.
    base: Instant,
    origin: AtomicU64,
    width_nanos: AtomicU64,
    requests: [AtomicU64; BUCKETS],
    failures: [AtomicU64; BUCKETS],
}

impl AtomicWindow {
    fn new(window: Duration, now: Instant) -> AtomicWindow {
        let w = AtomicWindow {
            base: now,
            origin: AtomicU64::new(0),
            width_nanos: AtomicU64::new(1),
            requests: std::array::from_fn(|_| AtomicU64::new(0)),
            failures: std::array::from_fn(|_| AtomicU64::new(0)),
        };
        w.reset(window, now);
        w
    }

    /// Start over, empty, with ticks counted from `now` (on closing, and on
    /// a new window length; both under the breaker's lock).
    fn reset(&self, window: Duration, now: Instant) {
        let width = u64::try_from(window.as_nanos() / BUCKETS as u128).unwrap_or(u64::MAX);
        self.width_nanos.store(width.max(1), Ordering::Relaxed);
        self.origin.store(self.nanos(now), Ordering::Relaxed);
        for word in self.requests.iter().chain(&self.failures) {
            word.store(0, Ordering::Relaxed);
        }
    }

    fn nanos(&self, now: Instant) -> u64 {
        u64::try_from(now.saturating_duration_since(self.base).as_nanos()).unwrap_or(u64::MAX)
    }

    fn tick(&self, now: Instant) -> u64 {
        let since = self
            .nanos(now)
            .saturating_sub(self.origin.load(Ordering::Relaxed));
        (since / self.width_nanos.load(Ordering::Relaxed)) & TICK_MASK
    }

    fn record(&self, now: Instant, failed: bool) {
        let t = self.tick(now);
        let i = (t % BUCKETS as u64) as usize;
        bump(&self.requests[i], t);
        if failed {
            bump(&self.failures[i], t);
        }
    }

    /// (requests, failures) in the window ending now.
    fn totals(&self, now: Instant) -> (u64, u64) {
        let t = self.tick(now);
        let count = |word: &AtomicU64| {
            let w = word.load(Ordering::Relaxed);
            // Older than the window, or (a racing clock read) ahead of now.
            let age = t.wrapping_sub(w >> COUNT_BITS) & TICK_MASK;
            if age < BUCKETS as u64 {
                w & COUNT_MAX
            } else {
                0
            }
        };
        let requests = self.requests.iter().map(count).sum();
        let failures = self.failures.iter().map(count).sum();
        (requests, failures)
    }
}

/// Add one to a bucket word for tick `t`, starting the bucket over when it
/// still holds an older tick.
#[inline]
fn bump(word: &AtomicU64, t: u64) {
    let mut current = word.load(Ordering::Relaxed);
    loop {
        let next = if current >> COUNT_BITS == t {
            if current & COUNT_MAX == COUNT_MAX {
                return;
            }
            current + 1
        } else {
            (t << COUNT_BITS) | 1
        };
        match word.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(seen) => current = seen,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::clock::ManualClock;

    fn cfg() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 3,
            failure_rate: 0.5,
            min_requests: 10,
            window: Duration::from_secs(10),
            open_for: Duration::from_secs(30),
            half_open_probes: 2,
        }
    }

    /// Rate tests: a streak that never trips on its own.
    fn rate_cfg() -> BreakerConfig {
        BreakerConfig {
            consecutive_failures: 1000,
            ..cfg()
        }
    }

    fn breaker(cfg: BreakerConfig, max_in_flight: usize) -> (Arc<Breaker>, ManualClock) {
        let clock = ManualClock::new();
        let b = Arc::new(Breaker::with_clock(
            cfg,
            max_in_flight,
            Arc::new(clock.clone()),
        ));
        (b, clock)
    }

    fn succeed(b: &Arc<Breaker>) {
        b.try_acquire().unwrap().success();
    }

    fn fail(b: &Arc<Breaker>) {
        b.try_acquire().unwrap().failure();
    }

    /// Opens `b` with its streak (consecutive_failures = 3).
    fn trip(b: &Arc<Breaker>) {
        for _ in 0..3 {
            fail(b);
        }
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn consecutive_failures_open_it() {
        let (b, _) = breaker(cfg(), 100);
        fail(&b);
        fail(&b);
        assert_eq!(b.state(), BreakerState::Closed);
        fail(&b);
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.try_acquire().unwrap_err(), Rejection::Open);
    }

    #[test]
    fn a_success_resets_the_streak() {
        let (b, _) = breaker(cfg(), 100);
        fail(&b);
        fail(&b);
        succeed(&b);
        assert_eq!(b.status().consecutive_failures, 0);
        fail(&b);
        fail(&b);
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.status().consecutive_failures, 2);
    }

    #[test]
    fn half_the_window_failing_opens_it() {
        let (b, _) = breaker(rate_cfg(), 100);
        for i in 0..10 {
            if i % 2 == 0 {
                fail(&b);
            } else {
                succeed(&b);
            }
            if i < 9 {
                assert_eq!(
                    b.state(),
                    BreakerState::Closed,
                    "before min_requests, at {i}"
                );
            }
        }
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn four_failures_in_ten_do_not() {
        let (b, _) = breaker(rate_cfg(), 100);
        for _ in 0..4 {
            fail(&b);
        }
        for _ in 0..6 {
            succeed(&b);
        }
        let s = b.status();
        assert_eq!(s.state, BreakerState::Closed);
        assert_eq!((s.window_requests, s.window_failures), (10, 4));
    }

    #[test]
    fn the_rate_threshold_is_exact_for_decimal_rates() {
        // (rate, requests, failures that reach it exactly). With
        // `failures >= rate * requests` the first three never opened:
        // 0.07 * 100.0 == 7.000000000000001.
        for (rate, requests, at) in [
            (0.07, 100u32, 7u32),
            (0.14, 50, 7),
            (0.28, 25, 7),
            (0.3, 10, 3),
            (0.5, 10, 5),
            (1.0, 10, 10),
        ] {
            for (failures, opens) in [(at, true), (at - 1, false)] {
                let (b, _) = breaker(
                    BreakerConfig {
                        failure_rate: rate,
                        min_requests: requests,
                        ..rate_cfg()
                    },
                    1000,
                );
                for _ in 0..requests - failures {
                    succeed(&b);
                }
                for _ in 0..failures {
                    fail(&b);
                }
                assert_eq!(
                    b.state() == BreakerState::Open,
                    opens,
                    "{failures} of {requests} at rate {rate}"
                );
            }
        }
    }

    #[test]
    fn below_min_requests_all_failures_do_not_open_by_rate() {
        let (b, _) = breaker(rate_cfg(), 100);
        for _ in 0..9 {
            fail(&b);
        }
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn failures_older_than_the_window_fall_out() {
        let (b, clock) = breaker(rate_cfg(), 100);
        for _ in 0..4 {
            fail(&b);
        }
        for _ in 0..5 {
            succeed(&b);
        }
        clock.advance(Duration::from_secs(10));
        assert_eq!(b.status().window_requests, 0, "all nine fell out");
        // Had the old four counted, 4 + 1 failures of 10 would open it.
        fail(&b);
        for _ in 0..9 {
            succeed(&b);
        }
        let s = b.status();
        assert_eq!(s.state, BreakerState::Closed);
        assert_eq!((s.window_requests, s.window_failures), (10, 1));
    }

    #[test]
    fn the_window_slides_bucket_by_bucket() {
        let (b, clock) = breaker(rate_cfg(), 100);
        for _ in 0..4 {
            fail(&b); // bucket 0
        }
        clock.advance(Duration::from_secs(5));
        for _ in 0..4 {
            succeed(&b); // bucket 5
        }
        clock.advance(Duration::from_secs(5));
        // t = 10s: bucket 0 has left the window, bucket 5 is still in it.
        let s = b.status();
        assert_eq!((s.window_requests, s.window_failures), (4, 0));
        clock.advance(Duration::from_secs(5));
        assert_eq!(b.status().window_requests, 0);
    }

    #[test]
    fn open_refuses_until_open_for_then_probes() {
        let (b, clock) = breaker(cfg(), 100);
        trip(&b);
        assert_eq!(b.status().half_open_in, Some(Duration::from_secs(30)));
        clock.advance(Duration::from_secs(29));
        assert_eq!(b.try_acquire().unwrap_err(), Rejection::Open);
        assert_eq!(b.status().half_open_in, Some(Duration::from_secs(1)));
        clock.advance(Duration::from_secs(1));

        let p1 = b.try_acquire().unwrap();
        let p2 = b.try_acquire().unwrap();
        assert!(p1.is_probe() && p2.is_probe());
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.try_acquire().unwrap_err(), Rejection::ProbesTaken);

        p1.success();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(
            b.try_acquire().unwrap_err(),
            Rejection::ProbesTaken,
            "a passed probe keeps its slot"
        );
        p2.success();
        let s = b.status();
        assert_eq!(s.state, BreakerState::Closed);
        assert_eq!(s.consecutive_failures, 0);
        assert_eq!((s.window_requests, s.window_failures), (0, 0));
        assert!(!b.try_acquire().unwrap().is_probe());
    }

    #[test]
    fn a_failed_probe_opens_it_for_a_fresh_open_for() {
        let (b, clock) = breaker(cfg(), 100);
        trip(&b);
        clock.advance(Duration::from_secs(30));
        let p1 = b.try_acquire().unwrap();
        let p2 = b.try_acquire().unwrap();
        clock.advance(Duration::from_secs(3));
        p1.failure();
        let s = b.status();
        assert_eq!(s.state, BreakerState::Open);
        assert_eq!(s.half_open_in, Some(Duration::from_secs(30)));
        // The other probe's late success belongs to the old half-open.
        p2.success();
        assert_eq!(b.state(), BreakerState::Open);
        clock.advance(Duration::from_secs(29));
        assert_eq!(b.try_acquire().unwrap_err(), Rejection::Open);
        clock.advance(Duration::from_secs(1));
        assert!(b.try_acquire().unwrap().is_probe());
    }

    #[test]
    fn a_dropped_probe_frees_its_slot() {
        let (b, clock) = breaker(cfg(), 100);
        trip(&b);
        clock.advance(Duration::from_secs(30));
        let p1 = b.try_acquire().unwrap();
        let p2 = b.try_acquire().unwrap();
        assert_eq!(b.try_acquire().unwrap_err(), Rejection::ProbesTaken);
        drop(p1);
        assert_eq!(b.status().probes_in_flight, 1);
        assert_eq!(
            b.state(),
            BreakerState::HalfOpen,
            "a drop counts as neither"
        );
        let p3 = b.try_acquire().unwrap();
        assert!(p3.is_probe());
        p2.success();
        p3.success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_dropped_permit_counts_as_neither() {
        let (b, _) = breaker(rate_cfg(), 100);
        for _ in 0..20 {
            drop(b.try_acquire().unwrap());
        }
        let s = b.status();
        assert_eq!(
            (s.window_requests, s.window_failures, s.in_flight),
            (0, 0, 0)
        );
    }

    #[test]
    fn a_stale_permit_cannot_close_or_count() {
        let (b, clock) = breaker(cfg(), 100);
        let long_stream = b.try_acquire().unwrap();
        trip(&b);
        clock.advance(Duration::from_secs(30));
        let probe = b.try_acquire().unwrap();
        long_stream.success();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.status().probes_in_flight, 1);
        drop(probe);
    }

    #[test]
    fn max_in_flight_refuses_then_admits_again() {
        let (b, _) = breaker(cfg(), 2);
        let p1 = b.try_acquire().unwrap();
        let p2 = b.try_acquire().unwrap();
        assert_eq!(b.try_acquire().unwrap_err(), Rejection::MaxInFlight);
        assert_eq!(b.in_flight(), 2);
        drop(p1);
        assert_eq!(b.in_flight(), 1);
        let p3 = b.try_acquire().unwrap();
        assert_eq!(b.try_acquire().unwrap_err(), Rejection::MaxInFlight);
        p2.success();
        p3.failure();
        assert_eq!(b.in_flight(), 0);
        // Refusals are not upstream failures.
        assert_eq!(b.status().window_requests, 2);
    }

    #[test]
    fn refusals_while_open_release_their_slot() {
        let (b, _) = breaker(cfg(), 1);
        trip(&b);
        for _ in 0..5 {
            assert_eq!(b.try_acquire().unwrap_err(), Rejection::Open);
        }
        assert_eq!(b.in_flight(), 0);
    }

    #[test]
    fn set_config_keeps_an_open_breaker_open() {
        let (b, clock) = breaker(cfg(), 100);
        trip(&b);
        b.set_config(
            BreakerConfig {
                open_for: Duration::from_secs(5),
                half_open_probes: 1,
                ..cfg()
            },
            100,
        );
        let s = b.status();
        assert_eq!(s.state, BreakerState::Open);
        assert_eq!(
            s.half_open_in,
            Some(Duration::from_secs(30)),
            "deadline kept"
        );
        clock.advance(Duration::from_secs(30));
        let probe = b.try_acquire().unwrap();
        assert_eq!(
            b.try_acquire().unwrap_err(),
            Rejection::ProbesTaken,
            "new half_open_probes = 1"
        );
        probe.failure();
        assert_eq!(
            b.status().half_open_in,
            Some(Duration::from_secs(5)),
            "new open_for"
        );
    }

    #[test]
    fn set_config_keeps_the_streak_and_applies_the_new_threshold() {
        let (b, _) = breaker(cfg(), 100);
        fail(&b);
        fail(&b);
        b.set_config(
            BreakerConfig {
                consecutive_failures: 5,
                ..cfg()
            },
            1,
        );
        assert_eq!(b.status().consecutive_failures, 2);
        fail(&b);
        fail(&b);
        assert_eq!(b.state(), BreakerState::Closed, "4 < 5");
        let p = b.try_acquire().unwrap();
        assert_eq!(
            b.try_acquire().unwrap_err(),
            Rejection::MaxInFlight,
            "new max 1"
        );
        p.failure();
        assert_eq!(b.state(), BreakerState::Open);
    }

    #[test]
    fn set_config_with_fewer_probes_than_passed_closes() {
        let (b, clock) = breaker(cfg(), 100);
        trip(&b);
        clock.advance(Duration::from_secs(30));
        b.try_acquire().unwrap().success();
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.set_config(
            BreakerConfig {
                half_open_probes: 1,
                ..cfg()
            },
            100,
        );
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn state_and_status_report_what_status_needs() {
        let (b, clock) = breaker(cfg(), 7);
        fail(&b);
        succeed(&b);
        fail(&b);
        let held = b.try_acquire().unwrap();
        let s = b.status();
        assert_eq!(
            s,
            BreakerStatus {
                state: BreakerState::Closed,
                consecutive_failures: 1,
                window_requests: 3,
                window_failures: 2,
                half_open_in: None,
                probes_in_flight: 0,
                probes_succeeded: 0,
                in_flight: 1,
                max_in_flight: 7,
            }
        );
        assert_eq!(s.state.as_gauge(), 0);
        drop(held);

        fail(&b);
        fail(&b); // three in a row
        assert_eq!(b.state().as_gauge(), 2);
        clock.advance(Duration::from_secs(12));
        let s = b.status();
        assert_eq!(s.state, BreakerState::Open);
        assert_eq!(s.half_open_in, Some(Duration::from_secs(18)));
    }

    #[test]
    fn an_open_breaker_past_its_deadline_reads_half_open() {
        let (b, clock) = breaker(cfg(), 100);
        trip(&b);
        clock.advance(Duration::from_secs(30));
        let s = b.status();
        assert_eq!(s.state, BreakerState::HalfOpen);
        assert_eq!(s.state.as_gauge(), 1);
        assert_eq!(s.half_open_in, None);
        assert!(b.try_acquire().unwrap().is_probe());
    }

    #[test]
    fn the_closed_path_never_takes_the_lock() {
        let (b, _) = breaker(rate_cfg(), 100);
        let held = b.inner.lock().expect("lock");
        let (done_tx, done) = std::sync::mpsc::channel();
        let worker = {
            let b = Arc::clone(&b);
            std::thread::spawn(move || {
                for i in 0..1000 {
                    let p = b.try_acquire().expect("admitted while closed");
                    // One failure in ten: under the 50 % rate, no streak.
                    if i % 10 == 0 {
                        p.failure()
                    } else {
                        p.success()
                    }
                }
                let _ = done_tx.send(());
            })
        };
        assert!(
            done.recv_timeout(Duration::from_secs(10)).is_ok(),
            "admission or a report waited for the lock while closed"
        );
        drop(held);
        worker.join().expect("worker");
        let s = b.status();
        assert_eq!(s.state, BreakerState::Closed);
        assert_eq!((s.window_requests, s.window_failures), (1000, 100));
    }

    #[test]
    fn a_full_bucket_stops_counting_and_an_old_one_starts_over() {
        let word = AtomicU64::new(0);
        bump(&word, 7);
        bump(&word, 7);
        assert_eq!(word.load(Ordering::Relaxed), (7 << COUNT_BITS) | 2);
        word.store((7 << COUNT_BITS) | COUNT_MAX, Ordering::Relaxed);
        bump(&word, 7);
        assert_eq!(word.load(Ordering::Relaxed) & COUNT_MAX, COUNT_MAX);
        bump(&word, 17);
        assert_eq!(word.load(Ordering::Relaxed), (17 << COUNT_BITS) | 1);
    }

    #[test]
    fn buckets_ahead_of_now_are_not_counted() {
        // A report that read the clock just before a reset can write a
        // tick the new window has not reached: it must not count as now.
        let clock = ManualClock::new();
        let w = AtomicWindow::new(Duration::from_secs(10), clock.now());
        clock.advance(Duration::from_secs(3));
        w.record(clock.now(), true); // tick 3
        w.reset(Duration::from_secs(10), clock.now());
        w.failures[5].store((5 << COUNT_BITS) | 9, Ordering::Relaxed);
        assert_eq!(w.totals(clock.now()), (0, 0));
        clock.advance(Duration::from_secs(5));
        assert_eq!(w.totals(clock.now()), (0, 9), "counted once its tick comes");
    }

    #[test]
    fn breakers_and_permits_cross_threads() {
        fn is_send_sync<T: Send + Sync>() {}
        is_send_sync::<Breaker>();
        is_send_sync::<Permit>();
    }

    #[test]
    fn concurrent_smoke() {
        let (b, clock) = breaker(
            BreakerConfig {
                consecutive_failures: 4,
                min_requests: 20,
                window: Duration::from_millis(100),
                open_for: Duration::from_millis(20),
                ..cfg()
            },
            5,
        );
        let threads: Vec<_> = (0..4u64)
            .map(|t| {
                let b = Arc::clone(&b);
                let clock = clock.clone();
                std::thread::spawn(move || {
                    let mut held = Vec::new();
                    let mut x = t.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
                    for _ in 0..20_000 {
                        // xorshift: a cheap, deterministic-per-thread mix
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        if x % 16 == 0 {
                            clock.advance(Duration::from_millis(1));
                        }
                        if let Ok(p) = b.try_acquire() {
                            held.push(p);
                        }
                        // Settle the oldest permit most of the time, so a
                        // few stay in flight: 2/3 succeed, 1/4 fail, the
                        // rest are dropped unreported.
                        if !held.is_empty() && (x >> 8) % 4 != 0 {
                            let p = held.remove(0);
                            match (x >> 16) % 12 {
                                0..=7 => p.success(),
                                8..=10 => p.failure(),
                                _ => drop(p),
                            }
                        }
                        if x % 97 == 0 {
                            let _ = b.status();
                        }
                    }
                })
            })
            .collect();
        for t in threads {
            t.join().unwrap();
        }
        let s = b.status();
        assert_eq!(s.in_flight, 0);
        assert_eq!(s.probes_in_flight, 0);
        // Whatever state it ended in, it is not wedged.
        clock.advance(Duration::from_secs(1));
        let p = b.try_acquire().unwrap();
        p.success();
    }
}
