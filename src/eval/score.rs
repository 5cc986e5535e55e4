//! Scoring: per-side summaries from case results, the deltas between two
//! sides, and the thresholds that decide the exit code.
//!
//! Summaries are computed from the per-case records alone, so a saved
//! report (`--baseline-report`) is scored exactly like a live run.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use super::model::{CaseReport, Comparison, Deltas, Price, Summary, ThresholdResult, UsageReport};

pub fn summarize(cases: &[CaseReport], price: Option<Price>) -> Summary {
    let passed = cases.iter().filter(|c| c.passed).count();
    let errors = cases.iter().filter(|c| c.is_error()).count();
    let schema_cases = cases.iter().filter(|c| c.schema_valid.is_some()).count();
    let schema_valid = cases
        .iter()
        .filter(|c| c.schema_valid == Some(true))
        .count();
    let mut latencies: Vec<f64> = cases.iter().filter_map(|c| c.latency_ms).collect();
    latencies.sort_by(f64::total_cmp);
    let usages: Vec<_> = cases.iter().filter_map(|c| c.usage).collect();
    let n_usage = usages.len();
    let mean = |f: &dyn Fn(&UsageReport) -> Option<u64>| {
        let values: Vec<u64> = usages.iter().filter_map(f).collect();
        (!values.is_empty()).then(|| values.iter().sum::<u64>() as f64 / values.len() as f64)
    };
    let cost = price.filter(|_| n_usage > 0).map(|p| {
        usages
            .iter()
            .map(|u| p.cost(u.input, u.output))
            .sum::<f64>()
            / n_usage as f64
    });
    Summary {
        cases: cases.len(),
        passed,
        failed: cases.len() - passed,
        errors,
        pass_rate: ratio(passed, cases.len()).unwrap_or(0.0),
        schema_cases,
        schema_valid,
        schema_compliance: ratio(schema_valid, schema_cases),
        latency_cases: latencies.len(),
        p50_latency_ms: percentile(&latencies, 0.50).map(round3),
        p95_latency_ms: percentile(&latencies, 0.95).map(round3),
        usage_cases: n_usage,
        input_tokens_per_request: mean(&|u| u.input).map(round3),
        output_tokens_per_request: mean(&|u| u.output).map(round3),
        cost_per_request_usd: cost.map(round9),
    }
}

fn ratio(n: usize, of: usize) -> Option<f64> {
    (of > 0).then(|| round6(n as f64 / of as f64))
}

/// Nearest-rank percentile of sorted values: the smallest value with at
/// least `p` of the values at or below it (exact, no interpolation).
pub fn percentile(sorted: &[f64], p: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (p * sorted.len() as f64).ceil() as usize;
    sorted.get(rank.clamp(1, sorted.len()) - 1).copied()
}

fn round3(x: f64) -> f64 {
    (x * 1e3).round() / 1e3
}
fn round6(x: f64) -> f64 {
    (x * 1e6).round() / 1e6
}
fn round9(x: f64) -> f64 {
    (x * 1e9).round() / 1e9
}

pub fn compare(
    target: (&Summary, &[CaseReport]),
    baseline: (&Summary, &[CaseReport]),
) -> Comparison {
    let (t, b) = (target.0, baseline.0);
    let d = |x: Option<f64>, y: Option<f64>, round: fn(f64) -> f64| match (x, y) {
        (Some(x), Some(y)) => Some(round(x - y)),
        _ => None,
    };
    let deltas = Deltas {
        pass_rate: round6(t.pass_rate - b.pass_rate),
        schema_compliance: d(t.schema_compliance, b.schema_compliance, round6),
        p50_latency_ms: d(t.p50_latency_ms, b.p50_latency_ms, round3),
        p95_latency_ms: d(t.p95_latency_ms, b.p95_latency_ms, round3),
        input_tokens_per_request: d(
            t.input_tokens_per_request,
            b.input_tokens_per_request,
            round3,
        ),
        output_tokens_per_request: d(
            t.output_tokens_per_request,
            b.output_tokens_per_request,
            round3,
        ),
        cost_per_request_usd: d(t.cost_per_request_usd, b.cost_per_request_usd, round9),
    };
    let on_baseline: HashMap<&str, bool> = baseline
        .1
        .iter()
        .map(|c| (c.id.as_str(), c.passed))
        .collect();
    let in_target: HashSet<&str> = target.1.iter().map(|c| c.id.as_str()).collect();
    let mut comparison = Comparison {
        deltas,
        ..Comparison::default()
    };
    for case in target.1 {
        match on_baseline.get(case.id.as_str()) {
            Some(true) if !case.passed => comparison.regressions.push(case.id.clone()),
            Some(false) if case.passed => comparison.fixed.push(case.id.clone()),
            Some(_) => {}
            None => comparison.only_in_target.push(case.id.clone()),
        }
    }
    comparison.only_in_baseline = baseline
        .1
        .iter()
        .filter(|c| !in_target.contains(c.id.as_str()))
        .map(|c| c.id.clone())
        .collect();
    comparison
}

