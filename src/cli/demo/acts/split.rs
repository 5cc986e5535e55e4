//! Act 1: the sticky split on route `chat`, then a live reweight from the
//! config file. Also the `chat` traffic act 2 reuses.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use super::super::driver::{Ask, Driver, Ended, Event, Flow, Latencies, ms};
use super::super::screen::{Screen, table};
use super::super::stage::set_version_weight;
use super::{Show, chat_body, describe_weights, pct};

pub const ROUTE: &str = "chat";
const PATH: &str = "/v1/chat/completions";
/// Simulated users, `user-1` ... `user-300`.
const USERS: usize = 300;
const CONCURRENCY: usize = 16;
/// A round that takes longer than this is a failure, not a slow demo.
const LIMIT: Duration = Duration::from_secs(20);
/// Request shares may stray this far (percentage points) from the weights:
/// 300 users are a small sample, but the hash is deterministic, so a wider
/// gap means the split is wrong.
const SHARE_TOLERANCE: f64 = 5.0;

pub async fn play(show: &mut Show) -> Result<(), String> {
    let weights = show.stage.weights(ROUTE)?;
    show.screen.event(&format!(
        "route chat: sticky on the x-user-id header, {}",
        describe_weights(&weights)
    ));
    let first = round(&show.driver, &show.screen, 4, |r| r.panel()).await?;
    show.requests += first.requests;
    show.screen.settle(first.panel());
    check_sticky(show, &first, "")?;
    check_shares(show, &first, &weights)?;
    show.p50_before_shadow = first.latencies.percentile(50.0);
    show.hold().await;

    let generation = show
        .stage
        .edit(|doc| {
            set_version_weight(doc, ROUTE, "v1", 75.0)?;
            set_version_weight(doc, ROUTE, "v2", 25.0)
        })
        .await?;
    let ramped = show.stage.weights(ROUTE)?;
    show.screen.event(&format!(
        "rewrote the config file: {} -> {}; reloaded without a restart (config generation {generation})",
        describe_weights(&weights),
        describe_weights(&ramped)
    ));
    let second = round(&show.driver, &show.screen, 4, |r| r.panel()).await?;
    show.requests += second.requests;
    check_moves(show, &first, &second)?;
    check_sticky(show, &second, "after the ramp-up: ")?;
    check_shares(show, &second, &ramped)?;
    show.hold().await;
    Ok(())
}

/// What one round on route `chat` saw.
#[derive(Clone, Debug, Default)]
pub struct Round {
    pub requests: u64,
    pub total: u64,
    /// Requests answered per version.
    pub by_version: BTreeMap<String, u64>,
    /// The versions each user was answered by.
    pub per_user: BTreeMap<String, BTreeSet<String>>,
    pub latencies: Latencies,
}

impl Round {
    fn add(
        &mut self,
        ask: &Ask,
        answer: Result<super::super::driver::Answer, String>,
    ) -> Result<(), String> {
        let user = ask.user.as_deref().unwrap_or("?");
        let answer = answer.map_err(|e| format!("a request for {user} failed: {e}"))?;
        if !answer.status.is_success() {
            return Err(format!(
                "a request for {user} got status {}: {}",
                answer.status,
                String::from_utf8_lossy(&answer.body).trim()
            ));
        }
        let version = answer
            .version
            .ok_or("a response has no x-cutover-version header")?;
        // Each mock backend is named after its upstream: a mismatch means
        // the proxy sent the request somewhere it did not say.
        if answer.upstream.is_none() || answer.backend != answer.upstream {
            return Err(format!(
                "x-cutover-upstream says {:?} but backend {:?} answered",
                answer.upstream, answer.backend
            ));
        }
        self.requests += 1;
        self.latencies.add(answer.latency);
        *self.by_version.entry(version.clone()).or_insert(0) += 1;
        self.per_user
            .entry(user.to_owned())
            .or_default()
            .insert(version);
        Ok(())
    }

    /// The version a user saw, if it saw exactly one.
    pub fn version_of(&self, user: &str) -> Option<&str> {
        let seen = self.per_user.get(user)?;
        if seen.len() == 1 {
            seen.iter().next().map(String::as_str)
        } else {
            None
        }
    }

    /// Share of requests answered by `version`, in percent.
    fn share(&self, version: &str) -> f64 {
        let n = self.by_version.get(version).copied().unwrap_or(0);
        if self.requests == 0 {
            0.0
        } else {
            n as f64 * 100.0 / self.requests as f64
        }
    }

    /// The split table with the round's progress and latency.
    pub fn panel(&self) -> Vec<String> {
        let mut users: BTreeMap<&str, u64> = BTreeMap::new();
        for user in self.per_user.keys() {
            if let Some(v) = self.version_of(user) {
                *users.entry(v).or_insert(0) += 1;
            }
        }
        let rows: Vec<Vec<String>> = self
            .by_version
            .iter()
            .map(|(version, n)| {
                vec![
                    version.clone(),
                    n.to_string(),
                    pct(*n, self.requests),
                    users
                        .get(version.as_str())
                        .copied()
                        .unwrap_or(0)
                        .to_string(),
                ]
            })
            .collect();
        let mut lines = table(&["version", "requests", "share", "users"], &rows);
        lines.push(format!(
            "{} of {} requests, {CONCURRENCY} at a time; client latency p50 {} p95 {}",
            self.requests,
            self.total,
            ms(self.latencies.percentile(50.0)),
            ms(self.latencies.percentile(95.0))
        ));
        lines
    }
}

