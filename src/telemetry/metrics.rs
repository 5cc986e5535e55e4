//! Metric handles, resolved once per config generation.
//!
//! The `metrics` crate hashes labels on every `counter!()` call; doing that
//! per request would cost more than the rest of the routing. Instead each
//! (route, version) gets its handles when a `Runtime` is compiled, and a
//! request only touches atomics.

use std::sync::{Arc, OnceLock};

use metrics::{Counter, Label};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::float::{self, FloatCounter};
use super::histogram::{self, Histogram};
use super::names;
use super::usage::Usage;
use crate::api::Skip;
use crate::config::Cost;
use crate::rollout::{Role, RolloutStats};

/// Install the Prometheus recorder once per process and return its handle.
/// Later calls (tests run several servers in one process) share it.
pub fn install_recorder() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), names::LATENCY_BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            let recorder = builder.build_recorder();
            let handle = recorder.handle();
            // Fails only if another recorder is installed (an embedding
            // application's): then our handles record into theirs.
            let _ = metrics::set_global_recorder(recorder);
            for (name, help) in names::DESCRIPTIONS {
                metrics::describe_counter!(*name, *help);
            }
            float::registry().describe(names::COST_USD_TOTAL, names::COST_USD_TOTAL_HELP);
            handle
        })
        .clone()
}

/// HTTP status class of a downstream response: the `status` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatusClass {
    C1xx,
    C2xx,
    C3xx,
    C4xx,
    C5xx,
}

impl StatusClass {
    const LABELS: [&'static str; 5] = ["1xx", "2xx", "3xx", "4xx", "5xx"];

    pub fn of(status: u16) -> StatusClass {
        match status {
            0..=199 => StatusClass::C1xx,
            200..=299 => StatusClass::C2xx,
            300..=399 => StatusClass::C3xx,
            400..=499 => StatusClass::C4xx,
            _ => StatusClass::C5xx,
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Handles for one (route, version).
pub struct VersionMetrics {
    requests: [Counter; 5],
    /// By [`AssignmentKind`].
    assignments: [Counter; 4],
    pub duration: Histogram,
    pub ttfb: Histogram,
    input_tokens: Counter,
    output_tokens: Counter,
    cost: FloatCounter,
    /// [source][outcome]: source header|feedback, outcome success|failure.
    outcomes: [[Counter; 2]; 2],
    /// On a rollout's versions: where outcomes also go, for the judge.
    pub judge: Option<(Arc<RolloutStats>, Role)>,
    /// The labels, for the fleet's feedback index (a record names the
    /// version that served it, so another replica can count it).
    pub route: Arc<str>,
    pub version: Arc<str>,
}

/// Where a task outcome came from (the `source` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum OutcomeSource {
    Header,
    Feedback,
}

/// A task outcome (the `outcome` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Success,
    Failure,
}

impl Outcome {
    /// `success` or `failure`, exactly; anything else is not an outcome.
    pub fn parse(v: &[u8]) -> Option<Outcome> {
        match v {
            b"success" => Some(Outcome::Success),
            b"failure" => Some(Outcome::Failure),
            _ => None,
        }
    }
}

impl VersionMetrics {
    pub fn new(route: &str, version: &str) -> VersionMetrics {
        let base = [
            Label::new("route", route.to_string()),
            Label::new("version", version.to_string()),
        ];
        let with = |extra: &[(&'static str, &'static str)]| {
            let mut labels = base.to_vec();
            labels.extend(extra.iter().map(|(k, v)| Label::new(*k, *v)));
            labels
        };
        let requests = StatusClass::LABELS
            .map(|class| metrics::counter!(names::REQUESTS_TOTAL, with(&[("status", class)])));
        let outcome = |source: &'static str, outcome: &'static str| {
            metrics::counter!(
                names::OUTCOMES_TOTAL,
                with(&[("outcome", outcome), ("source", source)])
            )
        };
        VersionMetrics {
            requests,
            assignments: AssignmentKind::LABELS
                .map(|a| metrics::counter!(names::ASSIGNMENTS_TOTAL, with(&[("assignment", a)]))),
            duration: histogram::registry().histogram(
                names::REQUEST_DURATION_SECONDS,
                &[("route", route), ("version", version)],
            ),
            ttfb: histogram::registry().histogram(
                names::TIME_TO_FIRST_BYTE_SECONDS,
                &[("route", route), ("version", version)],
            ),
            input_tokens: metrics::counter!(names::TOKENS_TOTAL, with(&[("kind", "input")])),
            output_tokens: metrics::counter!(names::TOKENS_TOTAL, with(&[("kind", "output")])),
            cost: float::registry().counter(
                names::COST_USD_TOTAL,
                &[("route", route), ("version", version)],
            ),
            outcomes: [
                [outcome("header", "success"), outcome("header", "failure")],
                [
                    outcome("feedback", "success"),
                    outcome("feedback", "failure"),
                ],
            ],
            judge: None,
            route: route.into(),
            version: version.into(),
        }
    }

    /// Count a request assigned to this version.
    #[inline]
    pub fn assigned(&self, kind: AssignmentKind) {
        self.assignments[kind as usize].increment(1);
    }

    #[inline]
    pub fn request(&self, status: u16) {
        self.requests[StatusClass::of(status).index()].increment(1);
    }

    /// Count tokens and their cost; returns the cost in USD.
    pub fn usage(&self, usage: Usage, cost: &Cost) -> Option<f64> {
        if usage.is_empty() {
            return None;
        }
        let input = usage.input.unwrap_or(0);
        let output = usage.output.unwrap_or(0);
        self.input_tokens.increment(input);
        self.output_tokens.increment(output);
        let usd = cost.usd(input, output);
        self.cost.add(usd);
        Some(usd)
    }

    pub fn outcome(&self, source: OutcomeSource, outcome: Outcome) {
        let s = match source {
            OutcomeSource::Header => 0,
            OutcomeSource::Feedback => 1,
        };
        let o = match outcome {
            Outcome::Success => 0,
            Outcome::Failure => 1,
        };
        self.outcomes[s][o].increment(1);
        if let Some((stats, role)) = &self.judge {
            stats.record_outcome(*role, outcome == Outcome::Success);
        }
    }
}

/// Handles for one route.
pub struct RouteMetrics {
    pub overhead: Histogram,
    refusals_exhausted: Counter,
    refusals_overload: Counter,
}

/// Why a refusal was served (the `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalReason {
    Exhausted,
    Overload,
}

impl RouteMetrics {
    pub fn new(route: &str) -> RouteMetrics {
        let refusal = |reason: &'static str| metrics::counter!(names::REFUSALS_TOTAL, "route" => route.to_string(), "reason" => reason);
        RouteMetrics {
            overhead: histogram::registry().histogram(names::OVERHEAD_SECONDS, &[("route", route)]),
            refusals_exhausted: refusal("exhausted"),
            refusals_overload: refusal("overload"),
        }
    }

