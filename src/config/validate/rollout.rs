//! A route's `rollout`: baseline and canary, steps, gates and rollback.

use std::time::Duration;

use super::one_of;

use crate::config::model::*;
use crate::config::raw::*;
use crate::config::spans::KeyPath;

use super::Validator;

impl Validator<'_> {
    pub(super) fn rollout(
        &mut self,
        v: Value,
        p: KeyPath,
        versions: &[String],
    ) -> Option<RolloutConfig> {
        let raw: RawRollout = de_unit(v, &p, &mut self.issues)?;
        let names: Vec<&str> = versions.iter().map(String::as_str).collect();
        let role = |this: &mut Self, v: Option<String>, key: &str| -> Option<String> {
            match v {
                None => {
                    this.err(p.clone(), format!("missing required key `{key}`; valid: the name of a version of this route ({})", names.join(", ")));
                    None
                }
                Some(n) if !versions.contains(&n) => {
                    this.err(
                        p.key(key),
                        format!("`{n}` is not a version of this route; {}", one_of(&names)),
                    );
                    None
                }
                Some(n) => Some(n),
            }
        };
        let baseline = role(self, raw.baseline, "baseline");
        let canary = role(self, raw.canary, "canary");
        if let (Some(b), Some(c)) = (&baseline, &canary) {
            if b == c {
                self.err(
                    p.key("canary"),
                    format!("canary is the baseline `{b}`; valid: another version of this route"),
                );
            } else if versions.len() != 2 {
                self.err(
                    p.clone(),
                    format!(
                        "a route with a rollout must have exactly two versions, baseline `{b}` and canary `{c}`; found {}: {}",
                        versions.len(),
                        names.join(", ")
                    ),
                );
            }
        }
        let steps_p = p.key("steps");
        let steps: Vec<WeightBps> = match raw.steps {
            None => DEFAULT_STEPS
                .iter()
                .filter_map(|&b| WeightBps::new(b))
                .collect(),
            Some(list) => {
                let mut out = Vec::new();
                let mut prev: Option<WeightBps> = None;
                let mut all_ok = true;
                for (i, x) in list.iter().enumerate() {
                    match self.percent(*x, steps_p.index(i), "step") {
                        Some(w) => {
                            if let Some(pw) = prev.filter(|pw| w <= *pw) {
                                self.err(steps_p.index(i), format!("step {w}% is not above the step before it ({pw}%); valid: strictly increasing percents ending at 100"));
                            }
                            prev = Some(w);
                            out.push(w);
                        }
                        None => all_ok = false,
                    }
                }
                if list.is_empty() {
                    self.err(steps_p.clone(), "no steps; valid: strictly increasing percents ending at 100, like [1, 5, 25, 100]");
                } else if all_ok && out.last() != Some(&WeightBps::FULL) {
                    let last = list.len() - 1;
                    self.err(steps_p.index(last), "the last step must be 100; valid: strictly increasing percents ending at 100");
                }
                out
            }
        };
        let interval =
            self.positive_duration(raw.interval, p.key("interval"), Duration::from_secs(600));
        let shadow_first = raw.shadow_first.map(|sf| ShadowFirstConfig {
            min_duration: self.duration(
                sf.min_duration,
                p.key("shadow_first").key("min_duration"),
                Duration::from_secs(1800),
            ),
            min_requests: sf.min_requests.unwrap_or(500),
        });
        let gates = self.gates(raw.gates.unwrap_or_default(), &p.key("gates"));
        let rollback = raw.rollback.map(|rb| self.rollback(rb, &p.key("rollback")));
        Some(RolloutConfig {
            baseline: baseline?,
            canary: canary?,
            shadow_first,
            steps,
            interval,
            min_requests: raw.min_requests.unwrap_or(200),
            gates,
            rollback,
        })
    }

    pub(super) fn gates(&mut self, raw: RawGates, p: &KeyPath) -> GatesConfig {
        let unit = |x: f64| (0.0..=1.0).contains(&x);
        GatesConfig {
            error_rate_margin: self.ranged(
                raw.error_rate_margin,
                p.key("error_rate_margin"),
                unit,
                "0.0 to 1.0",
            ),
            max_error_rate: self.ranged(
                raw.max_error_rate,
                p.key("max_error_rate"),
                unit,
                "0.0 to 1.0",
            ),
            latency_p95_ratio: self.ranged(
                raw.latency_p95_ratio,
                p.key("latency_p95_ratio"),
                |x| x > 0.0,
                "more than 0, like 1.25",
            ),
            max_latency_p95: self.opt_duration(raw.max_latency_p95, p.key("max_latency_p95")),
            max_cost_per_request: self.ranged(
                raw.max_cost_per_request,
                p.key("max_cost_per_request"),
                |x| x >= 0.0,
                "0 or more (USD)",
            ),
            outcome_margin: self.ranged(
                raw.outcome_margin,
                p.key("outcome_margin"),
                unit,
                "0.0 to 1.0",
            ),
            confidence: self
                .ranged(
                    raw.confidence,
                    p.key("confidence"),
                    |x| x > 0.5 && x < 1.0,
                    "more than 0.5 and less than 1, like 0.95",
                )
                .unwrap_or(0.95),
        }
    }

    pub(super) fn rollback(&mut self, raw: RawRollback, p: &KeyPath) -> RollbackConfig {
        if let Some(w) = &raw.webhook {
            self.url(w, p.key("webhook"));
        }
        RollbackConfig {
            window: self.positive_duration(raw.window, p.key("window"), Duration::from_secs(60)),
            min_requests: raw.min_requests.unwrap_or(20),
            error_rate: self.ranged(
                raw.error_rate,
                p.key("error_rate"),
                |x| x > 0.0 && x <= 1.0,
                "more than 0.0, at most 1.0",
            ),
            latency_p99: self.opt_duration(raw.latency_p99, p.key("latency_p99")),
            on_breaker_open: raw.on_breaker_open.unwrap_or(true),
            webhook: raw.webhook,
        }
    }
}

const DEFAULT_STEPS: [u16; 6] = [100, 500, 1_000, 2_500, 5_000, 10_000];
