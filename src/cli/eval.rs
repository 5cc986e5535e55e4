//! `cutover eval`: the CI gate (SPEC §11). See [`crate::eval`] and
//! `docs/eval.md`.
//!
//! Exit codes: 0 every threshold holds, 1 one or more broken (each named),
//! 2 usage or input errors (bad flags, a malformed golden line, an
//! unreadable baseline report, an output file that cannot be written),
//! reported before anything is sent where possible.

use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, HeaderValue};

use crate::eval::model::Price;
use crate::eval::progress::Progress;
use crate::eval::run::{Endpoint, RunOptions};
use crate::eval::score::{self, Thresholds};
use crate::eval::{self, Baseline, Plan, golden, junit, model, text};

#[derive(Debug, clap::Args)]
#[command(
    about = "Replay a golden data set, score it against thresholds (and a baseline), and exit non-zero on regression",
    after_help = "Exit codes: 0 every threshold holds, 1 a threshold is broken, 2 usage or input error.\n\
                  To evaluate one version through a running cutover, pin it: --header x-cutover-version:v2\n\
                  See docs/eval.md for the golden file format and the JSON report schema."
)]
pub struct Args {
    /// Golden cases, one JSON object per line.
    #[arg(long, value_name = "FILE")]
    pub golden: PathBuf,

    /// Base URL of the agent (or cutover) under test; case paths are appended.
    #[arg(long, value_name = "URL", value_parser = Endpoint::parse)]
    pub target: Endpoint,

    /// A second live endpoint, replayed side by side with the target.
    #[arg(long, value_name = "URL", value_parser = Endpoint::parse, conflicts_with = "baseline_report")]
    pub baseline: Option<Endpoint>,

    /// A --report-json file of an earlier run, used as the baseline (its target side).
    #[arg(long, value_name = "FILE")]
    pub baseline_report: Option<PathBuf>,

    /// Header added to every request (target and baseline), replacing the
    /// case's own; repeatable. E.g. x-cutover-version:v2
    #[arg(long = "header", short = 'H', value_name = "K:V", value_parser = parse_header)]
    pub headers: Vec<(HeaderName, HeaderValue)>,

    /// Header for the baseline only, replacing a same-named --header; repeatable.
    #[arg(long = "baseline-header", value_name = "K:V", value_parser = parse_header, requires = "baseline")]
    pub baseline_headers: Vec<(HeaderName, HeaderValue)>,

    /// Requests in flight to each endpoint at most.
    #[arg(long, default_value_t = 4, value_name = "N", value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub concurrency: u16,

    /// Time limit of a case without max_latency (a case with one is cut at it).
    #[arg(long, default_value = "60s", value_name = "DUR", value_parser = parse_duration)]
    pub timeout: Duration,

    /// Response bytes kept for the checks; past it the rest is read, counted and dropped.
    #[arg(long, default_value = "8MiB", value_name = "SIZE", value_parser = parse_size)]
    pub max_body: usize,

    /// Prices for tokens and cost per request, in USD per million input and output tokens.
    #[arg(long, value_name = "IN,OUT", value_parser = Price::parse)]
    pub cost: Option<Price>,

    /// Prices for the baseline when they differ (another model); default: --cost.
    #[arg(long, value_name = "IN,OUT", value_parser = Price::parse)]
    pub baseline_cost: Option<Price>,

    /// Pass rate the target must reach, as a fraction or percent.
    #[arg(long, default_value = "1.0", value_name = "R", value_parser = score::parse_rate)]
    pub min_pass_rate: f64,

    /// Largest drop of the pass rate below the baseline's (fraction or percent points).
    #[arg(long, value_name = "D", value_parser = score::parse_rate)]
    pub max_pass_rate_drop: Option<f64>,

    /// Largest p95 latency (to the last byte) of the target.
    #[arg(long, value_name = "DUR", value_parser = parse_duration)]
    pub max_p95_latency: Option<Duration>,

    /// Largest mean cost per request of the target, in USD (needs --cost).
    #[arg(long, value_name = "USD", value_parser = score::parse_usd)]
    pub max_cost_per_request: Option<f64>,

    /// Write the JSON report here (schema in docs/eval.md).
    #[arg(long, value_name = "FILE")]
    pub report_json: Option<PathBuf>,

    /// Write JUnit XML here: one test case per golden case.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,

    /// No progress bar or per-case lines on stderr.
    #[arg(long, short = 'q')]
    pub quiet: bool,
}

fn parse_header(text: &str) -> Result<(HeaderName, HeaderValue), String> {
    let (name, value) = text
        .split_once(':')
        .ok_or_else(|| format!("{text:?} is not K:V; e.g. x-cutover-version:v2"))?;
    let name = HeaderName::from_bytes(name.trim().as_bytes()).map_err(|_| {
        format!(
            "{:?} is not a header name; e.g. x-cutover-version",
            name.trim()
        )
    })?;
    let value = HeaderValue::from_str(value.trim())
        .map_err(|_| format!("the value of {name} is not a valid header value (visible ASCII)"))?;
    Ok((name, value))
}

fn parse_duration(text: &str) -> Result<Duration, String> {
    match humantime::parse_duration(text.trim()) {
        Ok(d) if !d.is_zero() => Ok(d),
        Ok(_) => Err("must be above zero, e.g. 30s".into()),
        Err(e) => Err(format!("{text:?}: {e}; e.g. 500ms, 30s, 2m")),
    }
}

