//! Acts 5 and 6: route `agent` under a progressive rollout. First v2 is
//! judged against v1 step by step until it is promoted; then v2 becomes
//! the baseline, v3 the next canary, and v3's injected failures get it
//! rolled back by the controller, with no user seeing an error.

use std::time::{Duration, Instant};

use toml_edit::{Array, Item, value};

use super::super::driver::{Answer, Ask, Ended, Event, Flow, ms};
use super::super::screen::{Screen, table};
use super::super::stage::{Stage, route_mut};
use super::{Show, chat_body, pct};
use crate::rollout::{GateName, GateVerdict, ReasonKind, RolloutStatus, State, StepSummary};

const ROUTE: &str = "agent";
const PATH: &str = "/v1/agent/chat/completions";
/// Simulated users, cycled; sticky on x-user-id like route chat.
const USERS: usize = 2000;
const CONCURRENCY: usize = 16;
/// The four steps take 2 s each at the least; this bounds the whole walk.
const PROMOTION_LIMIT: Duration = Duration::from_secs(45);
const ROLLBACK_LIMIT: Duration = Duration::from_secs(20);
/// Requests sent after the rollback, none of which may reach v3.
const AFTER_ROLLBACK: usize = 600;
/// The share of v3's requests that fail in act 6.
const V3_ERROR_RATE: f64 = 0.35;

/// Act 6's versions: v2, promoted in act 5, becomes the baseline; v3 (the
/// version shadowed in act 2) is the canary. (name, upstream, deps)
const NEXT_VERSIONS: [(&str, &str, &str); 2] = [
    (
        "v2",
        "agent-v2",
        r#"{ prompt = "support-prompt@2025-11-03", model = "gpt-4o-2024-08-06", index = "kb-2025-11-01" }"#,
    ),
    (
        "v3",
        "agent-v3",
        r#"{ prompt = "support-prompt@2025-12-01", tools = "tool-schema@3", model = "gpt-4o-2024-08-06", index = "kb-2025-11-01" }"#,
    ),
];

pub async fn play_promotion(show: &mut Show) -> Result<(), String> {
    let status = show.stage.rollout(ROUTE)?;
    show.screen.event(&format!(
        "route agent: rollout v1 -> v2 is {}; steps 10/25/50/100%, each at least 2s with 60 judged v2 requests and every gate passing",
        label(&status)
    ));
    let (walk, _) = drive(show, "v2", asks(), PROMOTION_LIMIT, |s| {
        matches!(s.detail, State::Promoted | State::RolledBack { .. })
    })
    .await?;
    let last = show.stage.rollout(ROUTE)?;
    if !matches!(last.detail, State::Promoted) {
        return Err(format!(
            "the healthy canary v2 was not promoted within {PROMOTION_LIMIT:?}: the rollout is {} ({:?})",
            label(&last),
            last.detail
        ));
    }
    let labels: Vec<&str> = walk.steps.iter().map(|s| s.label.as_str()).collect();
    let expected = [
        "step 0 (10%)",
        "step 1 (25%)",
        "step 2 (50%)",
        "promoted (100%)",
    ];
    if labels != expected {
        return Err(format!(
            "the rollout went {labels:?}; expected every step in order: {expected:?}"
        ));
    }
    show.screen.ok(&format!(
        "v2 walked 10% -> 25% -> 50% -> 100% and was promoted in {:.1}s, with {} requests and no user error",
        walk.elapsed.as_secs_f64(),
        walk.requests
    ));
    show.hold().await;
    Ok(())
}