/// The gate's limits. `min_pass_rate` is always set (default 1.0: every
/// case must pass unless the run says otherwise).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Thresholds {
    pub min_pass_rate: f64,
    pub max_pass_rate_drop: Option<f64>,
    pub max_p95_latency: Option<Duration>,
    pub max_cost_per_request: Option<f64>,
}

/// Floating error must not break a threshold that holds exactly.
const EPSILON: f64 = 1e-9;

pub fn judge(
    limits: &Thresholds,
    target: &Summary,
    baseline: Option<&Summary>,
) -> Vec<ThresholdResult> {
    let mut out = Vec::new();
    let pct = |x: f64| format!("{:.1}%", x * 100.0);
    out.push(ThresholdResult {
        name: "min-pass-rate".into(),
        limit: limits.min_pass_rate,
        value: Some(target.pass_rate),
        ok: target.pass_rate + EPSILON >= limits.min_pass_rate,
        detail: format!(
            "pass rate {} ({}/{}), at least {} required",
            pct(target.pass_rate),
            target.passed,
            target.cases,
            pct(limits.min_pass_rate)
        ),
    });
    if let Some(max_drop) = limits.max_pass_rate_drop {
        let (value, detail) = match baseline {
            Some(b) => {
                let drop = round6(b.pass_rate - target.pass_rate);
                (
                    Some(drop),
                    format!(
                        "pass rate {} vs baseline {}: a drop of {:.1} points, at most {:.1} allowed",
                        pct(target.pass_rate),
                        pct(b.pass_rate),
                        drop * 100.0,
                        max_drop * 100.0
                    ),
                )
            }
            None => (None, "no baseline to compare with".to_owned()),
        };
        out.push(ThresholdResult {
            name: "max-pass-rate-drop".into(),
            limit: max_drop,
            ok: value.is_some_and(|v| v <= max_drop + EPSILON),
            value,
            detail,
        });
    }
    if let Some(max) = limits.max_p95_latency {
        let limit = max.as_secs_f64() * 1000.0;
        let value = target.p95_latency_ms;
        out.push(ThresholdResult {
            name: "max-p95-latency".into(),
            limit,
            ok: value.is_some_and(|v| v <= limit + EPSILON),
            value,
            detail: match value {
                Some(v) => format!("p95 latency {v:.1}ms, at most {limit:.1}ms allowed"),
                None => "no case got a response to time".into(),
            },
        });
    }
    if let Some(max) = limits.max_cost_per_request {
        let value = target.cost_per_request_usd;
        out.push(ThresholdResult {
            name: "max-cost-per-request".into(),
            limit: max,
            ok: value.is_some_and(|v| v <= max + EPSILON),
            value,
            detail: match value {
                Some(v) => format!("cost per request ${v:.6}, at most ${max:.6} allowed"),
                None => "no response carried a usage block, so the cost is unknown".into(),
            },
        });
    }
    out
}

/// `0.95` or `95%` → 0.95, within 0..=1.
pub fn parse_rate(text: &str) -> Result<f64, String> {
    let t = text.trim();
    let (number, scale) = match t.strip_suffix('%') {
        Some(n) => (n.trim(), 100.0),
        None => (t, 1.0),
    };
    match number.parse::<f64>() {
        Ok(n) if n.is_finite() && (0.0..=1.0).contains(&(n / scale)) => Ok(n / scale),
        _ => Err(format!(
            "{t:?} is not a rate: expected a fraction from 0 to 1 or a percent, e.g. 0.95 or 95%"
        )),
    }
}

