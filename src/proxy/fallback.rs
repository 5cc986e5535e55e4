//! Phase: fallback. The chosen version first, then each entry of the
//! route's `fallbacks` (the version itself skipped), until one commits;
//! the caller answers with the refusal when none does.

use bytes::Bytes;
use http::header::HeaderMap;
use http::request::Parts;

use super::attempt::{Committed, attempt};
use super::ctx::Ctx;
use crate::runtime::{Route, Target};
use crate::telemetry::names;

/// The target that committed and its answer; `first` says it was the
/// chosen version's own (the only answer the cache may store).
pub struct Answered<'r> {
    pub target: &'r Target,
    pub committed: Committed,
    pub first: bool,
}

/// Walk the chain. A failure of the chosen version's own attempt is noted
/// in `ctx` (what a rollout judges), and `on_first_failed` runs then (the
/// cache phase lets coalesced followers go on their own at once).
pub async fn run<'r>(
    ctx: &mut Ctx,
    route: &'r Route,
    version: &'r Target,
    parts: &Parts,
    headers: &HeaderMap,
    body: &Bytes,
    mut on_first_failed: impl FnMut(),
) -> Option<Answered<'r>> {
    let chain =
        std::iter::once(version).chain(route.fallbacks.iter().filter(|f| f.name != version.name));
    let mut previous: Option<&Target> = None;
    for (i, target) in chain.enumerate() {
        if let Some(prev) = previous {
            taken(ctx, route, prev, target);
        }
        match attempt(ctx, &route.name, target, parts, headers, body).await {
            Ok(committed) => {
                return Some(Answered {
                    target,
                    committed,
                    first: i == 0,
                });
            }
            Err(e) => {
                tracing::debug!(target = %target.name, error = ?e, "attempt failed");
                if i == 0 {
                    ctx.own_attempt_failed = true;
                    on_first_failed();
                }
                previous = Some(target);
            }
        }
    }
    None
}

/// Count a fallback from `prev` to `next` and extend the request's path.
fn taken(ctx: &mut Ctx, route: &Route, prev: &Target, next: &Target) {
    // Rare: label the counter here rather than keep a handle per pair.
    metrics::counter!(
        names::FALLBACKS_TOTAL,
        "route" => route.name.to_string(),
        "from" => prev.name.to_string(),
        "to" => next.name.to_string()
    )
    .increment(1);
    let path = ctx
        .fallback_path
        .get_or_insert_with(|| prev.name.to_string());
    path.push('>');
    path.push_str(&next.name);
}