    pub fn refusal(&self, reason: RefusalReason) {
        match reason {
            RefusalReason::Exhausted => self.refusals_exhausted.increment(1),
            RefusalReason::Overload => self.refusals_overload.increment(1),
        }
    }
}

/// The result of one upstream attempt (the `result` label of
/// `cutover_upstream_requests_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AttemptResult {
    Ok,
    FailureStatus,
    Timeout,
    ConnectError,
    Rejected,
    StreamError,
}

impl AttemptResult {
    pub fn as_str(self) -> &'static str {
        Self::LABELS[self as usize]
    }

    const LABELS: [&'static str; 6] = [
        "ok",
        "failure_status",
        "timeout",
        "connect_error",
        "rejected",
        "stream_error",
    ];
}

/// Handles for one upstream.
pub struct UpstreamMetrics {
    results: [Counter; 6],
    retries_reused: Counter,
}

impl UpstreamMetrics {
    pub fn new(upstream: &str) -> UpstreamMetrics {
        UpstreamMetrics {
            results: AttemptResult::LABELS.map(|result| {
                metrics::counter!(names::UPSTREAM_REQUESTS_TOTAL, "upstream" => upstream.to_string(), "result" => result)
            }),
            retries_reused: metrics::counter!(names::UPSTREAM_RETRIES_TOTAL, "upstream" => upstream.to_string(), "reason" => "reused_closed"),
        }
    }

    /// A request sent again on a new connection after its reused one
    /// closed before any response byte (`retry_reused`).
    #[inline]
    pub fn retry_reused(&self) {
        self.retries_reused.increment(1);
    }

    #[inline]
    pub fn attempt(&self, result: AttemptResult) {
        self.results[result as usize].increment(1);
    }
}

/// How a mirror ended (the `result` label of `cutover_shadow_requests_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ShadowResult {
    Ok,
    /// Connect error, timeout, a failure status of its upstream, a broken
    /// stream or a breaker rejection: the §5 definition of a failed attempt.
    Failure,
    /// Not sent: the shadow's `max_in_flight` was full.
    Dropped,
}

impl ShadowResult {
    pub fn as_str(self) -> &'static str {
        Self::LABELS[self as usize]
    }

    const LABELS: [&'static str; 3] = ["ok", "failure", "dropped"];
}

