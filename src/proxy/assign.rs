//! Phase: assign. Which version serves the request (SPEC §3): a session's
//! own version first, then a pin (with its token when the route needs
//! one), then the sticky key's bucket, then a random draw by weight. The
//! same sticky key decides which shadows mirror the request.

use http::HeaderMap;
use http::HeaderValue;

use super::ctx::Assignment;
use super::headers;
use crate::routing;
use crate::routing::session::Session;
use crate::runtime::Route;

pub enum Assigned {
    Version {
        index: usize,
        how: Assignment,
        /// A hash of the sticky key, for the access log (never the key).
        key_hash: Option<u64>,
        /// The session id the upstream gets: the value without its
        /// `VERSION.` prefix.
        bare_session: Option<HeaderValue>,
    },
    /// The session's version takes no traffic any more: answered 404 so
    /// the client starts a new session.
    SessionGone(usize),
}

pub fn assign(route: &Route, headers: &HeaderMap, key: Option<&[u8]>) -> Assigned {
    let key_hash = || key.map(|k| routing::split::bucket_and_tag(&route.salt, k).1);
    match route.session(headers) {
        Some(Session::Live(index, bare)) => {
            return Assigned::Version {
                index,
                how: Assignment::Session,
                key_hash: key_hash(),
                bare_session: Some(bare),
            };
        }
        Some(Session::Gone(index)) => return Assigned::SessionGone(index),
        None => {}
    }
    if let Some(pin) = &route.pin_header
        && let Some(value) = headers.get(pin)
        && let Some(index) = route.version_index(value.as_bytes())
        && route.pin_token.as_ref().is_none_or(|token| {
            headers
                .get(&headers::X_CUTOVER_PIN_TOKEN)
                .is_some_and(|given| token.matches(given.as_bytes()))
        })
    {
        return Assigned::Version {
            index,
            how: Assignment::Pinned,
            key_hash: None,
            bare_session: None,
        };
    }
    let (bucket, how, key_hash) = match key {
        Some(key) => {
            let (bucket, tag) = routing::split::bucket_and_tag(&route.salt, key);
            (bucket, Assignment::Sticky, Some(tag))
        }
        None => (
            rand::random_range(0..routing::BUCKETS),
            Assignment::Unsticky,
            None,
        ),
    };
    Assigned::Version {
        index: route.table.index_of(bucket),
        how,
        key_hash,
        bare_session: None,
    }
}

/// The shadows that mirror this request, as a bit set over the route's
/// shadows (the first 64; config validation keeps routes far below that).
pub fn mirror_set(route: &Route, key: Option<&[u8]>) -> u64 {
    let mut set = 0u64;
    for (i, shadow) in route.shadows.iter().take(64).enumerate() {
        if shadow.selects(key) {
            set |= 1 << i;
        }
    }
    set
}