/// One round on route `chat`: every user sends `per_user` requests,
/// round-robin (every user's first, then every user's second, ...). Every
/// fifth user asks about the refund policy and offers the `search_kb` tool
/// first; the others ask about an order and offer `lookup_order` first.
pub async fn round(
    driver: &Driver,
    screen: &Screen,
    per_user: usize,
    panel: impl Fn(&Round) -> Vec<String>,
) -> Result<Round, String> {
    let asks = (0..per_user).flat_map(|_| {
        (1..=USERS).map(|n| {
            let body = if n % 5 == 0 {
                chat_body(
                    "What is your refund policy?",
                    0.2,
                    &["search_kb", "lookup_order"],
                )
            } else {
                chat_body("Where is my order?", 0.2, &["lookup_order", "search_kb"])
            };
            Ask::new(PATH, Some(format!("user-{n}")), body)
        })
    });
    let mut seen = Round {
        total: (USERS * per_user) as u64,
        ..Round::default()
    };
    let ended = driver
        .round(asks, CONCURRENCY, LIMIT, |event| {
            match event {
                Event::Answer(ask, answer) => seen.add(ask, answer)?,
                Event::Tick => screen.panel(panel(&seen)),
            }
            Ok(Flow::Continue)
        })
        .await?;
    if ended == Ended::TimedOut {
        return Err(format!(
            "route chat: {} of {} requests answered within {LIMIT:?}",
            seen.requests, seen.total
        ));
    }
    Ok(seen)
}

/// The sticky invariant: nobody saw two versions within one round.
fn check_sticky(show: &Show, seen: &Round, when: &str) -> Result<(), String> {
    let changed: Vec<(&String, &BTreeSet<String>)> =
        seen.per_user.iter().filter(|(_, v)| v.len() > 1).collect();
    if let Some((user, versions)) = changed.first() {
        let versions: Vec<&str> = versions.iter().map(String::as_str).collect();
        return Err(format!(
            "{} users changed version between their requests (e.g. {user} saw {}): the sticky split is broken",
            changed.len(),
            versions.join(" and ")
        ));
    }
    show.screen.ok(&format!(
        "{when}0 users changed version (each of {} users kept one version for all its requests)",
        seen.per_user.len()
    ));
    Ok(())
}

/// The request shares are close to the weights.
fn check_shares(show: &Show, seen: &Round, weights: &[(String, f64)]) -> Result<(), String> {
    for (version, weight) in weights {
        let share = seen.share(version);
        if (share - weight).abs() > SHARE_TOLERANCE {
            return Err(format!(
                "{version} got {share:.1}% of requests but its weight is {weight}%: the split is off by more than {SHARE_TOLERANCE} points"
            ));
        }
    }
    show.screen.ok(&format!(
        "shares match the weights ({}) within {SHARE_TOLERANCE} points",
        describe_weights(weights)
    ));
    Ok(())
}

/// Growing the last version's weight moves users into it, never out.
/// Shows the second round's split with the moves under it.
fn check_moves(show: &Show, before: &Round, after: &Round) -> Result<(), String> {
    let mut moves: BTreeMap<(&str, &str), u64> = BTreeMap::new();
    for user in before.per_user.keys() {
        let from = before.version_of(user).unwrap_or("?");
        let to = after.version_of(user).unwrap_or("?");
        *moves.entry((from, to)).or_insert(0) += 1;
    }
    let count = |from: &str, to: &str| moves.get(&(from, to)).copied().unwrap_or(0);
    let rows: Vec<Vec<String>> = [
        ("v1", "v1", "stayed on v1"),
        ("v1", "v2", "moved into v2"),
        ("v2", "v2", "stayed on v2"),
        ("v2", "v1", "moved out of v2"),
    ]
    .iter()
    .map(|(from, to, what)| {
        vec![
            format!("{from} -> {to}"),
            count(from, to).to_string(),
            (*what).to_owned(),
        ]
    })
    .collect();
    let mut lines = after.panel();
    lines.push(String::new());
    lines.push("users since the first round:".to_owned());
    lines.extend(table(&["move", "users", ""], &rows));
    show.screen.settle(lines);

    let out_of_v2 = count("v2", "v1");
    if out_of_v2 != 0 {
        return Err(format!(
            "{out_of_v2} users moved out of v2 when its weight grew: raising the last version's weight must only move users into it"
        ));
    }
    let into_v2 = count("v1", "v2");
    if into_v2 == 0 {
        return Err("no user moved into v2 although its weight grew from 10% to 25%".to_owned());
    }
    show.screen.ok(&format!(
        "0 moved out of v2 ({into_v2} moved in from v1, {} stayed)",
        count("v2", "v2")
    ));
    Ok(())
}
