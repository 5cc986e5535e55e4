//! `Exchange`: everything known about one request, finished exactly once.
//!
//! Like Pingora's `logging` phase, every exit path, errors included, ends
//! in `finish`: it records the metrics, writes the access-log line and
//! releases the in-flight slot. If a request is abandoned before a body
//! takes the exchange over (the client hung up while waiting), `Drop` does
//! it.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use http::{HeaderValue, Method, Uri};

use bytes::Bytes;

use super::headers::TraceContext;
use crate::config::Cost;
use crate::gateway::Gateway;
use crate::rollout::Observation;
use crate::runtime::{Route, Runtime, Upstream};
use crate::telemetry::otlp::Span;
use tokio::sync::oneshot;

use super::mirror::PrimaryAnswer;
use crate::api::Api;
use crate::cache::{Entry, Fill};
use crate::shadow::compare::Capture;
use crate::telemetry::{
    AccessRecord, AttemptResult, CacheResult, SkipUse, UsageScanner, api_skipped,
};
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
    fn as_str(self) -> &'static str {
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

pub struct Exchange {
    gateway: Arc<Gateway>,
    pub rt: Arc<Runtime>,
    start: Instant,
    pub request_id: HeaderValue,
    method: Method,
    uri: Uri,
    pub route: Option<usize>,
    pub version: Option<usize>,
    pub assignment: Option<Assignment>,
    pub key_hash: Option<u64>,
    pub responder: Responder,
    pub status: u16,
    /// `v2>v1-backup`: set only once a fallback was taken.
    pub fallback_path: Option<String>,
    ttfb: Option<Duration>,
    bytes: u64,
    /// Holds a slot of `server.max_in_flight`.
    admitted: bool,
    /// The responding upstream's breaker permit: it holds the in-flight
    /// slot until the stream ends, and reports how it ended.
    pub upstream_slot: Option<Permit>,
    /// Reads token usage from the response as it streams.
    pub usage: UsageScanner,
    /// The `cost` of the target (version or fallback) whose upstream
    /// answered: what the tokens are priced at.
    pub served_cost: Option<Cost>,
    /// On caching routes: what the cache did (`x-cutover-cache`).
    pub cache: Option<CacheResult>,
    /// Collects a cacheable response as it streams; stored only if the
    /// stream completes.
    pub fill: Option<Fill>,
    /// Collects the response for shadows that compare, and the channels
    /// that hand them the result when the response completes.
    pub capture: Option<Capture>,
    pub compare_tx: Vec<oneshot::Sender<PrimaryAnswer>>,
    /// The chosen version's own attempt failed (a fallback may have
    /// answered): what a rollout judges.
    pub own_attempt_failed: bool,
    /// Time spent in cutover itself so far, and when the current stretch
    /// of it began (`None` while waiting on the client or an upstream).
    overhead: Duration,
    working_since: Option<Instant>,
    /// Set when this request's trace is exported.
    trace: Option<TraceContext>,
    /// Upstream attempts, kept only for an exported trace.
    attempts: Vec<AttemptSpan>,
    finished: bool,
}

struct AttemptSpan {
    target: Arc<str>,
    upstream: Arc<str>,
    start: SystemTime,
    end: SystemTime,
    result: AttemptResult,
}

impl Exchange {
    pub fn new(
        gateway: Arc<Gateway>,
        rt: Arc<Runtime>,
        request_id: HeaderValue,
        method: Method,
        uri: Uri,
    ) -> Exchange {
        let start = Instant::now();
        Exchange {
            gateway,
            rt,
            start,
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
            ttfb: None,
            bytes: 0,
            admitted: false,
            upstream_slot: None,
            usage: UsageScanner::off(),
            served_cost: None,
            cache: None,
            fill: None,
            capture: None,
            compare_tx: Vec::new(),
            own_attempt_failed: false,
            overhead: Duration::ZERO,
            working_since: Some(start),
            trace: None,
            attempts: Vec::new(),
            finished: false,
        }
    }

    /// A wait on the client or an upstream begins: stop the overhead clock.
    pub fn wait(&mut self) {
        if let Some(since) = self.working_since.take() {
            self.overhead += since.elapsed();
        }
    }

    /// The wait is over: cutover works again.
    pub fn work(&mut self) {
        if self.working_since.is_none() {
            self.working_since = Some(Instant::now());
        }
    }

    pub fn gateway(&self) -> &Gateway {
        &self.gateway
    }

    pub fn gateway_arc(&self) -> Arc<Gateway> {
        Arc::clone(&self.gateway)
    }

    /// Export this request's spans if tracing is on and the trace sampled.
    pub fn trace(&mut self, ctx: TraceContext, parent_sampled: Option<bool>) {
        if let Some(tracer) = &self.gateway.tracer
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

    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }

    /// The request path (no query).
    pub fn path(&self) -> &str {
        self.uri.path()
    }

    /// The model API the request path names, if any.
    pub fn api(&self) -> Option<Api> {
        Api::from_path(self.uri.path())
    }

