//! Telemetry: metric names (one place), per-generation metric handles, and
//! the non-blocking access log.
//!
//! Label values only ever come from config names (route, version, upstream)
//! or from closed sets (status class), so no client input can mint a series.

pub mod access_log;
pub mod counters;
pub mod feedback_index;
pub mod float;
pub mod histogram;
pub mod metrics;
pub mod names;
pub mod otlp;
pub mod rollout_gauges;
pub mod usage;

pub use access_log::{AccessLog, AccessRecord};
pub use metrics::{
    ApiSkips, AssignmentKind, AttemptResult, CacheMetrics, CacheResult, Outcome, OutcomeSink,
    OutcomeSource, RefusalReason, RouteMetrics, ShadowMetrics, ShadowResult, SkipUse, StatusClass,
    UpstreamMetrics, VersionMetrics, install_recorder,
};
pub use usage::{Usage, UsageScanner};

/// The whole `/metrics` text: the recorder's series, then the counter
/// blocks, the float counters, the latency histograms and the rollout
/// gauges.
pub fn render(handle: &metrics_exporter_prometheus::PrometheusHandle) -> String {
    let mut out = handle.render();
    counters::registry().render(&mut out);
    float::registry().render(&mut out);
    histogram::registry().render(&mut out);
    rollout_gauges::registry().render(&mut out);
    out
}
