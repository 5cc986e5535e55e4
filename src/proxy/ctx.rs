//! `Ctx`: what is known about one request as it goes through the phases,
//! for the terminal logging phase to write up (src/proxy/log.rs).
//!
//! It holds the facts (route, version, how it was assigned, who answered,
//! the fallback path, what the cache did) and the request's resources
//! (its admission slot, the answering upstream's breaker permit). What
//! watches the response body lives in taps (src/proxy/tap.rs), not here.
//!
//! Every exit path ends in the logging phase exactly once: the response
//! body calls it when it ends, and a `Ctx` dropped without a body (the
//! client hung up while the request waited) is logged by its `Drop`, which
//! lives in `log.rs` so that this module does not depend on it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderValue, Method, Uri};

use super::admit::Admission;
use super::headers::TraceContext;
use crate::api::Api;
use crate::cache::Entry;
use crate::config::Cost;
use crate::gateway::data_plane::DataPlane;
use crate::runtime::{Route, Runtime, Upstream, Version};
use crate::telemetry::{AttemptResult, CacheResult};
use crate::upstream::Permit;

/// How a request assigned its version (SPEC §3): sticky, unsticky, pinned
/// or session. One type with the metric label it counts under.
pub use crate::telemetry::AssignmentKind as Assignment;

/// How a request ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum End {
    Complete,
    /// The upstream's stream broke after the response was committed.
    UpstreamError,
    /// The upstream fell silent for longer than its `idle_timeout`.
    IdleTimeout,
    /// The client went away before the last byte.
    ClientAborted,
}

impl End {
    pub fn as_str(self) -> &'static str {
        match self {
            End::Complete => "complete",
            End::UpstreamError => "upstream_error",
            End::IdleTimeout => "idle_timeout",
            End::ClientAborted => "client_aborted",
        }
    }
}

/// Who produced the response.
pub enum Responder {
    /// Not decided yet (the request is still being handled).
    Pending,
    Upstream(Arc<Upstream>),
    /// Served from the response cache.
    Cache(Arc<Entry>),
    /// Followed an identical miss's answer as it streamed (the leader's
    /// upstream, by name).
    Follower(Arc<str>),
    Refusal,
    /// cutover itself (404, 413, 400).
    Local,
}

/// Time spent in cutover itself, upstream and client waits excluded
/// (`cutover_overhead_seconds`): a stopwatch paused around every wait.
pub struct OverheadClock {
    spent: Duration,
    running_since: Option<Instant>,
}

impl OverheadClock {
    fn started(at: Instant) -> OverheadClock {
        OverheadClock {
            spent: Duration::ZERO,
            running_since: Some(at),
        }
    }

    /// A wait on the client or an upstream begins.
    pub fn pause(&mut self) {
        self.pause_at(Instant::now());
    }

    /// A wait begins at `now`, a reading the caller needed anyway.
    pub fn pause_at(&mut self, now: Instant) {
        if let Some(since) = self.running_since.take() {
            self.spent += now.saturating_duration_since(since);
        }
    }

    /// The wait is over: cutover works again.
    pub fn resume(&mut self) {
        if self.running_since.is_none() {
            self.running_since = Some(Instant::now());
        }
    }

    /// Stop for good at `now` and read it.
    pub fn stop_at(&mut self, now: Instant) -> Duration {
        self.pause_at(now);
        self.spent
    }
}

/// An upstream attempt, kept only for an exported trace.
pub struct AttemptSpan {
    pub target: Arc<str>,
    pub upstream: Arc<str>,
    pub start: SystemTime,
    pub end: SystemTime,
    pub result: AttemptResult,
}