    fn route_name(&self) -> Option<&str> {
        self.route.map(|i| &*self.rt.routes[i].name)
    }

    /// Take a slot of `server.max_in_flight`; `false` means shed.
    pub fn admit(&mut self, limit: usize) -> bool {
        let prev = self.gateway.in_flight.fetch_add(1, Ordering::AcqRel);
        if prev >= limit {
            self.gateway.in_flight.fetch_sub(1, Ordering::AcqRel);
            return false;
        }
        self.admitted = true;
        true
    }

    /// Give the `max_in_flight` slot back while this request only waits
    /// (a coalesced miss waiting for the first one's answer): waiting costs
    /// the process almost nothing, and must not crowd out requests that
    /// work. Take one again with [`Exchange::admit`] before going on.
    pub fn release_admission(&mut self) {
        if std::mem::take(&mut self.admitted) {
            self.gateway.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
    }

    #[inline]
    pub fn on_data(&mut self, data: &Bytes) {
        if self.ttfb.is_none() && !data.is_empty() {
            self.ttfb = Some(self.start.elapsed());
        }
        self.bytes += data.len() as u64;
        self.usage.observe(data);
        if let Some(fill) = &mut self.fill {
            fill.observe(data);
        }
        if let Some(capture) = &mut self.capture {
            capture.observe(data);
        }
    }

    /// Start collecting the response for the shadows that compare, if any
    /// wait for it.
    pub fn begin_capture(&mut self, content_type: Option<&HeaderValue>) {
        if !self.compare_tx.is_empty() {
            self.capture = Some(Capture::for_content_type(content_type));
        }
    }

    /// Hand the finished primary answer to the comparing shadows (complete
    /// responses only), and store a complete cacheable response.
    fn settle(&mut self, end: End) {
        let fill = self.fill.take();
        let capture = self.capture.take();
        if end != End::Complete {
            // Dropping the fill releases coalesced waiters; dropping the
            // senders tells the shadows there is nothing to compare.
            self.compare_tx.clear();
            return;
        }
        if let Some(fill) = fill {
            fill.store();
        }
        if let Some(capture) = capture {
            let read = capture.read(self.api());
            if let Some(route) = self.route_name() {
                for (skip, n) in read.skips() {
                    api_skipped(route, SkipUse::Compare, skip, n);
                }
            }
            let answer = match read.document {
                Ok(doc) if doc.complete => Some(Arc::new(doc.value)),
                // Cut before its API's final event: like a body cut by the
                // transport, there is nothing whole to compare with.
                Ok(_) => {
                    self.compare_tx.clear();
                    return;
                }
                Err(_) => None,
            };
            for tx in self.compare_tx.drain(..) {
                let _ = tx.send(answer.clone());
            }
        }
        self.compare_tx.clear();
    }

    pub fn finish(&mut self, end: End) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let duration = self.start.elapsed();
        self.wait();
        self.settle(end);
        // A client gone before any status was sent: nginx's 499.
        let status = if self.status == 0 { 499 } else { self.status };
        let rt = &*self.rt;
        let route = self.route.map(|i| &rt.routes[i]);
        let version = route.zip(self.version).map(|(r, v)| &r.versions[v]);

        // A committed attempt is counted when it ends: `ok` unless the
        // upstream broke the stream (a client hanging up is not the
        // upstream's failure).
        if let Responder::Upstream(u) = &self.responder {
            u.metrics.attempt(match end {
                End::Complete | End::ClientAborted => AttemptResult::Ok,
                End::UpstreamError | End::IdleTimeout => AttemptResult::StreamError,
            });
        }
        let usage = self.usage.finish();
        if let (Some(skip), Some(route)) = (self.usage.skipped(), route) {
            api_skipped(&route.name, SkipUse::Usage, skip, 1);
        }
        let mut cost_usd = None;
        if let Some(route) = route {
            let m = version.map_or(&route.unassigned_metrics, |v| &*v.metrics);
            m.request(status);
            m.duration.record(duration);
            if let Some(t) = self.ttfb {
                m.ttfb.record(t);
            }
            if let (Some(v), Responder::Upstream(_)) = (version, &self.responder) {
                // Tokens are priced at the rates of the target that served
                // them (a cheaper-model fallback shows its cheaper price),
                // and counted on the version the user was assigned, so the
                // route's spend stays on it.
                let cost = self.served_cost.as_ref().unwrap_or(&v.target.cost);
                cost_usd = v.metrics.usage(usage, cost);
            }
            route.metrics.overhead.record(self.overhead);
            self.judge(route, end, duration, cost_usd);
        }

        if self.gateway.access_log.enabled() {
            let upstream = match &self.responder {
                Responder::Upstream(u) => &*u.name,
                Responder::Cache(entry) => &*entry.upstream,
                Responder::Follower(upstream) => upstream,
                Responder::Refusal => "refusal",
                Responder::Local | Responder::Pending => "",
            };
            let version_name = version.map_or("", |v| &*v.target.name);
            let rec = AccessRecord {
                kind: "request",
                request_id: self.request_id.to_str().unwrap_or(""),
                method: self.method.as_str(),
                path: self.uri.path(),
                route: route.map_or("", |r| &*r.name),
                version: version_name,
                deps_json: version.map_or("", |v| &*v.target.deps_json),
                upstream,
                assignment: self.assignment.map_or("", Assignment::as_str),
                key_hash: self.key_hash,
                status,
                duration,
                ttfb: self.ttfb,
                bytes: self.bytes,
                cache: self.cache.map_or("", CacheResult::as_str),
                compare: "",
                fallback_path: self.fallback_path.as_deref().unwrap_or(version_name),
                input_tokens: usage.input,
                output_tokens: usage.output,
                cost_usd,
                end: end.as_str(),
            };
            self.gateway.access_log.write(&rec);
        }

        if let (Some(ctx), Some(tracer)) = (self.trace, &self.gateway.tracer) {
            let end_wall = SystemTime::now();
            let start_wall = end_wall - duration;
            let mut attributes = vec![
                (
                    "http.request.method".to_string(),
                    self.method.as_str().to_string(),
                ),
                ("url.path".to_string(), self.uri.path().to_string()),
                ("http.response.status_code".to_string(), status.to_string()),
                (
                    "cutover.request_id".to_string(),
                    self.request_id.to_str().unwrap_or("").to_string(),
                ),
                ("cutover.end".to_string(), end.as_str().to_string()),
            ];
            if let Some(route) = route {
                attributes.push(("cutover.route".to_string(), route.name.to_string()));
            }
            if let Some(v) = version {
                attributes.push(("cutover.version".to_string(), v.target.name.to_string()));
                for (k, val) in &v.target.deps {
                    let text = val.as_str().map_or_else(|| val.to_string(), str::to_string);
                    attributes.push((format!("cutover.deps.{k}"), text));
                }
            }
            if let Some(a) = self.assignment {
                attributes.push(("cutover.assignment".to_string(), a.as_str().to_string()));
            }
            if let Responder::Upstream(u) = &self.responder {
                attributes.push(("cutover.upstream".to_string(), u.name.to_string()));
            }
            tracer.export(Span {
                trace_id: ctx.trace_id,
                span_id: ctx.span_id,
                parent_span_id: ctx.parent_span_id,
                name: "cutover.request",
                kind: 2,
                start: start_wall,
                end: end_wall,
                attributes,
                error: status >= 500 || end != End::Complete,
            });
            for a in self.attempts.drain(..) {
                tracer.export(Span {
                    trace_id: ctx.trace_id,
                    span_id: rand::random::<u64>().max(1).to_be_bytes(),
                    parent_span_id: Some(ctx.span_id),
                    name: "cutover.attempt",
                    kind: 3,
                    start: a.start,
                    end: a.end,
                    attributes: vec![
                        ("cutover.target".to_string(), a.target.to_string()),
                        ("cutover.upstream".to_string(), a.upstream.to_string()),
                        ("cutover.result".to_string(), a.result.as_str().to_string()),
                    ],
                    error: a.result != AttemptResult::Ok,
                });
            }
        }

        if std::mem::take(&mut self.admitted) {
            self.gateway.in_flight.fetch_sub(1, Ordering::AcqRel);
        }
        // The committed attempt's verdict for its breaker, as for the judge:
        // a stream that broke after its first byte is the upstream's
        // failure; a client that left says nothing about the upstream.
        if let Some(permit) = self.upstream_slot.take() {
            match end {
                End::Complete => permit.success(),
                End::UpstreamError | End::IdleTimeout => permit.failure(),
                End::ClientAborted => drop(permit),
            }
        }
    }
}

