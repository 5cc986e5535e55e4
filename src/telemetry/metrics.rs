//! Metric handles, resolved once per config generation.
//!
//! The `metrics` crate hashes labels on every `counter!()` call; doing that
//! per request would cost more than the rest of the routing. Instead each
//! (route, version) gets its handles when a `Runtime` is compiled, and a
//! request only touches atomics.

use std::sync::{Arc, OnceLock};

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::counters::{self, Counters, Layout};
use super::float::{self, FloatCounter};
use super::histogram::{self, Histogram};
use super::names;
use super::usage::Usage;
use crate::api::Skip;
use crate::config::Cost;

/// The counters of rare events (a reload, a fallback, a rollback, a
/// skipped `set_json`): labelled where they happen, not held per
/// generation. Each is spelled here once,
/// for the event and for the series a config creates at 0.
pub mod rare {
    use metrics::Counter;

    use super::names;

    /// `cutover_config_reloads_total{result}`.
    pub fn config_reloads(ok: bool) -> Counter {
        let result = if ok { "ok" } else { "error" };
        metrics::counter!(names::CONFIG_RELOADS_TOTAL, "result" => result)
    }

    /// `cutover_fallbacks_total{route,from,to}`: one step of a chain.
    pub fn fallbacks(route: &str, from: &str, to: &str) -> Counter {
        metrics::counter!(
            names::FALLBACKS_TOTAL,
            "route" => route.to_string(),
            "from" => from.to_string(),
            "to" => to.to_string()
        )
    }

    /// `cutover_set_json_skipped_total{route,target}`: a body forwarded
    /// unchanged because it was not a JSON object.
    pub fn set_json_skipped(route: &str, target: &str) -> Counter {
        metrics::counter!(
            names::SET_JSON_SKIPPED_TOTAL,
            "route" => route.to_string(),
            "target" => target.to_string()
        )
    }

    /// `cutover_rollbacks_total{route,reason}`.
    pub fn rollbacks(route: &str, reason: &'static str) -> Counter {
        metrics::counter!(names::ROLLBACKS_TOTAL, "route" => route.to_string(), "reason" => reason)
    }
}

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
    #[cfg(test)]
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

/// Where a version's task outcomes go besides its counters: on a rollout's
/// versions, the judge's statistics. The rollout implements it, so
/// telemetry does not import the rollout.
pub trait OutcomeSink: Send + Sync {
    fn outcome(&self, outcome: Outcome);
}

/// Handles for one (route, version).
pub struct VersionMetrics {
    /// Requests by status class, assignments, tokens and outcomes: see
    /// [`VERSION_LAYOUT`].
    counters: Counters,
    pub duration: Histogram,
    pub ttfb: Histogram,
    cost: FloatCounter,
    /// On a rollout's versions: where outcomes also go, for the judge.
    pub outcome_sink: Option<Arc<dyn OutcomeSink>>,
    /// The labels, for the fleet's feedback index (a record names the
    /// version that served it, so another replica can count it).
    pub route: Arc<str>,
    pub version: Arc<str>,
}