pub struct Ctx {
    pub(super) plane: Arc<DataPlane>,
    pub rt: Arc<Runtime>,
    pub start: Instant,
    pub clock: OverheadClock,
    pub request_id: HeaderValue,
    pub method: Method,
    pub uri: Uri,
    pub route: Option<usize>,
    pub version: Option<usize>,
    pub assignment: Option<Assignment>,
    /// A hash of the sticky key (never the key itself) for the access log.
    pub key_hash: Option<u64>,
    pub responder: Responder,
    pub status: u16,
    /// `v2>v1-backup`: set only once a fallback was taken.
    pub fallback_path: Option<String>,
    /// On caching routes: what the cache did (`x-cutover-cache`).
    pub cache: Option<CacheResult>,
    /// The chosen version's own attempt failed (a fallback may have
    /// answered): what a rollout judges.
    pub own_attempt_failed: bool,
    /// The `cost` of the target (version or fallback) whose upstream
    /// answered: what the tokens are priced at.
    pub served_cost: Option<Cost>,
    /// A slot of `server.max_in_flight`, while the request holds one:
    /// taken by [`Ctx::admit`], given back by [`Ctx::release_admission`]
    /// (the logging phase, and `Drop`, call it).
    admission: Option<Admission>,
    /// The answering upstream's breaker permit: it holds the upstream's
    /// in-flight slot until the stream ends, and reports how it ended.
    pub upstream_slot: Option<Permit>,
    /// Set when this request's trace is exported.
    pub trace: Option<TraceContext>,
    pub attempts: Vec<AttemptSpan>,
    pub(super) logged: bool,
}

impl Ctx {
    pub fn new(
        plane: Arc<DataPlane>,
        rt: Arc<Runtime>,
        request_id: HeaderValue,
        method: Method,
        uri: Uri,
    ) -> Ctx {
        let start = Instant::now();
        Ctx {
            plane,
            rt,
            start,
            clock: OverheadClock::started(start),
            request_id,
            method,
            uri,
            route: None,
            version: None,
            assignment: None,
            key_hash: None,
            responder: Responder::Pending,
            status: 0,
            fallback_path: None,
            cache: None,
            own_attempt_failed: false,
            served_cost: None,
            admission: None,
            upstream_slot: None,
            trace: None,
            attempts: Vec::new(),
            logged: false,
        }
    }

    pub fn plane(&self) -> &Arc<DataPlane> {
        &self.plane
    }

    /// The request path (no query).
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// The model API the request path names, if any.
    pub fn api(&self) -> Option<Api> {
        Api::from_path(self.uri.path())
    }

    pub fn route(&self) -> Option<&Route> {
        self.route.map(|i| &self.rt.routes[i])
    }

    pub fn version(&self) -> Option<&Version> {
        self.route().zip(self.version).map(|(r, v)| &r.versions[v])
    }

    /// Export this request's spans if tracing is on and the trace sampled.
    pub fn trace(&mut self, ctx: TraceContext, parent_sampled: Option<bool>) {
        if let Some(tracer) = &self.plane.tracer
            && tracer.sampled(&ctx.trace_id, parent_sampled)
        {
            self.trace = Some(ctx);
        }
    }

    pub fn tracing(&self) -> bool {
        self.trace.is_some()
    }

    pub fn record_attempt(
        &mut self,
        target: &Arc<str>,
        upstream: &Arc<str>,
        started: SystemTime,
        result: AttemptResult,
    ) {
        if self.trace.is_some() {
            self.attempts.push(AttemptSpan {
                target: Arc::clone(target),
                upstream: Arc::clone(upstream),
                start: started,
                end: SystemTime::now(),
                result,
            });
        }
    }

    /// Take a slot of `server.max_in_flight`; `false` means shed.
    pub fn admit(&mut self) -> bool {
        if self.admission.is_none() {
            let limit = self.rt.config.server.max_in_flight;
            self.admission = Admission::take(&self.plane.in_flight, limit);
        }
        self.admission.is_some()
    }

    /// Give the `max_in_flight` slot back, if held: when the request
    /// ends, or while it only waits (a coalesced miss waiting for the first
    /// one's answer): waiting costs the process almost nothing, and must
    /// not crowd out requests that work. Take one again with
    /// [`Ctx::admit`] before going on.
    pub fn release_admission(&mut self) {
        if let Some(slot) = self.admission.take() {
            slot.release(&self.plane.in_flight);
        }
    }
}