impl Exchange {
    /// Record this request for the route's rollout, if it is judged: a
    /// baseline or canary request assigned by the split (never pinned),
    /// that reached its version (not a cache hit or a local answer).
    fn judge(&self, route: &Route, end: End, duration: Duration, cost_usd: Option<f64>) {
        let (Some(judging), Some(version)) = (&route.judging, self.version) else {
            return;
        };
        let Some(role) = judging.role(version) else {
            return;
        };
        if self.assignment == Some(Assignment::Pinned) {
            return;
        }
        let own = match &self.responder {
            Responder::Upstream(u) => {
                Arc::ptr_eq(u, &route.versions[version].target.upstream) && !self.own_attempt_failed
            }
            Responder::Refusal => false,
            Responder::Cache(_)
            | Responder::Follower(_)
            | Responder::Local
            | Responder::Pending => return,
        };
        let failed = self.own_attempt_failed
            || (own && matches!(end, End::UpstreamError | End::IdleTimeout));
        if !failed && end == End::ClientAborted {
            // The client left: neither the version's fault nor its latency.
            return;
        }
        judging.stats.record(
            role,
            &Observation {
                failed,
                latency: (own && !failed).then_some(duration),
                cost_usd: if own { cost_usd } else { None },
            },
        );
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        self.finish(End::ClientAborted);
    }
}