/// The counters of one (route, version), after its `route` and `version`
/// labels.
static VERSION_LAYOUT: Layout = Layout {
    families: &[
        (
            names::REQUESTS_TOTAL,
            &[
                "status=\"1xx\"",
                "status=\"2xx\"",
                "status=\"3xx\"",
                "status=\"4xx\"",
                "status=\"5xx\"",
            ],
        ),
        // By [`AssignmentKind`].
        (
            names::ASSIGNMENTS_TOTAL,
            &[
                "assignment=\"sticky\"",
                "assignment=\"unsticky\"",
                "assignment=\"pinned\"",
                "assignment=\"session\"",
            ],
        ),
        (names::TOKENS_TOTAL, &["kind=\"input\"", "kind=\"output\""]),
        // [source][outcome]: source header|feedback, outcome success|failure.
        (
            names::OUTCOMES_TOTAL,
            &[
                "outcome=\"success\",source=\"header\"",
                "outcome=\"failure\",source=\"header\"",
                "outcome=\"success\",source=\"feedback\"",
                "outcome=\"failure\",source=\"feedback\"",
            ],
        ),
    ],
};
const REQUESTS: usize = VERSION_LAYOUT.offset(names::REQUESTS_TOTAL);
const ASSIGNMENTS: usize = VERSION_LAYOUT.offset(names::ASSIGNMENTS_TOTAL);
const TOKENS: usize = VERSION_LAYOUT.offset(names::TOKENS_TOTAL);
const OUTCOMES: usize = VERSION_LAYOUT.offset(names::OUTCOMES_TOTAL);

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
        let labels = [("route", route), ("version", version)];
        VersionMetrics {
            counters: counters::registry().block(&VERSION_LAYOUT, &labels),
            duration: histogram::registry().histogram(names::REQUEST_DURATION_SECONDS, &labels),
            ttfb: histogram::registry().histogram(names::TIME_TO_FIRST_BYTE_SECONDS, &labels),
            cost: float::registry().counter(names::COST_USD_TOTAL, &labels),
            outcome_sink: None,
            route: route.into(),
            version: version.into(),
        }
    }

    /// Count a request assigned to this version.
    #[inline]
    pub fn assigned(&self, kind: AssignmentKind) {
        self.counters.add(ASSIGNMENTS + kind as usize, 1);
    }

    #[inline]
    pub fn request(&self, status: u16) {
        self.counters
            .add(REQUESTS + StatusClass::of(status).index(), 1);
    }

    /// Count tokens and their cost; returns the cost in USD.
    pub fn usage(&self, usage: Usage, cost: &Cost) -> Option<f64> {
        if usage.is_empty() {
            return None;
        }
        let input = usage.input.unwrap_or(0);
        let output = usage.output.unwrap_or(0);
        self.counters.add(TOKENS, input);
        self.counters.add(TOKENS + 1, output);
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
        self.counters.add(OUTCOMES + s * 2 + o, 1);
        if let Some(sink) = &self.outcome_sink {
            sink.outcome(outcome);
        }
    }
}

/// Handles for one route.
pub struct RouteMetrics {
    pub overhead: Histogram,
    /// Refusals by [`RefusalReason`], then what usage reading and compare
    /// skipped (see [`ApiSkips`]).
    counters: Counters,
}

static ROUTE_LAYOUT: Layout = Layout {
    families: &[
        (
            names::REFUSALS_TOTAL,
            &["reason=\"exhausted\"", "reason=\"overload\""],
        ),
        // [use][reason]: by [`SkipUse`], then by [`Skip`].
        (
            names::API_SKIPPED_TOTAL,
            &[
                "use=\"usage\",reason=\"malformed\"",
                "use=\"usage\",reason=\"wrong_shape\"",
                "use=\"usage\",reason=\"unknown_event\"",
                "use=\"usage\",reason=\"incomplete\"",
                "use=\"usage\",reason=\"error_event\"",
                "use=\"compare\",reason=\"malformed\"",
                "use=\"compare\",reason=\"wrong_shape\"",
                "use=\"compare\",reason=\"unknown_event\"",
                "use=\"compare\",reason=\"incomplete\"",
                "use=\"compare\",reason=\"error_event\"",
            ],
        ),
    ],
};

const SKIPPED: usize = ROUTE_LAYOUT.offset(names::API_SKIPPED_TOTAL);

/// Why a refusal was served (the `reason` label).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RefusalReason {
    Exhausted,
    Overload,
}

impl RouteMetrics {
    pub fn new(route: &str) -> RouteMetrics {
        let labels = [("route", route)];
        RouteMetrics {
            overhead: histogram::registry().histogram(names::OVERHEAD_SECONDS, &labels),
            counters: counters::registry().block(&ROUTE_LAYOUT, &labels),
        }
    }

    /// This route's `cutover_api_skipped_total`, as a handle a response's
    /// taps and a mirror task can keep.
    pub fn skips(&self) -> ApiSkips {
        ApiSkips(self.counters.clone())
    }

    #[inline]
    pub fn skipped(&self, used_by: SkipUse, skip: Skip, n: u64) {
        self.counters.add(ApiSkips::slot(used_by, skip), n);
    }

