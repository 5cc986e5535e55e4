//! `cutover eval`, the CI gate (SPEC §11): replay a golden data set against
//! a target (and optionally a baseline), score it, and decide by thresholds.
//!
//! The stages, one module each:
//!
//! * [`golden`]: the JSONL file → typed cases; every bad line is reported
//!   and nothing is sent;
//! * [`run`]: replay with bounded concurrency and per-case timeouts, bodies
//!   capped for the checks;
//! * [`check`]: each case's expectations against what came back (streams
//!   reassembled first);
//! * [`score`]: summaries, target-vs-baseline deltas, thresholds;
//! * [`model`]: the JSON report's data model, which scoring fills in and
//!   the renderers read: [`text`] (the table) and [`junit`];
//! * [`progress`]: a bar on a terminal, plain lines otherwise.

pub mod check;
pub mod golden;
pub mod junit;
pub mod model;
pub mod progress;
pub mod run;
pub mod score;
pub mod text;

use std::path::PathBuf;
use std::time::{Duration, Instant, SystemTime};

use golden::GoldenSet;
use model::{CaseReport, Price, Report, Settings, Side};
use progress::Progress;
use run::{Endpoint, RunOptions};
use score::Thresholds;

/// Characters of each response kept in the report.
const EXCERPT_CHARS: usize = 500;
/// Connecting is part of a case's time limit, but never longer than this:
/// a dead host should fail fast, not after a 60 s LLM timeout.
const MAX_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// A validated run: everything the command line asked for, parsed.
pub struct Plan {
    pub golden: GoldenSet,
    /// The golden path as given (shown in the report).
    pub golden_arg: String,
    pub target: Endpoint,
    pub baseline: Option<Baseline>,
    pub options: RunOptions,
    pub price: Option<Price>,
    pub baseline_price: Option<Price>,
    pub thresholds: Thresholds,
}

pub enum Baseline {
    /// Replayed side by side with the target.
    Live(Endpoint),
    /// The target side of an earlier `--report-json`.
    Saved {
        path: PathBuf,
        url: Option<String>,
        cases: Vec<CaseReport>,
    },
}

/// Replay, check, score and judge. Never fails: a target that is down is a
/// per-case result.
pub async fn execute(plan: &Plan, client: &run::EvalClient, progress: &Progress) -> Report {
    let started_at = humantime::format_rfc3339_seconds(SystemTime::now()).to_string();
    let started = Instant::now();
    let slots = plan.golden.cases.len();
    let mut target_cases: Vec<Option<CaseReport>> = vec![None; slots];
    let mut baseline_cases: Vec<Option<CaseReport>> = vec![None; slots];
    let target_run = replay_side(
        plan,
        client,
        progress,
        &plan.target,
        ("target", plan.price),
        &mut target_cases,
    );
    match &plan.baseline {
        Some(Baseline::Live(endpoint)) => {
            let baseline_run = replay_side(
                plan,
                client,
                progress,
                endpoint,
                ("baseline", plan.baseline_price),
                &mut baseline_cases,
            );
            tokio::join!(target_run, baseline_run);
        }
        _ => target_run.await,
    }
    progress.finish();

    let target = live_side(&plan.target, target_cases, plan.price);
    let mut warnings = Vec::new();
    let baseline = match &plan.baseline {
        None => None,
        Some(Baseline::Live(endpoint)) => {
            Some(live_side(endpoint, baseline_cases, plan.baseline_price))
        }
        Some(Baseline::Saved { path, url, cases }) => Some(Side {
            url: url.clone(),
            report_file: Some(path.display().to_string()),
            summary: score::summarize(cases, plan.baseline_price),
            cases: cases.clone(),
        }),
    };
    let comparison = baseline
        .as_ref()
        .map(|b| score::compare((&target.summary, &target.cases), (&b.summary, &b.cases)));
    if let (Some(c), Some(b)) = (&comparison, &baseline) {
        if !c.only_in_target.is_empty() || !c.only_in_baseline.is_empty() {
            warnings.push(format!(
                "the baseline ran a different golden set: {} case(s) only in this run, {} only in the baseline; pass rates are compared as they are",
                c.only_in_target.len(),
                c.only_in_baseline.len()
            ));
        }
        if b.summary.errors == b.summary.cases {
            warnings.push("the baseline answered no case: check its URL".into());
        }
    }
    let thresholds = score::judge(
        &plan.thresholds,
        &target.summary,
        baseline.as_ref().map(|b| &b.summary),
    );
    Report {
        schema_version: model::SCHEMA_VERSION,
        tool: format!("cutover {}", env!("CARGO_PKG_VERSION")),
        golden: plan.golden_arg.clone(),
        started_at,
        duration_ms: (started.elapsed().as_secs_f64() * 1e6).round() / 1e3,
        settings: Settings {
            concurrency: plan.options.concurrency,
            timeout_ms: plan.options.timeout.as_secs_f64() * 1000.0,
            max_body_bytes: plan.options.max_body,
            cost: plan.price,
            baseline_cost: plan.baseline_price,
            header_names: plan
                .target
                .headers
                .iter()
                .map(|(n, _)| n.to_string())
                .collect(),
            baseline_header_names: match &plan.baseline {
                Some(Baseline::Live(e)) => e.headers.iter().map(|(n, _)| n.to_string()).collect(),
                _ => Vec::new(),
            },
        },
        passed: thresholds.iter().all(|t| t.ok),
        target,
        baseline,
        comparison,
        thresholds,
        warnings,
    }
}

/// Replay every case against one side (`side` names it in the progress
/// lines), checking each answer as it lands and keeping its report at the
/// case's index in `slots`.
async fn replay_side(
    plan: &Plan,
    client: &run::EvalClient,
    progress: &Progress,
    endpoint: &Endpoint,
    (side, price): (&'static str, Option<Price>),
    slots: &mut [Option<CaseReport>],
) {
    let cases = &plan.golden.cases;
    let opts = plan.options;
    run::replay(client, endpoint, cases, opts, |i, response| {
        let Some(case) = cases.get(i) else { return };
        let verdict = check::check(case, &response, opts.max_body, EXCERPT_CHARS);
        progress.done(side, case, &response, &verdict);
        if let Some(slot) = slots.get_mut(i) {
            *slot = Some(CaseReport::new(case, &response, &verdict, price));
        }
    })
    .await;
}

/// A side replayed live: its reports in case order, and their summary.
fn live_side(endpoint: &Endpoint, slots: Vec<Option<CaseReport>>, price: Option<Price>) -> Side {
    let cases: Vec<CaseReport> = slots.into_iter().flatten().collect();
    Side {
        url: Some(endpoint.base.clone()),
        report_file: None,
        summary: score::summarize(&cases, price),
        cases,
    }
}

/// The client for a run whose cases are cut at `timeout` at most.
pub fn client(timeout: Duration) -> Result<run::EvalClient, String> {
    run::build_client(timeout.min(MAX_CONNECT_TIMEOUT))
}
