//! Act 3: route `support` (agent-main, then agent-backup, then
//! small-model, then a polite refusal). agent-main fails, then every
//! backend does, then they all recover, and the breakers follow.

use std::collections::BTreeMap;
use std::time::Duration;

use http::StatusCode;

use super::super::driver::{Answer, Ask, Ended, Event, Flow};
use super::super::screen::table;
use super::super::stage::Stage;
use super::{Show, chat_body};

const PATH: &str = "/v1/support/chat/completions";
const CONCURRENCY: usize = 8;
const MAIN: &str = "agent-main";
const BACKUP: &str = "agent-backup";
const SMALL: &str = "small-model";
/// The chain, in order; the refusal comes after it.
const CHAIN: [&str; 3] = [MAIN, BACKUP, SMALL];
const REFUSAL: &str = "refusal";
/// Recovery waits for `open_for` (2 s) and a probe; this bounds it.
const RECOVERY_LIMIT: Duration = Duration::from_secs(12);
const LIMIT: Duration = Duration::from_secs(20);
/// Each simulated user pauses this long between requests: refusals are
/// instant, and a flood of them would hide the story in big numbers.
const THINK: Duration = Duration::from_millis(20);

pub async fn play(show: &mut Show) -> Result<(), String> {
    let mut breakers = Breakers::default();
    breakers.look(&show.stage, None);

    // 1. Healthy: agent-main answers everything.
    let healthy = phase(show, &mut breakers, "all healthy", Some(120), |_, _| false).await?;
    expect_all_from(&healthy, MAIN)?;
    show.screen.ok(&format!(
        "healthy: all {} answers from agent-main",
        healthy.requests
    ));
    show.hold().await;

    // 2. agent-main fails: its breaker opens, the backup answers.
    show.stage
        .mock(MAIN)?
        .faults()
        .fail_with(Some(StatusCode::SERVICE_UNAVAILABLE));
    show.screen
        .event("agent-main starts failing: it answers every request with 503");
    let failing = phase(show, &mut breakers, "agent-main down", Some(300), |_, _| {
        false
    })
    .await?;
    expect_all_from(&failing, BACKUP)?;
    if !breakers.seen_open(MAIN) {
        return Err("agent-main failed every request but its breaker never opened".to_owned());
    }
    let reached = failing.calls.get(MAIN).copied().unwrap_or(0);
    if reached * 4 > failing.requests {
        return Err(format!(
            "agent-main still got {reached} of {} requests while failing: the open breaker should keep them away",
            failing.requests
        ));
    }
    show.screen.ok(&format!(
        "agent-main's breaker opened: it got {reached} of {} requests, agent-backup answered all {} (no user saw a 503)",
        failing.requests, failing.requests
    ));
    show.hold().await;

    // 3. Everything fails: the polite refusal.
    for name in [BACKUP, SMALL] {
        show.stage
            .mock(name)?
            .faults()
            .fail_with(Some(StatusCode::SERVICE_UNAVAILABLE));
    }
    show.screen
        .event("agent-backup and small-model fail too: nothing is left to answer");
    let down = phase(show, &mut breakers, "everything down", Some(150), |_, _| {
        false
    })
    .await?;
    expect_all_from(&down, REFUSAL)?;
    let message = down
        .last_refusal
        .clone()
        .ok_or("no refusal text was seen")?;
    show.screen.ok(&format!(
        "all {} users got the polite refusal (200, a chat completion): \"{message}\"",
        down.requests
    ));
    show.hold().await;

    // 4. Recovery: the breakers half-open, a probe succeeds, they close.
    for name in CHAIN {
        show.stage.mock(name)?.faults().clear();
    }
    show.screen
        .event("all three backends recover; breakers let a probe through after open_for (2s)");
    let recovered = phase(
        show,
        &mut breakers,
        "recovering",
        None,
        |tally, breakers| {
            breakers.state(MAIN) == Some("closed")
                && tally.by_source.get(MAIN).copied().unwrap_or(0) >= 50
        },
    )
    .await?;
    if breakers.state(MAIN) != Some("closed") {
        return Err(format!(
            "agent-main recovered but its breaker is {:?}, not closed, after {RECOVERY_LIMIT:?}",
            breakers.state(MAIN)
        ));
    }
    show.screen.ok(&format!(
        "agent-main's breaker closed again after a successful probe and it answers again ({} of {} requests; the refusal covered the {} before the probe)",
        recovered.by_source.get(MAIN).copied().unwrap_or(0),
        recovered.requests,
        recovered.by_source.get(REFUSAL).copied().unwrap_or(0)
    ));
    show.hold().await;
    Ok(())
}

/// Who answered in one phase.
#[derive(Default)]
struct Tally {
    requests: u64,
    /// `x-cutover-upstream` → answers.
    by_source: BTreeMap<String, u64>,
    /// Requests each backend of the chain received during the phase.
    calls: BTreeMap<&'static str, u64>,
    last_refusal: Option<String>,
}

