//! Latency histograms of our own: fixed buckets ([`names::LATENCY_BUCKETS`]),
//! one atomic count per bucket, rendered into `/metrics` after the
//! recorder's output like the float counters.
//!
//! The `metrics` exporter buffers every sample of a histogram until an
//! upkeep (or a scrape) folds it into buckets: a push into a shared
//! lock-free list per sample, three per request. Here a sample is two
//! relaxed atomic operations on a handle resolved when the config was
//! compiled: its bucket's count, and the sum. The count is the sum of the
//! buckets, so it needs no atomic of its own.
//!
//! What Prometheus sees is what the exporter wrote: the same names, labels
//! in the same order, `le` bounds printed the same way (`0.001`, `1`,
//! `300`, `+Inf`), cumulative bucket counts, `_sum` in seconds and `_count`.
//! A sample is counted in the first bucket whose bound is not below it, as
//! the exporter does (`le` is inclusive).

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use super::counters::{described, render_labels, write_header};
use super::names::LATENCY_BUCKETS;

/// Buckets with a bound, then `+Inf`.
const SLOTS: usize = LATENCY_BUCKETS.len() + 1;

/// One series' counts.
struct Core {
    /// Per bucket, not cumulative (the rendering accumulates); the last
    /// slot is `+Inf`.
    buckets: [AtomicU64; SLOTS],
    /// The sum of the samples in seconds, as `f64` bits.
    sum: AtomicU64,
}

/// A handle to one histogram series. Clones share the series.
#[derive(Clone)]
pub struct Histogram(Arc<Core>);

impl std::fmt::Debug for Histogram {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Histogram")
            .field("count", &self.count())
            .field("sum", &self.sum())
            .finish()
    }
}

impl Histogram {
    fn new() -> Histogram {
        Histogram(Arc::new(Core {
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
            sum: AtomicU64::new(0f64.to_bits()),
        }))
    }

    /// Record one duration.
    #[inline]
    pub fn record(&self, d: Duration) {
        self.record_secs(d.as_secs_f64());
    }

    /// Record one value in seconds (a NaN or negative value counts in the
    /// first bucket and adds nothing to the sum).
    #[inline]
    pub fn record_secs(&self, secs: f64) {
        let slot = LATENCY_BUCKETS.partition_point(|&bound| bound < secs);
        self.0.buckets[slot].fetch_add(1, Ordering::Relaxed);
        if secs > 0.0 {
            add_f64(&self.0.sum, secs);
        }
    }

    /// Samples recorded so far.
    pub fn count(&self) -> u64 {
        self.0
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .sum()
    }

    /// Their sum, in seconds.
    pub fn sum(&self) -> f64 {
        f64::from_bits(self.0.sum.load(Ordering::Relaxed))
    }

    /// Cumulative counts per bound (the last is `+Inf`), and the sum. The
    /// buckets are read one after the other while requests record, so a
    /// scrape may see a sample in one bucket and not yet in the sum: each
    /// count only grows, which is all Prometheus needs.
    fn snapshot(&self) -> ([u64; SLOTS], f64) {
        let mut cumulative = [0u64; SLOTS];
        let mut acc = 0u64;
        for (out, b) in cumulative.iter_mut().zip(&self.0.buckets) {
            acc = acc.wrapping_add(b.load(Ordering::Relaxed));
            *out = acc;
        }
        (cumulative, self.sum())
    }
}

/// `f64` addition on an `AtomicU64` holding its bits. Uncontended this is
/// one compare-and-swap, the price of a `fetch_add`.
#[inline]
fn add_f64(cell: &AtomicU64, v: f64) {
    let mut current = cell.load(Ordering::Relaxed);
    loop {
        let next = (f64::from_bits(current) + v).to_bits();
        match cell.compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed) {
            Ok(_) => return,
            Err(seen) => current = seen,
        }
    }
}

struct Series {
    name: &'static str,
    /// Rendered once: `route="chat",version="v1"`.
    labels: Box<str>,
    histogram: Histogram,
}

#[derive(Default)]
struct All {
    /// In registration order, which is the rendering order.
    series: Vec<Series>,
    /// (name, labels) → index in `series`.
    index: HashMap<(&'static str, Box<str>), usize>,
}

/// Every histogram of the process. Registration happens when a config
/// generation is compiled (control plane); the same name and labels return
/// the same series, so counts survive reloads (as the exporter's did).
#[derive(Default)]
pub struct HistogramRegistry {
    all: Mutex<All>,
}

pub fn registry() -> &'static HistogramRegistry {
    static REGISTRY: OnceLock<HistogramRegistry> = OnceLock::new();
    REGISTRY.get_or_init(HistogramRegistry::default)
}

