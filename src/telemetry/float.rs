//! Counters of fractional values (USD), which the `metrics` crate cannot
//! hold (its counters are integers). Each is an `f64` in an `AtomicU64`,
//! added to with a compare-and-swap loop, and rendered into `/metrics`
//! after the recorder's own output, typed as a Prometheus counter.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};

use super::counters::{write_header, write_labels};

#[derive(Clone, Debug)]
pub struct FloatCounter(Arc<AtomicU64>);

impl FloatCounter {
    #[inline]
    pub fn add(&self, v: f64) {
        if !(v.is_finite() && v > 0.0) {
            return;
        }
        let mut current = self.0.load(Ordering::Relaxed);
        loop {
            let next = (f64::from_bits(current) + v).to_bits();
            match self
                .0
                .compare_exchange_weak(current, next, Ordering::Relaxed, Ordering::Relaxed)
            {
                Ok(_) => return,
                Err(seen) => current = seen,
            }
        }
    }

    pub fn get(&self) -> f64 {
        f64::from_bits(self.0.load(Ordering::Relaxed))
    }
}

/// (name, labels).
type SeriesKey = (&'static str, Vec<(&'static str, String)>);

struct Series {
    name: &'static str,
    labels: Vec<(&'static str, String)>,
    value: FloatCounter,
}

/// Every float counter of the process. Registration happens when a config
/// generation is compiled (control plane); the same label set returns the
/// same counter, so values survive reloads.
#[derive(Default)]
pub struct FloatRegistry {
    series: Mutex<Vec<Series>>,
    /// (name, labels) → index in `series`: registering a thousand routes'
    /// counters stays linear.
    index: Mutex<HashMap<SeriesKey, usize>>,
    help: Mutex<Vec<(&'static str, &'static str)>>,
}

pub fn registry() -> &'static FloatRegistry {
    static REGISTRY: OnceLock<FloatRegistry> = OnceLock::new();
    REGISTRY.get_or_init(FloatRegistry::default)
}

impl FloatRegistry {
    pub fn describe(&self, name: &'static str, help: &'static str) {
        let mut h = self.help.lock().unwrap_or_else(|p| p.into_inner());
        if !h.iter().any(|(n, _)| *n == name) {
            h.push((name, help));
        }
    }

    pub fn counter(&self, name: &'static str, labels: &[(&'static str, &str)]) -> FloatCounter {
        let mut series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let mut index = self.index.lock().unwrap_or_else(|p| p.into_inner());
        let owned: Vec<(&'static str, String)> =
            labels.iter().map(|(k, v)| (*k, (*v).to_string())).collect();
        let key = (name, owned);
        if let Some(&i) = index.get(&key) {
            return series[i].value.clone();
        }
        let value = FloatCounter(Arc::new(AtomicU64::new(0f64.to_bits())));
        index.insert(key.clone(), series.len());
        series.push(Series {
            name,
            labels: key.1,
            value: value.clone(),
        });
        value
    }

    /// Prometheus text for every float counter, grouped by name.
    pub fn render(&self, out: &mut String) {
        let series = self.series.lock().unwrap_or_else(|p| p.into_inner());
        let help = self.help.lock().unwrap_or_else(|p| p.into_inner());
        let mut names: Vec<&'static str> = series.iter().map(|s| s.name).collect();
        names.dedup();
        names.sort_unstable();
        names.dedup();
        for name in names {
            let text = help.iter().find(|(n, _)| *n == name).map(|(_, t)| *t);
            write_header(out, name, text, "counter");
            for s in series.iter().filter(|s| s.name == name) {
                out.push_str(name);
                if !s.labels.is_empty() {
                    out.push('{');
                    write_labels(out, s.labels.iter().map(|(k, v)| (*k, v.as_str())));
                    out.push('}');
                }
                let _ = writeln!(out, " {}", s.value.get());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_and_renders() {
        let r = FloatRegistry::default();
        r.describe("x_usd_total", "money");
        let c = r.counter("x_usd_total", &[("route", "chat"), ("version", "v1")]);
        c.add(0.25);
        c.add(0.5);
        c.add(f64::NAN);
        c.add(-1.0);
        let again = r.counter("x_usd_total", &[("route", "chat"), ("version", "v1")]);
        again.add(0.25);
        let mut out = String::new();
        r.render(&mut out);
        assert!(out.contains("# TYPE x_usd_total counter"), "{out}");
        assert!(
            out.contains("x_usd_total{route=\"chat\",version=\"v1\"} 1"),
            "{out}"
        );
    }
}
