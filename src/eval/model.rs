//! The eval report's data model: what a run records, per case and per
//! side, as the stable, versioned JSON schema of `docs/eval.md`. Scoring
//! (`eval::score`) fills it in; the renderers (`eval::text`, `eval::junit`)
//! and `--baseline-report` read it. It imports none of them.

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::check::{CheckResult, Kind};
use super::golden::Case;
use super::run::{Response, Transport};

/// Bumped on any change that could break a reader of the JSON report.
pub const SCHEMA_VERSION: u32 = 1;

/// The whole run. Field order is the JSON order.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Report {
    pub schema_version: u32,
    /// `cutover X.Y.Z`.
    pub tool: String,
    /// The golden file as given on the command line.
    pub golden: String,
    /// RFC 3339, UTC, seconds.
    pub started_at: String,
    pub duration_ms: f64,
    pub settings: Settings,
    pub target: Side,
    /// `None` without `--baseline` or `--baseline-report`.
    pub baseline: Option<Side>,
    /// Present with a baseline.
    pub comparison: Option<Comparison>,
    pub thresholds: Vec<ThresholdResult>,
    /// Every threshold holds: the exit code is 0.
    pub passed: bool,
    pub warnings: Vec<String>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Settings {
    pub concurrency: usize,
    pub timeout_ms: f64,
    pub max_body_bytes: usize,
    pub cost: Option<Price>,
    pub baseline_cost: Option<Price>,
    /// Names only: values may be credentials.
    pub header_names: Vec<String>,
    pub baseline_header_names: Vec<String>,
}

/// One side: a live URL, or a saved report read with `--baseline-report`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Side {
    pub url: Option<String>,
    /// The `--baseline-report` file this side was read from.
    pub report_file: Option<String>,
    pub summary: Summary,
    pub cases: Vec<CaseReport>,
}

/// One golden case on one side.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct CaseReport {
    pub id: String,
    pub line: usize,
    pub passed: bool,
    pub status: Option<u16>,
    /// To the last body byte; the limit when the case timed out; `null`
    /// when there was no response to time.
    pub latency_ms: Option<f64>,
    pub timed_out: bool,
    /// The response was an event stream (reassembled before the checks).
    pub streamed: bool,
    pub body_bytes: u64,
    /// Over `--max-body`: only the first `max_body_bytes` were checked.
    pub body_truncated: bool,
    pub usage: Option<UsageReport>,
    pub cost_usd: Option<f64>,
    /// `null` when the case has no `json_schema` expectation.
    pub schema_valid: Option<bool>,
    pub failures: Vec<FailureReport>,
    /// The start of what the checks saw.
    pub excerpt: String,
}

impl CaseReport {
    pub fn new(
        case: &Case,
        response: &Response,
        verdict: &CheckResult,
        price: Option<Price>,
    ) -> Self {
        let usage = (!response.usage.is_empty()).then_some(UsageReport {
            input: response.usage.input,
            output: response.usage.output,
        });
        CaseReport {
            id: case.id.clone(),
            line: case.line,
            passed: verdict.passed(),
            status: response.status.map(|s| s.as_u16()),
            latency_ms: response
                .latency
                .map(|d| (d.as_secs_f64() * 1e6).round() / 1e3),
            timed_out: matches!(response.transport, Transport::TimedOut { .. }),
            streamed: response.is_event_stream(),
            body_bytes: response.body_len,
            body_truncated: response.truncated,
            usage,
            cost_usd: price
                .zip(usage)
                .map(|(p, u)| (p.cost(u.input, u.output) * 1e9).round() / 1e9),
            schema_valid: verdict.schema_valid,
            failures: verdict
                .failures
                .iter()
                .map(|f| FailureReport {
                    expectation: f.kind.as_str().to_owned(),
                    expected: f.expected.clone(),
                    got: f.got.clone(),
                    reason: f.reason.clone(),
                })
                .collect(),
            excerpt: verdict.excerpt.clone(),
        }
    }

    /// No complete response (JUnit `<error>` rather than `<failure>`).
    pub fn is_error(&self) -> bool {
        self.failures
            .iter()
            .any(|f| f.expectation == Kind::Response.as_str())
    }
}

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageReport {
    pub input: Option<u64>,
    pub output: Option<u64>,
}

#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct FailureReport {
    /// `response`, `status`, `contains`, `json`, `json_schema`, `max_latency`.
    pub expectation: String,
    pub expected: String,
    pub got: String,
    pub reason: String,
}

