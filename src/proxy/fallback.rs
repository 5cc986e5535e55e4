//! Phase: fallback. The chosen version first, then each entry of the
//! route's `fallbacks` (the version itself skipped), until one commits;
//! the caller answers with the refusal when none does.

use bytes::Bytes;
use http::header::HeaderMap;
use http::request::Parts;

use super::attempt::{Committed, attempt};
use super::ctx::Ctx;
use crate::runtime::{Route, Target};
use crate::telemetry::metrics::rare;

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
///
/// `prepared` is the client's head prepared for forwarding. An attempt
/// takes a copy of it, or the head itself when nothing can need it again:
/// the chain's last target, unless a `retry_reused` retry on a shared h2
/// connection might need to rebuild a request hyper consumed (HTTP/1 hands
/// every failed request back). An attempt whose request the client still
/// has hands its head back, and the next target re-points it instead of
/// copying again, unless the failed target added headers of its
/// own (they would leak).
pub async fn run<'r>(
    ctx: &mut Ctx,
    route: &'r Route,
    version: &'r Target,
    parts: &Parts,
    mut prepared: HeaderMap,
    body: &Bytes,
    mut on_first_failed: impl FnMut(),
) -> Option<Answered<'r>> {
    let mut previous: Option<&Target> = None;
    let mut unsent: Option<HeaderMap> = None;
    let mut chain = route.fallback_chain(&version.name);
    let mut target = version;
    loop {
        if let Some(prev) = previous {
            taken(ctx, route, prev, target);
        }
        let last = chain.clone().next().is_none();
        // Only a `retry_reused` retry on h2 rebuilds from the prepared head.
        let rebuilds = target.upstream.retry_rebuilds();
        let headers = match (unsent.take(), previous) {
            (Some(head), Some(prev)) if !prev.rewrites_headers() => head,
            _ if !rebuilds && last => std::mem::take(&mut prepared),
            _ => prepared.clone(),
        };
        let spare = rebuilds.then_some(&prepared);
        match attempt(ctx, &route.name, target, parts, headers, spare, body).await {
            Ok(committed) => {
                return Some(Answered {
                    target,
                    committed,
                    first: previous.is_none(),
                });
            }
            Err(failed) => {
                tracing::debug!(target = %target.name, error = ?failed.result, "attempt failed");
                if previous.is_none() {
                    ctx.own_attempt_failed = true;
                    on_first_failed();
                }
                unsent = failed.unsent;
                previous = Some(target);
                match chain.next() {
                    Some(f) => target = f,
                    None => return None,
                }
            }
        }
    }
}

/// Count a fallback from `prev` to `next` and extend the request's path.
fn taken(ctx: &mut Ctx, route: &Route, prev: &Target, next: &Target) {
    // Rare: label the counter here rather than keep a handle per pair.
    rare::fallbacks(&route.name, &prev.name, &next.name).increment(1);
    let path = ctx
        .fallback_path
        .get_or_insert_with(|| prev.name.to_string());
    path.push('>');
    path.push_str(&next.name);
}
