//! Act 4: route `faq` caches deterministic answers. The same questions are
//! asked again and again; then the prompt version is bumped in the config,
//! and every old entry misses without a flush.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use bytes::Bytes;
use toml_edit::Item;

use super::super::driver::{Ask, Ended, Event, Flow};
use super::super::screen::table;
use super::super::stage::route_mut;
use super::{Show, chat_body, pct};

const PATH: &str = "/v1/faq/chat/completions";
const UPSTREAM: &str = "agent-faq";
const QUESTIONS: [&str; 6] = [
    "How do I reset my password?",
    "What is your refund policy?",
    "Do you ship to Canada?",
    "How do I change my delivery address?",
    "Can I pay with PayPal?",
    "How do I cancel my subscription?",
];
const REQUESTS: usize = 240;
const CONCURRENCY: usize = 8;
const LIMIT: Duration = Duration::from_secs(20);
const OLD_PROMPT: &str = "faq-prompt@7";
const NEW_PROMPT: &str = "faq-prompt@8";

pub async fn play(show: &mut Show) -> Result<(), String> {
    let first = round(show, &format!("prompt {OLD_PROMPT}")).await?;
    expect_one_call_per_question(show, &first, "cold cache")?;
    show.hold().await;

    // A request that may not be cached: temperature 0.7.
    let bypass = show
        .driver
        .send(&Ask::new(PATH, None, chat_body(QUESTIONS[0], 0.7, &[])))
        .await?;
    show.requests += 1;
    if bypass.cache.as_deref() != Some("bypass") {
        return Err(format!(
            "a temperature-0.7 request on a deterministic_only route got x-cutover-cache: {:?}, not bypass",
            bypass.cache
        ));
    }
    show.screen.ok(
        "a temperature-0.7 request bypassed the cache (x-cutover-cache: bypass): only deterministic answers are stored",
    );

    let generation = show
        .stage
        .edit(|doc| {
            let version = route_mut(doc, "faq")?
                .get_mut("versions")
                .and_then(Item::as_array_of_tables_mut)
                .and_then(|v| v.get_mut(0))
                .ok_or("route faq has no version")?;
            let deps = version
                .get_mut("deps")
                .and_then(Item::as_inline_table_mut)
                .ok_or("route faq's version has no inline deps table")?;
            deps.insert("prompt", NEW_PROMPT.into());
            Ok(())
        })
        .await?;
    show.screen.event(&format!(
        "config edit: faq prompt {OLD_PROMPT} -> {NEW_PROMPT}; reloaded (config generation {generation}), cache not flushed"
    ));
    let second = round(show, &format!("prompt {NEW_PROMPT}")).await?;
    expect_one_call_per_question(show, &second, "after the prompt bump")?;
    let stale = second.bodies.intersection(&first.bodies).count();
    if stale != 0 {
        return Err(format!(
            "{stale} answers after the prompt bump were answers written for {OLD_PROMPT}: the cache served stale entries"
        ));
    }
    show.screen.ok(&format!(
        "0 stale answers: none of the {} answers after the bump was written for {OLD_PROMPT}",
        second.requests
    ));
    show.hold().await;
    Ok(())
}

#[derive(Default)]
struct Tally {
    requests: u64,
    /// `x-cutover-cache` → answers.
    by_result: BTreeMap<String, u64>,
    /// Requests agent-faq received during the round.
    upstream_calls: u64,
    /// Every distinct answer body.
    bodies: BTreeSet<Bytes>,
}

async fn round(show: &mut Show, label: &str) -> Result<Tally, String> {
    let start = show.stage.upstream_calls(UPSTREAM)?;
    let asks = (0..REQUESTS).map(|i| {
        Ask::new(
            PATH,
            None,
            chat_body(QUESTIONS[i % QUESTIONS.len()], 0.0, &[]),
        )
    });
    let mut tally = Tally::default();
    let (stage, screen) = (&show.stage, &show.screen);
    let ended = show
        .driver
        .round(asks, CONCURRENCY, LIMIT, |event| {
            match event {
                Event::Answer(_, answer) => {
                    let answer = answer.map_err(|e| format!("an faq request failed: {e}"))?;
                    if !answer.status.is_success() {
                        return Err(format!("an faq request got status {}", answer.status));
                    }
                    let result = answer
                        .cache
                        .ok_or("a response on a caching route has no x-cutover-cache header")?;
                    tally.requests += 1;
                    *tally.by_result.entry(result).or_insert(0) += 1;
                    tally.bodies.insert(answer.body);
                }
                Event::Tick => {
                    tally.upstream_calls = stage.upstream_calls(UPSTREAM)?.saturating_sub(start);
                    screen.panel(panel(label, &tally, stage));
                }
            }
            Ok(Flow::Continue)
        })
        .await?;
    if ended == Ended::TimedOut {
        return Err(format!(
            "route faq: {} of {REQUESTS} requests answered within {LIMIT:?}",
            tally.requests
        ));
    }
    show.requests += tally.requests;
    show.screen.settle(panel(label, &tally, &show.stage));
    Ok(tally)
}

/// Identical concurrent misses are coalesced, so the upstream answers each
/// question exactly once; everything else is a hit.
fn expect_one_call_per_question(show: &Show, tally: &Tally, when: &str) -> Result<(), String> {
    let questions = QUESTIONS.len() as u64;
    if tally.upstream_calls != questions {
        return Err(format!(
            "{when}: agent-faq was called {} times for {questions} distinct questions",
            tally.upstream_calls
        ));
    }
    let hits = tally.by_result.get("hit").copied().unwrap_or(0);
    if hits + questions < tally.requests {
        return Err(format!(
            "{when}: only {hits} of {} answers were cache hits",
            tally.requests
        ));
    }
    show.screen.ok(&format!(
        "{when}: {} requests, agent-faq called {} times (once per question), {} answered from the cache",
        tally.requests, tally.upstream_calls, hits
    ));
    Ok(())
}

fn panel(label: &str, tally: &Tally, stage: &super::super::stage::Stage) -> Vec<String> {
    let get = |k: &str| tally.by_result.get(k).copied().unwrap_or(0);
    let rows = vec![vec![
        label.to_owned(),
        tally.requests.to_string(),
        get("hit").to_string(),
        get("miss").to_string(),
        get("bypass").to_string(),
        tally.upstream_calls.to_string(),
    ]];
    let mut lines = vec![format!(
        "route faq: {} questions asked over and over, temperature 0",
        QUESTIONS.len()
    )];
    lines.extend(table(
        &[
            "round",
            "requests",
            "hit",
            "miss",
            "bypass",
            "agent-faq calls",
        ],
        &rows,
    ));
    let cache = stage.status().cache;
    lines.push(format!(
        "cache: {} entries, {} bytes, hit ratio {} since start",
        cache.entries,
        cache.bytes,
        pct(cache.hits, cache.hits + cache.misses)
    ));
    lines
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_demo_config_has_the_prompt_the_act_bumps() {
        let text = super::super::super::stage::DEMO_TOML;
        assert!(text.contains(&format!("prompt = \"{}\"", super::OLD_PROMPT)));
    }
}
