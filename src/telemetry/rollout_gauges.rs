//! `cutover_rollout_step` and `cutover_rollout_state`, held here rather
//! than in the metrics recorder so that a rollout removed from the config
//! takes its series with it: the `metrics` crate has no way to remove a
//! series, and a stale `state="canary"` would keep dashboards and alerts
//! believing a rollout still runs. Rendered into `/metrics` after the
//! recorder's output, like the float counters. Control plane only: set on
//! a transition or a reload, never per request.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Mutex, OnceLock};

use super::counters::{described, write_header, write_labels};
use super::names;

struct RouteGauges {
    step: i64,
    /// Every state name, with 1 for the current one.
    states: Vec<(&'static str, bool)>,
}

#[derive(Default)]
pub struct RolloutGauges {
    /// By route name, so the rendering is stable.
    routes: Mutex<BTreeMap<String, RouteGauges>>,
}

pub fn registry() -> &'static RolloutGauges {
    static REGISTRY: OnceLock<RolloutGauges> = OnceLock::new();
    REGISTRY.get_or_init(RolloutGauges::default)
}

impl RolloutGauges {
    /// A route's rollout now: its step and, of `all` states, `current`.
    pub fn set(&self, route: &str, step: i64, all: &[&'static str], current: &str) {
        let states = all.iter().map(|s| (*s, *s == current)).collect();
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes.insert(route.to_string(), RouteGauges { step, states });
    }

    /// Drop a route's series (its rollout left the config).
    pub fn remove(&self, route: &str) {
        let mut routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        routes.remove(route);
    }

    /// Prometheus text for both gauges; nothing when no rollout exists.
    pub fn render(&self, out: &mut String) {
        let routes = self.routes.lock().unwrap_or_else(|p| p.into_inner());
        if routes.is_empty() {
            return;
        }
        header(out, names::ROLLOUT_STEP);
        for (route, g) in routes.iter() {
            out.push_str(names::ROLLOUT_STEP);
            out.push('{');
            write_labels(out, [("route", route.as_str())]);
            let _ = writeln!(out, "}} {}", g.step);
        }
        header(out, names::ROLLOUT_STATE);
        for (route, g) in routes.iter() {
            for (state, on) in &g.states {
                out.push_str(names::ROLLOUT_STATE);
                out.push('{');
                write_labels(out, [("route", route.as_str()), ("state", state)]);
                let _ = writeln!(out, "}} {}", u8::from(*on));
            }
        }
    }
}

fn header(out: &mut String, name: &str) {
    write_header(out, name, described(name), "gauge");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_removed_route_takes_its_series_with_it() {
        let g = RolloutGauges::default();
        g.set("chat", 2, &["canary", "paused"], "canary");
        g.set("old", -1, &["canary", "paused"], "paused");
        let mut out = String::new();
        g.render(&mut out);
        assert!(
            out.contains("cutover_rollout_step{route=\"chat\"} 2"),
            "{out}"
        );
        assert!(out.contains("cutover_rollout_state{route=\"old\",state=\"paused\"} 1"));
        assert!(out.contains("cutover_rollout_state{route=\"old\",state=\"canary\"} 0"));
        assert!(out.contains("# TYPE cutover_rollout_state gauge"));
        g.remove("old");
        let mut out = String::new();
        g.render(&mut out);
        assert!(!out.contains("old"), "{out}");
        g.remove("chat");
        let mut out = String::new();
        g.render(&mut out);
        assert!(out.is_empty(), "{out}");
    }
}