/// The part of an earlier report that `--baseline-report` needs: its
/// target's cases (the summary is recomputed with this run's prices).
#[derive(Deserialize)]
struct SavedReport {
    schema_version: u32,
    target: SavedSide,
}

#[derive(Deserialize)]
struct SavedSide {
    url: Option<String>,
    cases: Vec<CaseReport>,
}

/// Read the target side of an earlier `--report-json` file.
pub fn load_saved(path: &Path) -> Result<(Option<String>, Vec<CaseReport>), String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read it ({e}); pass a file written by --report-json"))?;
    let saved: SavedReport = serde_json::from_str(&text).map_err(|e| {
        format!("not a cutover eval report ({e}); pass a file written by --report-json")
    })?;
    if saved.schema_version != SCHEMA_VERSION {
        return Err(format!(
            "schema_version {} is not supported (this cutover reads {SCHEMA_VERSION}); rerun the baseline with this version",
            saved.schema_version
        ));
    }
    if saved.target.cases.is_empty() {
        return Err("it holds no cases".into());
    }
    Ok((saved.target.url, saved.target.cases))
}

/// Prices in USD per million tokens (`--cost IN,OUT`).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Price {
    pub input_per_mtok: f64,
    pub output_per_mtok: f64,
}

impl Price {
    /// `"2.5,10"` → input 2.5, output 10 USD per million tokens.
    pub fn parse(text: &str) -> Result<Price, String> {
        let hint = "expected INPUT_PER_MTOK,OUTPUT_PER_MTOK in USD per million tokens, e.g. 2.5,10";
        let (input, output) = text
            .split_once(',')
            .ok_or_else(|| format!("{text:?}: {hint}"))?;
        let number = |s: &str| match s.trim().parse::<f64>() {
            Ok(n) if n.is_finite() && n >= 0.0 => Ok(n),
            _ => Err(format!("{text:?}: {:?} is not a price; {hint}", s.trim())),
        };
        Ok(Price {
            input_per_mtok: number(input)?,
            output_per_mtok: number(output)?,
        })
    }

    /// USD for one response's usage; a missing side counts as zero tokens.
    pub fn cost(&self, input: Option<u64>, output: Option<u64>) -> f64 {
        (input.unwrap_or(0) as f64 * self.input_per_mtok
            + output.unwrap_or(0) as f64 * self.output_per_mtok)
            / 1_000_000.0
    }
}

/// One side's numbers. Rates are fractions (0..1); `None` where there is
/// nothing to measure (no schema case, no latency, no usage, no price).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Summary {
    pub cases: usize,
    pub passed: usize,
    pub failed: usize,
    /// Cases with no complete response (refused, reset, timed out).
    pub errors: usize,
    pub pass_rate: f64,
    /// Cases with a `json_schema` expectation, and how many validated.
    pub schema_cases: usize,
    pub schema_valid: usize,
    pub schema_compliance: Option<f64>,
    /// Cases with a latency (complete, or timed out at their limit).
    pub latency_cases: usize,
    pub p50_latency_ms: Option<f64>,
    pub p95_latency_ms: Option<f64>,
    /// Cases whose response carried a usage block.
    pub usage_cases: usize,
    pub input_tokens_per_request: Option<f64>,
    pub output_tokens_per_request: Option<f64>,
    pub cost_per_request_usd: Option<f64>,
}

/// Target minus baseline.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Deltas {
    pub pass_rate: f64,
    pub schema_compliance: Option<f64>,
    pub p50_latency_ms: Option<f64>,
    pub p95_latency_ms: Option<f64>,
    pub input_tokens_per_request: Option<f64>,
    pub output_tokens_per_request: Option<f64>,
    pub cost_per_request_usd: Option<f64>,
}

/// How the target compares with the baseline, overall and case by case.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Comparison {
    pub deltas: Deltas,
    /// Passed on the baseline, fail on the target.
    pub regressions: Vec<String>,
    /// Failed on the baseline, pass on the target.
    pub fixed: Vec<String>,
    /// Case ids only one side has (a saved report from another golden set).
    pub only_in_target: Vec<String>,
    pub only_in_baseline: Vec<String>,
}

/// One threshold's verdict. `limit` and `value` are in the threshold's
/// unit: fractions for rates, milliseconds, USD.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ThresholdResult {
    /// The flag without dashes: `min-pass-rate`, `max-pass-rate-drop`,
    /// `max-p95-latency`, `max-cost-per-request`.
    pub name: String,
    pub limit: f64,
    /// `None` when it could not be measured (which breaks the threshold).
    pub value: Option<f64>,
    pub ok: bool,
    pub detail: String,
}