impl HistogramRegistry {
    /// The series `name{labels}`, created on first use. Labels keep their
    /// order, as they are written.
    pub fn histogram(&self, name: &'static str, labels: &[(&'static str, &str)]) -> Histogram {
        let key = (name, render_labels(labels));
        let mut all = self.all.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(&i) = all.index.get(&key) {
            return all.series[i].histogram.clone();
        }
        let histogram = Histogram::new();
        let i = all.series.len();
        all.series.push(Series {
            name,
            labels: key.1.clone(),
            histogram: histogram.clone(),
        });
        all.index.insert(key, i);
        histogram
    }

    /// Prometheus text for every histogram, grouped by name.
    pub fn render(&self, out: &mut String) {
        let all = self.all.lock().unwrap_or_else(|p| p.into_inner());
        let series = &all.series;
        let mut names: Vec<&'static str> = series.iter().map(|s| s.name).collect();
        names.sort_unstable();
        names.dedup();
        let bounds = bound_labels();
        for name in names {
            write_header(out, name, described(name), "histogram");
            for s in series.iter().filter(|s| s.name == name) {
                let (cumulative, sum) = s.histogram.snapshot();
                let sep = if s.labels.is_empty() { "" } else { "," };
                for (le, count) in bounds.iter().zip(cumulative) {
                    let _ = writeln!(out, "{name}_bucket{{{}{sep}le=\"{le}\"}} {count}", s.labels);
                }
                let count = cumulative[SLOTS - 1];
                let braces = |out: &mut String, suffix: &str| {
                    out.push_str(name);
                    out.push_str(suffix);
                    if !s.labels.is_empty() {
                        out.push('{');
                        out.push_str(&s.labels);
                        out.push('}');
                    }
                };
                braces(out, "_sum");
                let _ = writeln!(out, " {sum}");
                braces(out, "_count");
                let _ = writeln!(out, " {count}");
            }
        }
    }
}

/// The `le` values as the exporter prints them (`f64`'s `Display`), then
/// `+Inf`.
fn bound_labels() -> &'static [String; SLOTS] {
    static BOUNDS: OnceLock<[String; SLOTS]> = OnceLock::new();
    BOUNDS.get_or_init(|| {
        std::array::from_fn(|i| match LATENCY_BUCKETS.get(i) {
            Some(b) => b.to_string(),
            None => "+Inf".to_string(),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::telemetry::names;

    fn line<'a>(text: &'a str, prefix: &str) -> Option<&'a str> {
        text.lines()
            .find_map(|l| l.strip_prefix(prefix)?.strip_prefix(' '))
    }

    #[test]
    fn buckets_are_inclusive_and_cumulative() {
        let r = HistogramRegistry::default();
        let h = r.histogram(
            names::REQUEST_DURATION_SECONDS,
            &[("route", "chat"), ("version", "v1")],
        );
        h.record(Duration::from_micros(500)); // le 0.001
        h.record(Duration::from_millis(1)); // on the bound: le 0.001
        h.record(Duration::from_millis(3)); // le 0.005
        h.record(Duration::from_secs(301)); // +Inf only
        h.record_secs(f64::NAN); // first bucket, no sum
        let again = r.histogram(
            names::REQUEST_DURATION_SECONDS,
            &[("route", "chat"), ("version", "v1")],
        );
        assert_eq!(again.count(), 5, "the same labels share the series");

        let mut out = String::new();
        r.render(&mut out);
        let b = |le: &str| {
            let prefix = format!(
                "cutover_request_duration_seconds_bucket{{route=\"chat\",version=\"v1\",le=\"{le}\"}}"
            );
            line(&out, &prefix).map(str::to_string)
        };
        assert_eq!(b("0.001").as_deref(), Some("3"), "{out}");
        assert_eq!(b("0.0025").as_deref(), Some("3"));
        assert_eq!(b("0.005").as_deref(), Some("4"));
        assert_eq!(b("1").as_deref(), Some("4"));
        assert_eq!(b("300").as_deref(), Some("4"));
        assert_eq!(b("+Inf").as_deref(), Some("5"));
        let sum: f64 = line(
            &out,
            "cutover_request_duration_seconds_sum{route=\"chat\",version=\"v1\"}",
        )
        .and_then(|v| v.parse().ok())
        .expect("sum");
        assert!((sum - 301.0045).abs() < 1e-9, "{sum}");
        assert_eq!(
            line(
                &out,
                "cutover_request_duration_seconds_count{route=\"chat\",version=\"v1\"}"
            ),
            Some("5")
        );
        assert!(out.contains("# TYPE cutover_request_duration_seconds histogram"));
        assert!(out.contains("# HELP cutover_request_duration_seconds Time from request start"));
    }

    #[test]
    fn series_group_by_name_with_one_header_each() {
        let r = HistogramRegistry::default();
        r.histogram(names::OVERHEAD_SECONDS, &[("route", "b")])
            .record(Duration::from_millis(2));
        r.histogram(names::OVERHEAD_SECONDS, &[("route", "a\"q")]);
        r.histogram(names::TIME_TO_FIRST_BYTE_SECONDS, &[]);
        let mut out = String::new();
        r.render(&mut out);
        assert_eq!(
            out.matches("# TYPE cutover_overhead_seconds histogram")
                .count(),
            1
        );
        assert!(out.contains("cutover_overhead_seconds_bucket{route=\"a\\\"q\",le=\"+Inf\"} 0"));
        assert!(out.contains("cutover_time_to_first_byte_seconds_bucket{le=\"0.001\"} 0"));
        assert!(out.contains("cutover_time_to_first_byte_seconds_count 0"));
        // 18 bounds and +Inf, then _sum and _count, per series.
        assert_eq!(out.lines().filter(|l| !l.starts_with('#')).count(), 3 * 21);
    }
}