    pub fn refusal(&self, reason: RefusalReason) {
        self.counters.add(
            match reason {
                RefusalReason::Exhausted => 0,
                RefusalReason::Overload => 1,
            },
            1,
        );
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
    /// Attempts by [`AttemptResult`], then retries on a reused connection.
    counters: Counters,
}

static UPSTREAM_LAYOUT: Layout = Layout {
    families: &[
        (
            names::UPSTREAM_REQUESTS_TOTAL,
            &[
                "result=\"ok\"",
                "result=\"failure_status\"",
                "result=\"timeout\"",
                "result=\"connect_error\"",
                "result=\"rejected\"",
                "result=\"stream_error\"",
            ],
        ),
        (names::UPSTREAM_RETRIES_TOTAL, &["reason=\"reused_closed\""]),
    ],
};
const RETRIES: usize = UPSTREAM_LAYOUT.offset(names::UPSTREAM_RETRIES_TOTAL);

impl UpstreamMetrics {
    pub fn new(upstream: &str) -> UpstreamMetrics {
        UpstreamMetrics {
            counters: counters::registry().block(&UPSTREAM_LAYOUT, &[("upstream", upstream)]),
        }
    }

    /// A request sent again on a new connection after its reused one
    /// closed before any response byte (`retry_reused`).
    #[inline]
    pub fn retry_reused(&self) {
        self.counters.add(RETRIES, 1);
    }

    #[inline]
    pub fn attempt(&self, result: AttemptResult) {
        self.counters.add(result as usize, 1);
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
    /// Results by [`ShadowResult`], compare results, tokens.
    counters: Counters,
    pub duration: Histogram,
    cost: FloatCounter,
}

static SHADOW_LAYOUT: Layout = Layout {
    families: &[
        (
            names::SHADOW_REQUESTS_TOTAL,
            &["result=\"ok\"", "result=\"failure\"", "result=\"dropped\""],
        ),
        (
            names::SHADOW_COMPARE_TOTAL,
            &["result=\"match\"", "result=\"mismatch\""],
        ),
        (
            names::SHADOW_TOKENS_TOTAL,
            &["kind=\"input\"", "kind=\"output\""],
        ),
    ],
};
const COMPARE: usize = SHADOW_LAYOUT.offset(names::SHADOW_COMPARE_TOTAL);
const SHADOW_TOKENS: usize = SHADOW_LAYOUT.offset(names::SHADOW_TOKENS_TOTAL);

impl ShadowMetrics {
    pub fn new(route: &str, shadow: &str) -> ShadowMetrics {
        let labels = [("route", route), ("shadow", shadow)];
        float::registry().describe(
            names::SHADOW_COST_USD_TOTAL,
            names::SHADOW_COST_USD_TOTAL_HELP,
        );
        ShadowMetrics {
            counters: counters::registry().block(&SHADOW_LAYOUT, &labels),
            duration: histogram::registry().histogram(names::SHADOW_DURATION_SECONDS, &labels),
            cost: float::registry().counter(names::SHADOW_COST_USD_TOTAL, &labels),
        }
    }

    #[inline]
    pub fn result(&self, result: ShadowResult) {
        self.counters.add(result as usize, 1);
    }

    pub fn compared(&self, matched: bool) {
        self.counters.add(COMPARE + usize::from(!matched), 1);
    }

    /// Count tokens and their cost; returns the cost in USD.
    pub fn usage(&self, usage: Usage, cost: &Cost) -> Option<f64> {
        if usage.is_empty() {
            return None;
        }
        let input = usage.input.unwrap_or(0);
        let output = usage.output.unwrap_or(0);
        self.counters.add(SHADOW_TOKENS, input);
        self.counters.add(SHADOW_TOKENS + 1, output);
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
    #[cfg(test)]
    const LABELS: [&'static str; 2] = ["usage", "compare"];
}

/// One route's `cutover_api_skipped_total`. A handle, like the others: an
/// upstream that answers a compared shadow in a type we cannot read skips
/// on every request, so this is a hot path too.
#[derive(Clone)]
pub struct ApiSkips(Counters);

impl ApiSkips {
    #[inline]
    pub fn add(&self, used_by: SkipUse, skip: Skip, n: u64) {
        self.0.add(Self::slot(used_by, skip), n);
    }

    fn slot(used_by: SkipUse, skip: Skip) -> usize {
        SKIPPED + used_by as usize * Skip::LABELS.len() + skip as usize
    }
}

/// Handles for one route's cache results.
pub struct CacheMetrics {
    /// By [`CacheResult`].
    results: Counters,
}

static CACHE_LAYOUT: Layout = Layout {
    families: &[(
        names::CACHE_REQUESTS_TOTAL,
        &["result=\"hit\"", "result=\"miss\"", "result=\"bypass\""],
    )],
};

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
            results: counters::registry().block(&CACHE_LAYOUT, &[("route", route)]),
        }
    }

