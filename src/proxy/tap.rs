//! Taps: what watches a response body on its way to the client.
//!
//! The body wrapper (src/proxy/body.rs) hands every data frame to its
//! [`Taps`] and tells them once how the body ended; it knows nothing of
//! what they do. Each tap is attached by the phase that wants it: the
//! meter always, usage by the respond phase for an upstream's answer, the
//! cache fill by the cache phase's leader, and the compare tap when a
//! shadow waits for the primary's answer. None of them delays or copies
//! the client's bytes beyond a refcount (`Bytes` clones) or a bounded
//! buffer of its own.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::sync::oneshot;

use super::ctx::End;
use crate::api::{Api, Skip};
use crate::cache::Fill;
use crate::shadow::PrimaryAnswer;
use crate::shadow::compare::{Capture, Compared};
use crate::telemetry::{ApiSkips, SkipUse, Usage, UsageScanner};

/// Shadows waiting for the primary's answer to compare with.
pub type Comparing = Vec<oneshot::Sender<PrimaryAnswer>>;

/// One observer of a response body.
pub trait Tap {
    fn on_data(&mut self, data: &Bytes);
    /// Called once, after the last frame or when the body is cut.
    fn on_end(&mut self, end: End);
}

/// Bytes sent and the time to the first one: on every answer.
pub struct Meter {
    start: Instant,
    bytes: u64,
    ttfb: Option<Duration>,
}

impl Meter {
    pub fn new(start: Instant) -> Meter {
        Meter {
            start,
            bytes: 0,
            ttfb: None,
        }
    }
}

impl Tap for Meter {
    #[inline]
    fn on_data(&mut self, data: &Bytes) {
        if self.ttfb.is_none() && !data.is_empty() {
            self.ttfb = Some(self.start.elapsed());
        }
        self.bytes += data.len() as u64;
    }

    fn on_end(&mut self, _end: End) {}
}

/// Token usage from an upstream's answer (SPEC §7), JSON or event stream.
pub struct UsageTap {
    scanner: UsageScanner,
    usage: Usage,
}

impl UsageTap {
    pub fn new(scanner: UsageScanner) -> UsageTap {
        UsageTap {
            scanner,
            usage: Usage::default(),
        }
    }
}

impl Tap for UsageTap {
    #[inline]
    fn on_data(&mut self, data: &Bytes) {
        self.scanner.observe(data);
    }

    fn on_end(&mut self, _end: End) {
        self.usage = self.scanner.finish();
    }
}

/// Collects a cacheable answer as it streams; stores it only when the
/// body completed. Dropping it unstored releases coalesced waiters.
pub struct FillTap(Option<Fill>);

impl FillTap {
    pub fn new(fill: Fill) -> FillTap {
        FillTap(Some(fill))
    }
}

impl Tap for FillTap {
    #[inline]
    fn on_data(&mut self, data: &Bytes) {
        if let Some(fill) = &mut self.0 {
            fill.observe(data);
        }
    }

    fn on_end(&mut self, end: End) {
        if let Some(fill) = self.0.take()
            && end == End::Complete
        {
            fill.store();
        }
    }
}

/// Collects the primary's answer for the shadows that compare with it, and
/// hands it to them when the body completes. A body cut short, or one cut
/// before its API's final event, is never handed over as complete:
/// dropping the senders tells the shadows there is nothing to compare.
pub struct CompareTap {
    capture: Option<Capture>,
    senders: Comparing,
    api: Option<Api>,
    skips: ApiSkips,
}

impl CompareTap {
    pub fn new(
        capture: Capture,
        senders: Comparing,
        api: Option<Api>,
        skips: ApiSkips,
    ) -> CompareTap {
        CompareTap {
            capture: Some(capture),
            senders,
            api,
            skips,
        }
    }
}

impl Tap for CompareTap {
    #[inline]
    fn on_data(&mut self, data: &Bytes) {
        if let Some(capture) = &mut self.capture {
            capture.observe(data);
        }
    }

    fn on_end(&mut self, end: End) {
        let Some(capture) = self.capture.take() else {
            return;
        };
        if end != End::Complete {
            self.senders.clear();
            return;
        }
        let (compared, skips) = capture.compared(self.api);
        for (skip, n) in skips {
            self.skips.add(SkipUse::Compare, skip, n);
        }
        let answer = match compared {
            Compared::Whole(answer) => Some(Arc::new(answer)),
            // Cut before its API's final event: like a body cut by the
            // transport, there is nothing whole to compare with.
            Compared::Partial => {
                self.senders.clear();
                return;
            }
            Compared::Unreadable => None,
        };
        for tx in self.senders.drain(..) {
            let _ = tx.send(answer.clone());
        }
    }
}

/// What the taps saw, for the logging phase.
#[derive(Debug, Default)]
pub struct Observed {
    pub bytes: u64,
    pub ttfb: Option<Duration>,
    pub usage: Usage,
    /// The usage scanner skipped something it could not read.
    pub usage_skip: Option<Skip>,
}

/// The taps of one response body.
pub struct Taps {
    meter: Meter,
    usage: Option<UsageTap>,
    /// Boxed, as only cached routes and shadowed ones have them: the body,
    /// with its taps, is moved by `memcpy` several times on every request.
    fill: Option<Box<FillTap>>,
    compare: Option<Box<CompareTap>>,
}

impl Taps {
    pub fn new(start: Instant) -> Taps {
        Taps {
            meter: Meter::new(start),
            usage: None,
            fill: None,
            compare: None,
        }
    }

    pub fn usage(&mut self, tap: UsageTap) {
        self.usage = Some(tap);
    }

    pub fn fill(&mut self, tap: FillTap) {
        self.fill = Some(Box::new(tap));
    }

    pub fn compare(&mut self, tap: CompareTap) {
        self.compare = Some(Box::new(tap));
    }

    #[inline]
    pub fn on_data(&mut self, data: &Bytes) {
        self.meter.on_data(data);
        if let Some(t) = &mut self.usage {
            t.on_data(data);
        }
        if let Some(t) = &mut self.fill {
            t.on_data(data);
        }
        if let Some(t) = &mut self.compare {
            t.on_data(data);
        }
    }

    /// Tell every tap how the body ended, and collect what they measured.
    pub fn on_end(&mut self, end: End) -> Observed {
        self.meter.on_end(end);
        let mut observed = Observed {
            bytes: self.meter.bytes,
            ttfb: self.meter.ttfb,
            ..Observed::default()
        };
        if let Some(t) = &mut self.usage {
            t.on_end(end);
            observed.usage = t.usage;
            observed.usage_skip = t.scanner.skipped();
        }
        if let Some(t) = &mut self.fill {
            t.on_end(end);
        }
        if let Some(t) = &mut self.compare {
            t.on_end(end);
        }
        observed
    }
}
