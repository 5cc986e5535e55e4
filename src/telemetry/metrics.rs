//! Metric handles, resolved once per config generation.
//!
//! The `metrics` crate hashes labels on every `counter!()` call; doing that
//! per request would cost more than the rest of the routing. Instead each
//! (route, version) gets its handles when a `Runtime` is compiled, and a
//! request only touches atomics.

use std::sync::OnceLock;

use metrics::{Counter, Histogram, Label};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use super::names;

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
    pub duration: Histogram,
    pub ttfb: Histogram,
}

impl VersionMetrics {
    pub fn new(route: &str, version: &str) -> VersionMetrics {
        let base = [
            Label::new("route", route.to_string()),
            Label::new("version", version.to_string()),
        ];
        let requests = StatusClass::LABELS.map(|class| {
            let mut labels = base.to_vec();
            labels.push(Label::new("status", class));
            metrics::counter!(names::REQUESTS_TOTAL, labels)
        });
        VersionMetrics {
            requests,
            duration: metrics::histogram!(names::REQUEST_DURATION_SECONDS, base.to_vec()),
            ttfb: metrics::histogram!(names::TIME_TO_FIRST_BYTE_SECONDS, base.to_vec()),
        }
    }

    #[inline]
    pub fn request(&self, status: u16) {
        self.requests[StatusClass::of(status).index()].increment(1);
    }
}