    #[inline]
    pub fn result(&self, result: CacheResult) {
        self.results.add(result as usize, 1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The layouts spell out each series' labels: they must be the enums'
    /// labels in the enums' order, since a handle counts at `enum as usize`.
    #[test]
    fn layouts_follow_the_enums() {
        fn series(layout: &Layout, family: &str) -> Vec<String> {
            let (_, s) = layout
                .families
                .iter()
                .find(|(n, _)| *n == family)
                .expect("family");
            s.iter().map(|x| x.to_string()).collect()
        }
        let quoted = |key: &str, labels: &[&str]| -> Vec<String> {
            labels.iter().map(|l| format!("{key}=\"{l}\"")).collect()
        };
        assert_eq!(
            series(&VERSION_LAYOUT, names::REQUESTS_TOTAL),
            quoted("status", &StatusClass::LABELS)
        );
        assert_eq!(
            series(&VERSION_LAYOUT, names::ASSIGNMENTS_TOTAL),
            quoted("assignment", &AssignmentKind::LABELS)
        );
        assert_eq!(
            series(&UPSTREAM_LAYOUT, names::UPSTREAM_REQUESTS_TOTAL),
            quoted("result", &AttemptResult::LABELS)
        );
        assert_eq!(
            series(&SHADOW_LAYOUT, names::SHADOW_REQUESTS_TOTAL),
            quoted("result", &ShadowResult::LABELS)
        );
        assert_eq!(
            series(&CACHE_LAYOUT, names::CACHE_REQUESTS_TOTAL),
            quoted("result", &CacheResult::LABELS)
        );
        let skips: Vec<String> = SkipUse::LABELS
            .iter()
            .flat_map(|u| {
                Skip::LABELS
                    .iter()
                    .map(move |r| format!("use=\"{u}\",reason=\"{r}\""))
            })
            .collect();
        assert_eq!(series(&ROUTE_LAYOUT, names::API_SKIPPED_TOTAL), skips);
        assert_eq!(StatusClass::of(204).index(), 1);
    }

    #[test]
    fn handles_count_into_their_series() {
        let m = VersionMetrics::new("layout-test", "v1");
        m.request(503);
        m.assigned(AssignmentKind::Pinned);
        m.outcome(OutcomeSource::Feedback, Outcome::Failure);
        let r = RouteMetrics::new("layout-test");
        r.skipped(SkipUse::Compare, Skip::Incomplete, 2);
        r.skips().add(SkipUse::Usage, Skip::ErrorEvent, 1);
        let mut out = String::new();
        counters::registry().render(&mut out);
        for line in [
            "cutover_requests_total{route=\"layout-test\",version=\"v1\",status=\"5xx\"} 1",
            "cutover_assignments_total{route=\"layout-test\",version=\"v1\",assignment=\"pinned\"} 1",
            "cutover_outcomes_total{route=\"layout-test\",version=\"v1\",outcome=\"failure\",source=\"feedback\"} 1",
            "cutover_outcomes_total{route=\"layout-test\",version=\"v1\",outcome=\"success\",source=\"feedback\"} 0",
            "cutover_api_skipped_total{route=\"layout-test\",use=\"compare\",reason=\"incomplete\"} 2",
            "cutover_api_skipped_total{route=\"layout-test\",use=\"usage\",reason=\"error_event\"} 1",
            "cutover_api_skipped_total{route=\"layout-test\",use=\"usage\",reason=\"incomplete\"} 0",
        ] {
            assert!(out.lines().any(|l| l == line), "{line} not in\n{out}");
        }
    }
}
