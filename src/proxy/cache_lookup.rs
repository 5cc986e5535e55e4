//! Phase: cache lookup (SPEC §6), on routes with `cache`. Decides bypass,
//! computes the key, and looks it up: a hit is replayed, an identical miss
//! already under way is followed as it streams, and a miss goes upstream
//! holding the fill of its key. With `cache.shared`, the fleet's Redis tier
//! is asked before the upstream.

use std::sync::Arc;

use bytes::Bytes;
use http::header;
use http::request::Parts;
use tokio::sync::mpsc;

use super::ctx::Ctx;
use crate::cache::{
    self, Entry, FillGuard, FlightEvent, FlightHead, Follow, Lock, RequestInput, RouteCache,
};
use crate::runtime::Target;
use crate::telemetry::CacheResult;

pub enum Lookup {
    Hit(Arc<Entry>),
    /// Follow an identical miss's answer as it streams (counted as a hit).
    Follow(FlightHead, mpsc::UnboundedReceiver<FlightEvent>),
    /// Go to the upstream; with a guard when this request fills the entry.
    Miss(Option<FillGuard>),
    Bypass,
    /// A follower found no `max_in_flight` slot after its wait.
    Shed,
}

pub async fn lookup(
    ctx: &mut Ctx,
    cache: &RouteCache,
    target: &Target,
    parts: &Parts,
    body: &Bytes,
) -> Lookup {
    let store = Arc::clone(&ctx.plane().cache);
    let result = if cache::bypass_requested(&parts.headers)
        || (cache.deterministic_only && !cache::is_deterministic(body))
    {
        Lookup::Bypass
    } else {
        let vary: Vec<_> = cache
            .vary
            .iter()
            .map(|name| (name.clone(), parts.headers.get(name)))
            .collect();
        let key = cache::cache_key_with(
            &target.cache_key,
            &RequestInput {
                method: &parts.method,
                path: parts.uri.path(),
                query: parts.uri.query(),
                content_type: parts.headers.get(header::CONTENT_TYPE),
                body,
                vary: &vary,
            },
        );
        match store.get(&key) {
            Some(entry) => Lookup::Hit(entry),
            None => match store.lock(key) {
                // With `cache.shared`: the fleet's tier before the upstream
                // (a short deadline; holding the lock, identical misses here
                // then find the entry locally).
                Lock::Leader(guard) if store.shares() => {
                    ctx.clock.pause();
                    let shared = store.get_shared(&key).await;
                    ctx.clock.resume();
                    match shared {
                        Some(entry) => Lookup::Hit(entry),
                        None => Lookup::Miss(Some(guard)),
                    }
                }
                Lock::Leader(guard) => Lookup::Miss(Some(guard)),
                Lock::Wait(flight) => {
                    // A follower waits without a max_in_flight slot, and
                    // at most lock_timeout; it takes a slot again to go on.
                    ctx.release_admission();
                    ctx.clock.pause();
                    let follow = flight.follow(ctx.rt.config.cache.lock_timeout).await;
                    ctx.clock.resume();
                    if !ctx.admit() {
                        return Lookup::Shed;
                    }
                    match follow {
                        Follow::Stream(head, events) => Lookup::Follow(head, events),
                        Follow::Stored => match store.get(&key) {
                            Some(entry) => Lookup::Hit(entry),
                            None => Lookup::Miss(None),
                        },
                        // Not storable, broken, too large, or no first
                        // byte in time: go on alone rather than queue
                        // behind another leader.
                        Follow::Alone => Lookup::Miss(None),
                    }
                }
            },
        }
    };
    let counted = match &result {
        Lookup::Hit(_) | Lookup::Follow(..) => CacheResult::Hit,
        Lookup::Miss(_) => CacheResult::Miss,
        // (A shed follower returns before this; its refusal counts it.)
        Lookup::Bypass | Lookup::Shed => CacheResult::Bypass,
    };
    cache.metrics.result(counted);
    store.count(match counted {
        CacheResult::Hit => Some(true),
        CacheResult::Miss => Some(false),
        CacheResult::Bypass => None,
    });
    ctx.cache = Some(counted);
    result
}