pub async fn play_rollback(show: &mut Show) -> Result<(), String> {
    let generation = show
        .stage
        .edit(|doc| {
            let route = route_mut(doc, ROUTE)?;
            let versions = route
                .get_mut("versions")
                .and_then(Item::as_array_of_tables_mut)
                .ok_or("route agent has no versions")?;
            for (n, (name, upstream, deps)) in NEXT_VERSIONS.iter().enumerate() {
                let version = versions
                    .get_mut(n)
                    .ok_or("route agent has fewer than two versions")?;
                let deps: toml_edit::Value = deps
                    .parse()
                    .map_err(|e| format!("the act's deps are not TOML: {e}"))?;
                version["name"] = value(*name);
                version["upstream"] = value(*upstream);
                version["deps"] = value(deps);
            }
            route["fallbacks"] = value(Array::from_iter(["v2"]));
            let rollout = route
                .get_mut("rollout")
                .and_then(Item::as_table_mut)
                .ok_or("route agent has no [routes.rollout]")?;
            rollout["baseline"] = value("v2");
            rollout["canary"] = value("v3");
            Ok(())
        })
        .await?;
    show.screen.event(&format!(
        "config edit: v2 is the baseline now, v3 (tool-schema@3) the canary; reloaded (config generation {generation}): a new rollout starts"
    ));
    show.stage
        .mock("agent-v3")?
        .faults()
        .set_error_rate(V3_ERROR_RATE);
    show.screen.event(&format!(
        "agent-v3 fails {:.0}% of its requests (injected); route agent retries them on v2",
        V3_ERROR_RATE * 100.0
    ));

    let (run, _) = drive(show, "v3", asks(), ROLLBACK_LIMIT, |s| {
        matches!(s.detail, State::RolledBack { .. })
    })
    .await?;
    let last = show.stage.rollout(ROUTE)?;
    let State::RolledBack { reason } = &last.detail else {
        return Err(format!(
            "v3 failed {:.0}% of its requests but was not rolled back within {ROLLBACK_LIMIT:?}: the rollout is {}",
            V3_ERROR_RATE * 100.0,
            label(&last)
        ));
    };
    show.screen.ok(&format!(
        "v3 rolled back automatically after {:.1}s at its first step: {} ({})",
        run.elapsed.as_secs_f64(),
        explain(reason.kind),
        reason.kind.as_str()
    ));
    show.screen.ok(&format!(
        "users never saw v3's errors: {} of its answers failed and were retried on v2; all {} requests answered 200",
        run.rescued, run.requests
    ));
    show.hold().await;

    // After the rollback nobody reaches v3.
    let calls_before = show.stage.upstream_calls("agent-v3")?;
    let (after, ended) = drive(
        show,
        "v3",
        asks().take(AFTER_ROLLBACK),
        ROLLBACK_LIMIT,
        |_| false,
    )
    .await?;
    if ended != Ended::Done {
        return Err(format!(
            "route agent: {} of {AFTER_ROLLBACK} requests answered within {ROLLBACK_LIMIT:?}",
            after.requests
        ));
    }
    let calls = show
        .stage
        .upstream_calls("agent-v3")?
        .saturating_sub(calls_before);
    if after.canary_chosen != 0 || calls != 0 {
        return Err(format!(
            "after the rollback {} requests were still assigned to v3 and agent-v3 got {calls}",
            after.canary_chosen
        ));
    }
    show.screen.ok(&format!(
        "after the rollback: 0 of {} requests reached v3",
        after.requests
    ));
    show.stage.mock("agent-v3")?.faults().clear();
    show.hold().await;
    Ok(())
}

/// What a rollout act's traffic saw.
#[derive(Default)]
struct Walk {
    requests: u64,
    /// Answers whose chosen version was the canary.
    canary_chosen: u64,
    /// Canary answers that failed and were served by the fallback.
    rescued: u64,
    steps: Vec<StepSeen>,
    elapsed: Duration,
}

/// One state or step of the rollout, as the traffic saw it.
struct StepSeen {
    label: String,
    started: Instant,
    requests: u64,
    canary: u64,
}

impl Walk {
    fn add(&mut self, canary: &str, answer: Answer) -> Result<(), String> {
        if !answer.status.is_success() {
            return Err(format!(
                "a user on route agent got status {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body).trim()
            ));
        }
        let chosen = answer.version.as_deref() == Some(canary);
        self.requests += 1;
        if chosen {
            self.canary_chosen += 1;
            if answer.backend.as_deref() != Some(&format!("agent-{canary}")) {
                self.rescued += 1;
            }
        }
        if let Some(step) = self.steps.last_mut() {
            step.requests += 1;
            step.canary += u64::from(chosen);
        }
        Ok(())
    }

    /// Notes the rollout's state; on a change, starts a new step row and
    /// says why in an event.
    fn look(&mut self, status: &RolloutStatus, previous: Option<&RolloutStatus>, screen: &Screen) {
        let now = label(status);
        if self.steps.last().is_some_and(|s| s.label == now) {
            return;
        }
        if let Some(before) = self.steps.last() {
            let why = match &status.detail {
                State::RolledBack { reason } => format!(": {reason}"),
                _ => previous.map_or_else(String::new, passed_gates),
            };
            screen.event(&format!("rollout: {} -> {now}{why}", before.label));
        }
        self.steps.push(StepSeen {
            label: now,
            started: Instant::now(),
            requests: 0,
            canary: 0,
        });
    }
}

/// "step 1 (25%)", "promoted (100%)", "rolled_back (0%)".
fn label(status: &RolloutStatus) -> String {
    match status.detail {
        State::Canary { step } => format!("step {step} ({}%)", status.canary_weight),
        _ => format!("{} ({}%)", status.state, status.canary_weight),
    }
}

/// "; every gate passed: error_rate_margin, ...". A step advances only
/// when every gate passes, and the controller clears the verdicts when the
/// step changes, so the gates are named from the last judgement seen.
fn passed_gates(status: &RolloutStatus) -> String {
    let gates: Vec<&str> = status
        .judgement
        .iter()
        .flat_map(|j| &j.gates)
        .filter(|g| g.verdict != GateVerdict::Skipped)
        .map(|g| g.gate.as_str())
        .collect();
    if gates.is_empty() {
        String::new()
    } else {
        format!("; every gate passed: {}", gates.join(", "))
    }
}

