//! Act 2: the shadow `v3` on route `chat` is switched on by a config edit.
//! Every request is mirrored to it; users never wait for it, and its tool
//! choice is compared with the answer the user got.

use std::time::{Duration, Instant};

use toml_edit::value;

use super::super::driver::ms;
use super::super::stage::{Stage, named_mut, route_mut};
use super::split::{self, ROUTE, Round};
use super::{Show, pct};
use crate::admin::status::ShadowView;

const SHADOW: &str = "v3";
/// agent-v3's fastest answer (see `stage::MOCKS`): a user who waited for
/// the shadow could not be faster than this.
const SHADOW_MIN_LATENCY: Duration = Duration::from_millis(60);
/// Mirrors still running after the round get this long to finish (their
/// timeout is 5 s).
const DRAIN: Duration = Duration::from_secs(6);

pub async fn play(show: &mut Show) -> Result<(), String> {
    let generation = show
        .stage
        .edit(|doc| {
            let shadow = named_mut(route_mut(doc, ROUTE)?, "shadows", SHADOW)?;
            shadow["percent"] = value(100.0);
            Ok(())
        })
        .await?;
    show.screen.event(&format!(
        "config edit: shadow v3 (tool-schema@3, upstream agent-v3) at 100% of route chat; reloaded (config generation {generation})"
    ));
    let before = shadow_view(&show.stage)?;
    let p50_before = show.p50_before_shadow;
    let stage = &show.stage;
    let seen = split::round(&show.driver, &show.screen, 3, |r| {
        panel(r, stage, &before, p50_before)
    })
    .await?;
    show.requests += seen.requests;

    // Mirrors still in flight finish on their own; wait for them so the
    // counts below are complete (the users did not wait).
    let deadline = Instant::now() + DRAIN;
    while shadow_view(&show.stage)?.live.in_flight > 0 && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    show.screen
        .settle(panel(&seen, &show.stage, &before, p50_before));
    let after = shadow_view(&show.stage)?;
    let d = Delta::between(&before, &after);

    if let Some(v) = seen.by_version.keys().find(|v| *v == SHADOW) {
        return Err(format!("a user was answered by the shadow {v}"));
    }
    show.screen.ok(&format!(
        "0 of {} answers came from v3: its status, bytes and errors never reach a user",
        seen.requests
    ));

    let p50 = seen
        .latencies
        .percentile(50.0)
        .ok_or("no latency measured")?;
    if p50 >= SHADOW_MIN_LATENCY {
        return Err(format!(
            "users' p50 latency is {} with the shadow on, no faster than the shadow itself (>= {}): the client path waited for the mirror",
            ms(Some(p50)),
            ms(Some(SHADOW_MIN_LATENCY))
        ));
    }
    show.screen.ok(&format!(
        "users' p50 is {} with the shadow on ({} before it); agent-v3 takes 60-150 ms",
        ms(Some(p50)),
        ms(p50_before)
    ));

    let mirrored = d.ok + d.failure + d.dropped;
    if mirrored != seen.requests {
        return Err(format!(
            "{} requests but {mirrored} mirrors were sent or dropped: at 100% every request is mirrored once",
            seen.requests
        ));
    }
    show.screen.ok(&format!(
        "every request mirrored once: {} answered, {} failed, {} dropped past max_in_flight (never queued)",
        d.ok, d.failure, d.dropped
    ));

    if d.matched == 0 || d.mismatched == 0 {
        return Err(format!(
            "compare counted {} matches and {} mismatches; expected both (v3 always picks lookup_order, a fifth of users need search_kb)",
            d.matched, d.mismatched
        ));
    }
    show.screen.ok(&format!(
        "tool choice compared on {} answers: {} match, {} differ ({} match): v3's schema would send refund questions to lookup_order",
        d.matched + d.mismatched,
        d.matched,
        d.mismatched,
        pct(d.matched, d.matched + d.mismatched)
    ));
    show.hold().await;
    Ok(())
}

fn shadow_view(stage: &Stage) -> Result<ShadowView, String> {
    stage
        .status()
        .routes
        .into_iter()
        .find(|r| r.name == ROUTE)
        .and_then(|r| r.shadows.into_iter().find(|s| s.name == SHADOW))
        .ok_or_else(|| format!("route {ROUTE} has no shadow {SHADOW}"))
}

/// The shadow's counters over this act (they are totals since start).
struct Delta {
    ok: u64,
    failure: u64,
    dropped: u64,
    matched: u64,
    mismatched: u64,
}

impl Delta {
    fn between(before: &ShadowView, after: &ShadowView) -> Delta {
        Delta {
            ok: after.live.ok.saturating_sub(before.live.ok),
            failure: after.live.failure.saturating_sub(before.live.failure),
            dropped: after.live.dropped.saturating_sub(before.live.dropped),
            matched: after
                .live
                .compare_match
                .saturating_sub(before.live.compare_match),
            mismatched: after
                .live
                .compare_mismatch
                .saturating_sub(before.live.compare_mismatch),
        }
    }
}

fn panel(
    seen: &Round,
    stage: &Stage,
    before: &ShadowView,
    p50_before: Option<Duration>,
) -> Vec<String> {
    let mut lines = seen.panel();
    lines.push(format!("users' p50 before the shadow: {}", ms(p50_before)));
    lines.push(String::new());
    match shadow_view(stage) {
        Ok(now) => {
            let d = Delta::between(before, &now);
            lines.push(format!(
                "shadow v3 -> agent-v3 (60-150 ms): {} answered, {} failed, {} dropped, {} in flight (max {})",
                d.ok, d.failure, d.dropped, now.live.in_flight, now.max_in_flight
            ));
            lines.push(format!(
                "compare /choices/0/message/tool_calls/0/function/name: {} match, {} mismatch ({} match)",
                d.matched,
                d.mismatched,
                pct(d.matched, d.matched + d.mismatched)
            ));
        }
        Err(e) => lines.push(e),
    }
    lines
}