impl Tally {
    fn add(&mut self, answer: Answer) -> Result<(), String> {
        // openai-chat refusals are 200s too: users never see an error page.
        if answer.status != StatusCode::OK {
            return Err(format!(
                "a support request got status {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body).trim()
            ));
        }
        let source = answer
            .upstream
            .clone()
            .ok_or("a response has no x-cutover-upstream header")?;
        if source == REFUSAL {
            self.last_refusal = answer.message();
        } else if answer.backend.as_deref() != Some(source.as_str()) {
            return Err(format!(
                "x-cutover-upstream says {source} but backend {:?} answered",
                answer.backend
            ));
        }
        self.requests += 1;
        *self.by_source.entry(source).or_insert(0) += 1;
        Ok(())
    }
}

/// Sends `n` requests, or with `None` as many as it takes until `done`
/// (within [`RECOVERY_LIMIT`]), watching the breakers.
async fn phase(
    show: &mut Show,
    breakers: &mut Breakers,
    name: &str,
    n: Option<usize>,
    done: impl Fn(&Tally, &Breakers) -> bool,
) -> Result<Tally, String> {
    let start_calls: Vec<u64> = CHAIN
        .iter()
        .map(|b| show.stage.upstream_calls(b))
        .collect::<Result<_, _>>()?;
    let limit = if n.is_some() { LIMIT } else { RECOVERY_LIMIT };
    let asks = (0..n.unwrap_or(usize::MAX)).map(|i| {
        let question = format!("My order #{} has not arrived.", 1000 + i % 50);
        Ask::new(PATH, None, chat_body(&question, 0.2, &[])).thinking(THINK)
    });
    let mut tally = Tally::default();
    let (stage, screen) = (&show.stage, &show.screen);
    let ended = show
        .driver
        .round(asks, CONCURRENCY, limit, |event| {
            match event {
                Event::Answer(_, answer) => {
                    tally.add(answer.map_err(|e| format!("a support request failed: {e}"))?)?;
                }
                Event::Tick => {
                    breakers.look(stage, Some(screen));
                    for (b, start) in CHAIN.iter().zip(&start_calls) {
                        let now = stage.upstream_calls(b)?;
                        tally.calls.insert(b, now.saturating_sub(*start));
                    }
                    screen.panel(panel(name, &tally, breakers));
                    if done(&tally, breakers) {
                        return Ok(Flow::Stop);
                    }
                }
            }
            Ok(Flow::Continue)
        })
        .await?;
    if let (Ended::TimedOut, Some(n)) = (ended, n) {
        return Err(format!(
            "route support, {name}: {} of {n} requests answered within {limit:?}",
            tally.requests
        ));
    }
    show.requests += tally.requests;
    show.screen.settle(panel(name, &tally, breakers));
    Ok(tally)
}

fn expect_all_from(tally: &Tally, source: &str) -> Result<(), String> {
    let got = tally.by_source.get(source).copied().unwrap_or(0);
    if got != tally.requests {
        return Err(format!(
            "expected all {} answers from {source}, got {:?}",
            tally.requests, tally.by_source
        ));
    }
    Ok(())
}

fn panel(phase: &str, tally: &Tally, breakers: &Breakers) -> Vec<String> {
    let mut rows: Vec<Vec<String>> = CHAIN
        .iter()
        .map(|b| {
            vec![
                (*b).to_owned(),
                breakers.state(b).unwrap_or("?").to_owned(),
                tally.by_source.get(*b).copied().unwrap_or(0).to_string(),
                tally.calls.get(b).copied().unwrap_or(0).to_string(),
            ]
        })
        .collect();
    rows.push(vec![
        REFUSAL.to_owned(),
        "-".to_owned(),
        tally
            .by_source
            .get(REFUSAL)
            .copied()
            .unwrap_or(0)
            .to_string(),
        "-".to_owned(),
    ]);
    let mut lines = vec![format!(
        "route support, {phase}: {} requests, {CONCURRENCY} at a time",
        tally.requests
    )];
    lines.extend(table(
        &["in order", "breaker", "answered", "requests received"],
        &rows,
    ));
    lines
}

/// The chain's breaker states as `/status` shows them, with every change
/// reported as an event.
#[derive(Default)]
pub struct Breakers {
    states: BTreeMap<String, String>,
    opened: Vec<String>,
}

impl Breakers {
    fn look(&mut self, stage: &Stage, screen: Option<&super::super::screen::Screen>) {
        for upstream in stage.status().upstreams {
            if !CHAIN.contains(&upstream.name.as_str()) {
                continue;
            }
            let state = upstream.breaker.state;
            let before = self.states.insert(upstream.name.clone(), state.clone());
            if state == "open" && !self.opened.contains(&upstream.name) {
                self.opened.push(upstream.name.clone());
            }
            if let (Some(screen), Some(before)) = (screen, before)
                && before != state
            {
                screen.event(&format!("breaker {}: {before} -> {state}", upstream.name));
            }
        }
    }

    fn state(&self, upstream: &str) -> Option<&str> {
        self.states.get(upstream).map(String::as_str)
    }

    fn seen_open(&self, upstream: &str) -> bool {
        self.opened.iter().any(|u| u == upstream)
    }
}
