//! The acts of the demo. Each is a title, the one line that says what to
//! notice, and a function that plays it on the shared [`Show`]. Add an act
//! by writing its function and appending it to [`ACTS`].

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use super::driver::{Driver, Observations};
use super::out::Out;
use super::stage::Stage;

/// What every act plays on.
pub struct Show {
    pub out: Out,
    pub stage: Stage,
    pub driver: Driver,
    /// The simulated users, `user-1` ... `user-N`.
    pub users: Vec<String>,
    /// Requests per user in each round of traffic.
    pub requests_per_user: usize,
    /// What the previous act's traffic saw (to show who moved).
    pub previous: Option<Observations>,
    /// Requests sent so far, over all acts.
    pub total_requests: u64,
}

pub type ActFuture<'a> = Pin<Box<dyn Future<Output = Result<(), String>> + 'a>>;

pub struct Act {
    pub title: &'static str,
    /// One line: what to notice.
    pub caption: &'static str,
    pub play: for<'a> fn(&'a mut Show) -> ActFuture<'a>,
}

pub const SPLIT_CAPTION: &str =
    "about 90% of requests go to v1 and 10% to v2, and every user always gets the same version.";
pub const RAMP_CAPTION: &str =
    "v2 grows from 10% to 25% by taking users from v1 only; nobody already on v2 is moved back.";

/// The show, in order.
pub const ACTS: &[Act] = &[
    Act {
        title: "Act 1: the sticky split",
        caption: SPLIT_CAPTION,
        play: play_split,
    },
    Act {
        title: "Act 2: ramp-up",
        caption: RAMP_CAPTION,
        play: play_ramp_up,
    },
];

/// Request shares may stray this far (percentage points) from the weights:
/// 300 users are a small sample, but the hash is deterministic, so a wider
/// gap means the split is wrong.
const SHARE_TOLERANCE: f64 = 5.0;

fn play_split(show: &mut Show) -> ActFuture<'_> {
    Box::pin(split(show))
}

fn play_ramp_up(show: &mut Show) -> ActFuture<'_> {
    Box::pin(ramp_up(show))
}

async fn split(show: &mut Show) -> Result<(), String> {
    let weights = show.stage.weights()?;
    show.out
        .info(&format!("weights in force: {}", describe_weights(&weights)));
    let seen = traffic(show).await?;
    split_table(&show.out, &seen);
    check_sticky(&show.out, &seen, show.requests_per_user)?;
    check_shares(&show.out, &seen, &weights)?;
    show.previous = Some(seen);
    Ok(())
}

async fn ramp_up(show: &mut Show) -> Result<(), String> {
    let before = show.stage.weights()?;
    let generation = show
        .stage
        .set_weights(&[("v1", 75.0), ("v2", 25.0)])
        .await?;
    let weights = show.stage.weights()?;
    show.out.info(&format!(
        "rewrote the config file: {} -> {}; reloaded without a restart (config generation {generation})",
        describe_weights(&before),
        describe_weights(&weights)
    ));
    let seen = traffic(show).await?;
    split_table(&show.out, &seen);
    check_sticky(&show.out, &seen, show.requests_per_user)?;
    check_shares(&show.out, &seen, &weights)?;

    let previous = show
        .previous
        .take()
        .ok_or("ramp-up needs the traffic of the split act before it")?;
    let mut moves: BTreeMap<(String, String), u64> = BTreeMap::new();
    for user in &show.users {
        let from = previous.version_of(user).unwrap_or("?");
        let to = seen.version_of(user).unwrap_or("?");
        *moves.entry((from.to_owned(), to.to_owned())).or_insert(0) += 1;
    }
    let count = |from: &str, to: &str| {
        moves
            .get(&(from.to_owned(), to.to_owned()))
            .copied()
            .unwrap_or(0)
    };
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
    show.out.info("users since act 1:");
    show.out.table(&["move", "users", ""], &rows);

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
    show.out.ok(&format!(
        "0 moved out of v2 ({into_v2} moved in from v1, {} stayed)",
        count("v2", "v2")
    ));
    show.previous = Some(seen);
    Ok(())
}

/// One round: every user sends `requests_per_user` requests.
async fn traffic(show: &mut Show) -> Result<Observations, String> {
    let users = show.users.len();
    let per_user = show.requests_per_user;
    let total = (users * per_user) as u64;
    let bar = show.out.progress(total, "sending");
    let seen = show
        .driver
        .drive(&show.users, per_user, bar.as_ref())
        .await?;
    if let Some(bar) = bar {
        bar.finish_and_clear();
    }
    show.total_requests += seen.requests;
    show.out.info(&format!(
        "{users} users x {per_user} requests = {} requests, {} at a time, in {:.1}s",
        seen.requests,
        show.driver.concurrency(),
        seen.elapsed.as_secs_f64()
    ));
    Ok(seen)
}

fn split_table(out: &Out, seen: &Observations) {
    let users = seen.users_by_version();
    let rows: Vec<Vec<String>> = seen
        .by_version
        .iter()
        .map(|(version, n)| {
            vec![
                version.clone(),
                n.to_string(),
                format!("{:.1}%", seen.share(version)),
                users
                    .get(version.as_str())
                    .copied()
                    .unwrap_or(0)
                    .to_string(),
            ]
        })
        .collect();
    out.table(&["version", "requests", "share", "users"], &rows);
}

/// The sticky invariant: nobody saw two versions within one round.
fn check_sticky(out: &Out, seen: &Observations, per_user: usize) -> Result<(), String> {
    let changed = seen.changed_users();
    if let Some((user, versions)) = changed.first() {
        let versions: Vec<&str> = versions.iter().map(String::as_str).collect();
        return Err(format!(
            "{} users changed version between their requests (e.g. {user} saw {}): the sticky split is broken",
            changed.len(),
            versions.join(" and ")
        ));
    }
    out.ok(&format!(
        "0 users changed version (each of {} users kept one version for all {per_user} requests)",
        seen.per_user.len()
    ));
    Ok(())
}

/// The request shares are close to the weights.
fn check_shares(out: &Out, seen: &Observations, weights: &[(String, f64)]) -> Result<(), String> {
    for (version, weight) in weights {
        let share = seen.share(version);
        if (share - weight).abs() > SHARE_TOLERANCE {
            return Err(format!(
                "{version} got {share:.1}% of requests but its weight is {weight}%: the split is off by more than {SHARE_TOLERANCE} points"
            ));
        }
    }
    out.ok(&format!(
        "shares match the weights ({}) within {SHARE_TOLERANCE} points",
        describe_weights(weights)
    ));
    Ok(())
}

/// "v1 90% / v2 10%"
pub fn describe_weights(weights: &[(String, f64)]) -> String {
    weights
        .iter()
        .map(|(v, w)| format!("{v} {w}%"))
        .collect::<Vec<_>>()
        .join(" / ")
}