/// A non-negative USD amount.
pub fn parse_usd(text: &str) -> Result<f64, String> {
    let t = text.trim();
    match t.strip_prefix('$').unwrap_or(t).parse::<f64>() {
        Ok(n) if n.is_finite() && n >= 0.0 => Ok(n),
        _ => Err(format!("{t:?} is not an amount in USD, e.g. 0.002")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn case(id: &str, passed: bool, latency: Option<f64>, usage: Option<(u64, u64)>) -> CaseReport {
        CaseReport {
            id: id.into(),
            passed,
            latency_ms: latency,
            usage: usage.map(|(i, o)| UsageReport {
                input: Some(i),
                output: Some(o),
            }),
            ..CaseReport::default()
        }
    }

    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=20).map(f64::from).collect();
        assert_eq!(percentile(&v, 0.5), Some(10.0));
        assert_eq!(percentile(&v, 0.95), Some(19.0));
        assert_eq!(percentile(&[7.0], 0.95), Some(7.0));
        assert_eq!(percentile(&[], 0.5), None);
        assert_eq!(percentile(&[1.0, 2.0], 0.0), Some(1.0));
    }

    #[test]
    fn summary_counts_rates_tokens_and_cost() {
        let cases = [
            case("a", true, Some(10.0), Some((100, 50))),
            case("b", false, Some(30.0), Some((300, 150))),
            case("c", true, None, None),
        ];
        let price = Price::parse("2,10").ok();
        let s = summarize(&cases, price);
        assert_eq!((s.cases, s.passed, s.failed), (3, 2, 1));
        assert!((s.pass_rate - 0.666667).abs() < 1e-9);
        assert_eq!(s.schema_compliance, None);
        assert_eq!(
            (s.p50_latency_ms, s.p95_latency_ms),
            (Some(10.0), Some(30.0))
        );
        assert_eq!(s.usage_cases, 2);
        assert_eq!(s.input_tokens_per_request, Some(200.0));
        assert_eq!(s.output_tokens_per_request, Some(100.0));
        // (200 * 2 + 100 * 10) / 1e6
        assert_eq!(s.cost_per_request_usd, Some(0.0014));
        assert_eq!(summarize(&cases, None).cost_per_request_usd, None);
    }

    #[test]
    fn comparison_lists_regressions_and_fixes() {
        let t = [
            case("a", false, None, None),
            case("b", true, None, None),
            case("n", true, None, None),
        ];
        let b = [
            case("a", true, None, None),
            case("b", false, None, None),
            case("old", true, None, None),
        ];
        let c = compare((&summarize(&t, None), &t), (&summarize(&b, None), &b));
        assert_eq!(c.regressions, ["a"]);
        assert_eq!(c.fixed, ["b"]);
        assert_eq!(c.only_in_target, ["n"]);
        assert_eq!(c.only_in_baseline, ["old"]);
        assert!((c.deltas.pass_rate - (2.0 / 3.0 - 2.0 / 3.0)).abs() < 1e-9);
    }

    #[test]
    fn thresholds_hold_at_the_limit_and_break_past_it() {
        let target = Summary {
            cases: 10,
            passed: 9,
            pass_rate: 0.9,
            p95_latency_ms: Some(200.0),
            cost_per_request_usd: Some(0.002),
            ..Summary::default()
        };
        let baseline = Summary {
            pass_rate: 1.0,
            ..Summary::default()
        };
        let limits = Thresholds {
            min_pass_rate: 0.9,
            max_pass_rate_drop: Some(0.1),
            max_p95_latency: Some(Duration::from_millis(200)),
            max_cost_per_request: Some(0.002),
        };
        let all = judge(&limits, &target, Some(&baseline));
        assert!(all.iter().all(|t| t.ok), "{all:#?}");
        let tight = Thresholds {
            min_pass_rate: 0.95,
            max_pass_rate_drop: Some(0.05),
            max_p95_latency: Some(Duration::from_millis(199)),
            max_cost_per_request: Some(0.0019),
        };
        let broken: Vec<String> = judge(&tight, &target, Some(&baseline))
            .into_iter()
            .filter(|t| !t.ok)
            .map(|t| t.name)
            .collect();
        assert_eq!(
            broken,
            [
                "min-pass-rate",
                "max-pass-rate-drop",
                "max-p95-latency",
                "max-cost-per-request"
            ]
        );
        // Unmeasurable is broken, never silently passed.
        let unknown = judge(&limits, &Summary::default(), None);
        assert!(
            unknown.iter().skip(1).all(|t| !t.ok && t.value.is_none()),
            "{unknown:#?}"
        );
    }

    #[test]
    fn rates_prices_and_amounts_parse() {
        assert_eq!(parse_rate("0.95"), Ok(0.95));
        assert_eq!(parse_rate("95%"), Ok(0.95));
        assert!(
            parse_rate("1.5").is_err() && parse_rate("-1").is_err() && parse_rate("x").is_err()
        );
        assert_eq!(
            Price::parse("2.5, 10"),
            Ok(Price {
                input_per_mtok: 2.5,
                output_per_mtok: 10.0
            })
        );
        assert!(
            Price::parse("2.5").is_err()
                && Price::parse("a,b").is_err()
                && Price::parse("-1,2").is_err()
        );
        assert_eq!(parse_usd("$0.002"), Ok(0.002));
        assert!(parse_usd("cheap").is_err());
    }
}