/// Handles for one (route, shadow).
pub struct ShadowMetrics {
    results: [Counter; 3],
    pub duration: Histogram,
    compare: [Counter; 2],
    input_tokens: Counter,
    output_tokens: Counter,
    cost: FloatCounter,
}

impl ShadowMetrics {
    pub fn new(route: &str, shadow: &str) -> ShadowMetrics {
        let labels = |extra: Option<(&'static str, &'static str)>| {
            let mut l = vec![
                Label::new("route", route.to_string()),
                Label::new("shadow", shadow.to_string()),
            ];
            l.extend(extra.map(|(k, v)| Label::new(k, v)));
            l
        };
        float::registry().describe(
            names::SHADOW_COST_USD_TOTAL,
            names::SHADOW_COST_USD_TOTAL_HELP,
        );
        ShadowMetrics {
            results: ShadowResult::LABELS.map(|r| {
                metrics::counter!(names::SHADOW_REQUESTS_TOTAL, labels(Some(("result", r))))
            }),
            duration: histogram::registry().histogram(
                names::SHADOW_DURATION_SECONDS,
                &[("route", route), ("shadow", shadow)],
            ),
            compare: ["match", "mismatch"].map(|r| {
                metrics::counter!(names::SHADOW_COMPARE_TOTAL, labels(Some(("result", r))))
            }),
            input_tokens: metrics::counter!(
                names::SHADOW_TOKENS_TOTAL,
                labels(Some(("kind", "input")))
            ),
            output_tokens: metrics::counter!(
                names::SHADOW_TOKENS_TOTAL,
                labels(Some(("kind", "output")))
            ),
            cost: float::registry().counter(
                names::SHADOW_COST_USD_TOTAL,
                &[("route", route), ("shadow", shadow)],
            ),
        }
    }

    #[inline]
    pub fn result(&self, result: ShadowResult) {
        self.results[result as usize].increment(1);
    }

    pub fn compared(&self, matched: bool) {
        self.compare[usize::from(!matched)].increment(1);
    }

    /// Count tokens and their cost; returns the cost in USD.
    pub fn usage(&self, usage: Usage, cost: &Cost) -> Option<f64> {
        if usage.is_empty() {
            return None;
        }
        let input = usage.input.unwrap_or(0);
        let output = usage.output.unwrap_or(0);
        self.input_tokens.increment(input);
        self.output_tokens.increment(output);
        let usd = cost.usd(input, output);
        self.cost.add(usd);
        Some(usd)
    }
}

/// How a request's version was chosen (SPEC §3): the `assignment` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AssignmentKind {
    Sticky,
    Unsticky,
    Pinned,
    Session,
}

impl AssignmentKind {
    pub const LABELS: [&'static str; 4] = ["sticky", "unsticky", "pinned", "session"];

    pub fn as_str(self) -> &'static str {
        Self::LABELS[self as usize]
    }
}

/// What read a response body when it skipped something (the `use` label
/// of `cutover_api_skipped_total`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SkipUse {
    Usage,
    Compare,
}

impl SkipUse {
    pub fn as_str(self) -> &'static str {
        match self {
            SkipUse::Usage => "usage",
            SkipUse::Compare => "compare",
        }
    }
}

/// Count what usage reading or compare skipped. Only bad input gets here,
/// so the labels are resolved per call rather than kept as handles.
pub fn api_skipped(route: &str, used_by: SkipUse, skip: Skip, n: u64) {
    if n == 0 {
        return;
    }
    metrics::counter!(
        names::API_SKIPPED_TOTAL,
        "route" => route.to_string(),
        "use" => used_by.as_str(),
        "reason" => skip.as_str()
    )
    .increment(n);
}

/// Handles for one route's cache results.
pub struct CacheMetrics {
    results: [Counter; 3],
}

/// What the cache did for a request (`x-cutover-cache`, the `result` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CacheResult {
    Hit,
    Miss,
    Bypass,
}

impl CacheResult {
    pub fn as_str(self) -> &'static str {
        Self::LABELS[self as usize]
    }

    pub fn header(self) -> http::HeaderValue {
        http::HeaderValue::from_static(self.as_str())
    }

    const LABELS: [&'static str; 3] = ["hit", "miss", "bypass"];
}

impl CacheMetrics {
    pub fn new(route: &str) -> CacheMetrics {
        CacheMetrics {
            results: CacheResult::LABELS.map(|r| {
                metrics::counter!(names::CACHE_REQUESTS_TOTAL, "route" => route.to_string(), "result" => r)
            }),
        }
    }

    #[inline]
    pub fn result(&self, result: CacheResult) {
        self.results[result as usize].increment(1);
    }
}