fn asks() -> impl Iterator<Item = Ask> {
    (1..=USERS).cycle().map(|n| {
        Ask::new(
            PATH,
            Some(format!("customer-{n}")),
            chat_body("Where is my order?", 0.2, &["lookup_order"]),
        )
    })
}

/// Sends `asks` until they run out, `done` holds for the rollout (checked
/// every tick), or `limit` passes.
async fn drive(
    show: &mut Show,
    canary: &str,
    asks: impl Iterator<Item = Ask>,
    limit: Duration,
    done: impl Fn(&RolloutStatus) -> bool,
) -> Result<(Walk, Ended), String> {
    let started = Instant::now();
    let mut walk = Walk::default();
    let mut previous: Option<RolloutStatus> = None;
    let (stage, screen) = (&show.stage, &show.screen);
    let first = stage.rollout(ROUTE)?;
    walk.look(&first, None, screen);
    let ended = show
        .driver
        .round(asks, CONCURRENCY, limit, |event| {
            match event {
                Event::Answer(_, answer) => walk.add(
                    canary,
                    answer.map_err(|e| format!("a request on route agent failed: {e}"))?,
                )?,
                Event::Tick => {
                    let status = stage.rollout(ROUTE)?;
                    walk.look(&status, previous.as_ref(), screen);
                    screen.panel(panel(&walk, &status, stage));
                    let stop = done(&status);
                    previous = Some(status);
                    if stop {
                        return Ok(Flow::Stop);
                    }
                }
            }
            Ok(Flow::Continue)
        })
        .await?;
    walk.elapsed = started.elapsed();
    show.requests += walk.requests;
    let status = show.stage.rollout(ROUTE)?;
    show.screen.settle(panel(&walk, &status, &show.stage));
    Ok((walk, ended))
}

fn panel(walk: &Walk, status: &RolloutStatus, stage: &Stage) -> Vec<String> {
    let versions: Vec<String> = stage
        .weights(ROUTE)
        .map(|w| w.into_iter().map(|(v, _)| v).collect())
        .unwrap_or_default();
    let (baseline, canary) = match versions.as_slice() {
        [b, c] => (b.clone(), c.clone()),
        _ => ("baseline".to_owned(), "canary".to_owned()),
    };
    let mut lines = vec![format!(
        "route agent: {baseline} (baseline) vs {canary} (canary); now {}, {:.1}s on it",
        label(status),
        status.stage_seconds
    )];
    let row = |name: String, s: &StepSummary| {
        vec![
            name,
            s.requests.to_string(),
            s.failures.to_string(),
            ms(s.p95_seconds.map(Duration::from_secs_f64)),
        ]
    };
    lines.extend(table(
        &["judged on this step", "requests", "failures", "p95"],
        &[
            row(format!("{baseline} (baseline)"), &status.baseline),
            row(format!("{canary} (canary)"), &status.canary),
        ],
    ));
    if let Some(judgement) = &status.judgement {
        let gates: Vec<String> = judgement
            .gates
            .iter()
            .map(|g| format!("{} {}", g.gate.as_str(), verdict_word(g.verdict)))
            .collect();
        lines.push(format!("gates: {}", gates.join(", ")));
    }
    lines.push(String::new());
    let rows: Vec<Vec<String>> = walk
        .steps
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let lasted = walk
                .steps
                .get(i + 1)
                .map_or_else(|| s.started.elapsed(), |next| next.started - s.started);
            vec![
                s.label.clone(),
                format!("{:.1}s", lasted.as_secs_f64()),
                s.requests.to_string(),
                pct(s.canary, s.requests),
            ]
        })
        .collect();
    lines.extend(table(
        &["rollout", "lasted", "requests", &format!("to {canary}")],
        &rows,
    ));
    lines
}

/// What a rollback reason means, in the demo's own terms.
fn explain(kind: ReasonKind) -> &'static str {
    match kind {
        ReasonKind::ErrorRate => "its error rate over the last 10 s crossed 20%",
        ReasonKind::LatencyP99 => "its p99 latency over the window crossed the trigger",
        ReasonKind::BreakerOpen => "its upstream's circuit breaker opened",
        ReasonKind::Gate(GateName::ErrorRateMargin) => {
            "the judge showed its failure rate is more than 5 points above v2's"
        }
        ReasonKind::Gate(GateName::MaxErrorRate) => {
            "the judge showed its failure rate is above 10%"
        }
        ReasonKind::Gate(GateName::LatencyP95Ratio) => {
            "the judge showed its p95 latency is more than twice v2's"
        }
        ReasonKind::Gate(_) => "a gate failed",
        ReasonKind::Abort => "an operator aborted it",
    }
}

fn verdict_word(v: GateVerdict) -> &'static str {
    match v {
        GateVerdict::Pass => "pass",
        GateVerdict::Fail => "FAIL",
        GateVerdict::Inconclusive => "inconclusive",
        GateVerdict::Skipped => "skipped",
    }
}