/// Bytes, or a whole number with a unit: `512KiB`, `8MiB`, `1GiB` (powers of
/// 1024), `500kB`, `10MB` (powers of 1000); the case of the unit is ignored.
fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let bad = || format!("{t:?} is not a size: expected bytes or a number with a unit, e.g. 8MiB");
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let multiplier: usize = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "kib" => 1 << 10,
        "mib" => 1 << 20,
        "gib" => 1 << 30,
        "kb" => 1_000,
        "mb" => 1_000_000,
        "gb" => 1_000_000_000,
        _ => return Err(bad()),
    };
    match number
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(multiplier))
    {
        Some(n) if n > 0 => Ok(n),
        _ => Err(bad()),
    }
}

pub fn run(args: Args) -> u8 {
    let (plan, outputs) = match plan(args) {
        Ok(p) => p,
        Err(message) => {
            eprintln!("{message}");
            return super::EXIT_USAGE;
        }
    };
    let client = match eval::client(plan.options.timeout) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: cannot set up the HTTP client: {e}");
            return super::EXIT_USER;
        }
    };
    let runtime = match super::runtime(super::Threads::Workers(0), "error") {
        Ok(r) => r,
        Err(code) => return code,
    };
    let sides = 1 + usize::from(matches!(plan.baseline, Some(Baseline::Live(_))));
    let total = plan.golden.cases.len() * sides;
    let progress = if outputs.quiet {
        Progress::Quiet
    } else {
        Progress::auto(total)
    };
    // The client's pool lives on this runtime: build and drop it there.
    let report = runtime.block_on(async move {
        let report = eval::execute(&plan, &client, &progress).await;
        drop(client);
        report
    });
    print!("{}", text::render(&report));

    let mut code = if report.passed {
        super::EXIT_OK
    } else {
        super::EXIT_USER
    };
    if let Some(path) = &outputs.report_json {
        let written = serde_json::to_string_pretty(&report)
            .map_err(|e| e.to_string())
            .and_then(|json| std::fs::write(path, json + "\n").map_err(|e| e.to_string()));
        if let Err(e) = written {
            eprintln!(
                "error: --report-json {}: cannot write it ({e})",
                path.display()
            );
            code = super::EXIT_USAGE;
        }
    }
    if let Some(path) = &outputs.junit
        && let Err(e) = std::fs::write(path, junit::render(&report))
    {
        eprintln!("error: --junit {}: cannot write it ({e})", path.display());
        code = super::EXIT_USAGE;
    }
    code
}

struct Outputs {
    report_json: Option<PathBuf>,
    junit: Option<PathBuf>,
    quiet: bool,
}

/// Everything checked before anything is sent.
fn plan(args: Args) -> Result<(Plan, Outputs), String> {
    let golden = golden::load(&args.golden).map_err(|e| e.to_string())?;
    if args.max_pass_rate_drop.is_some()
        && args.baseline.is_none()
        && args.baseline_report.is_none()
    {
        return Err(
            "error: --max-pass-rate-drop needs a baseline: --baseline URL or --baseline-report FILE"
                .into(),
        );
    }
    if args.max_cost_per_request.is_some() && args.cost.is_none() {
        return Err(
            "error: --max-cost-per-request needs prices: --cost INPUT_PER_MTOK,OUTPUT_PER_MTOK, e.g. --cost 2.5,10"
                .into(),
        );
    }
    if args.baseline_cost.is_some() && args.baseline.is_none() && args.baseline_report.is_none() {
        return Err(
            "error: --baseline-cost needs a baseline: --baseline URL or --baseline-report FILE"
                .into(),
        );
    }
    let mut target = args.target;
    target.headers = args.headers.clone();
    let baseline = if let Some(mut endpoint) = args.baseline {
        let mut headers: Vec<(HeaderName, HeaderValue)> = args
            .headers
            .iter()
            .filter(|(name, _)| !args.baseline_headers.iter().any(|(n, _)| n == name))
            .cloned()
            .collect();
        headers.extend(args.baseline_headers.iter().cloned());
        endpoint.headers = headers;
        Some(Baseline::Live(endpoint))
    } else if let Some(path) = args.baseline_report {
        let (url, cases) = model::load_saved(&path)
            .map_err(|e| format!("error: --baseline-report {}: {e}", path.display()))?;
        Some(Baseline::Saved { path, url, cases })
    } else {
        None
    };
    let plan = Plan {
        golden,
        golden_arg: args.golden.display().to_string(),
        target,
        baseline,
        options: RunOptions {
            concurrency: usize::from(args.concurrency),
            timeout: args.timeout,
            max_body: args.max_body,
        },
        price: args.cost,
        baseline_price: args.baseline_cost.or(args.cost),
        thresholds: Thresholds {
            min_pass_rate: args.min_pass_rate,
            max_pass_rate_drop: args.max_pass_rate_drop,
            max_p95_latency: args.max_p95_latency,
            max_cost_per_request: args.max_cost_per_request,
        },
    };
    let outputs = Outputs {
        report_json: args.report_json,
        junit: args.junit,
        quiet: args.quiet,
    };
    Ok((plan, outputs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_parse_as_name_colon_value() {
        let (n, v) = parse_header("x-cutover-version: v2").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (n.as_str(), v.to_str().ok()),
            ("x-cutover-version", Some("v2"))
        );
        let (n, v) = parse_header("Authorization:Bearer a:b").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (n.as_str(), v.to_str().ok()),
            ("authorization", Some("Bearer a:b"))
        );
        assert!(parse_header("no-colon").is_err());
        assert!(parse_header("bad name:x").is_err());
    }

    #[test]
    fn sizes_and_durations_parse() {
        assert_eq!(parse_size("1KiB"), Ok(1024));
        assert!(parse_size("0").is_err());
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("0s").is_err());
    }
}
