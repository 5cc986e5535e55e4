//! The registry of long-lived upstream state.
//!
//! A reload builds a new `Runtime`, but connection pools and breakers must
//! not be lost with it: they live here, keyed by upstream name. While the
//! url is unchanged the breaker (state, streak, window) carries over with
//! the new thresholds, and so does the pool unless `connect_timeout`
//! changed (it is baked into the connector). A changed url starts fresh.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::UpstreamConfig;

use super::breaker::Breaker;
use super::client::{UpstreamClient, build_client};

/// What survives a reload for one upstream.
pub struct UpstreamState {
    /// The url this state was built for.
    pub url: String,
    connect_timeout: Duration,
    /// Cheap to clone: clones share one connection pool.
    pub client: UpstreamClient,
    /// Shared by every route; also counts and caps requests in flight.
    pub breaker: Arc<Breaker>,
}

impl UpstreamState {
    /// Requests in flight to this upstream (streams included).
    pub fn in_flight(&self) -> usize {
        self.breaker.in_flight()
    }
}

/// Control-plane only: the mutex is taken on reload, never per request.
#[derive(Default)]
pub struct UpstreamRegistry {
    states: Mutex<HashMap<String, Arc<UpstreamState>>>,
}

impl UpstreamRegistry {
    pub fn new() -> UpstreamRegistry {
        UpstreamRegistry::default()
    }

    /// The state for each configured upstream, in config order: reused when
    /// name and url are unchanged, new otherwise. Upstreams no longer
    /// configured are forgotten (in-flight requests keep their `Arc`).
    pub fn reconcile(
        &self,
        upstreams: &[UpstreamConfig],
    ) -> Result<Vec<Arc<UpstreamState>>, String> {
        let mut states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let mut next = HashMap::with_capacity(upstreams.len());
        let mut out = Vec::with_capacity(upstreams.len());
        for u in upstreams {
            let fresh_client = || build_client(u).map_err(|e| format!("upstreams {}: {e}", u.name));
            let state = match states.get(&u.name) {
                Some(old) if old.url == u.url.raw => {
                    old.breaker.set_config(u.breaker.clone(), u.max_in_flight);
                    let client = if old.connect_timeout == u.connect_timeout {
                        old.client.clone()
                    } else {
                        fresh_client()?
                    };
                    Arc::new(UpstreamState {
                        url: u.url.raw.clone(),
                        connect_timeout: u.connect_timeout,
                        client,
                        breaker: Arc::clone(&old.breaker),
                    })
                }
                _ => Arc::new(UpstreamState {
                    url: u.url.raw.clone(),
                    connect_timeout: u.connect_timeout,
                    client: fresh_client()?,
                    breaker: Arc::new(Breaker::new(u.breaker.clone(), u.max_in_flight)),
                }),
            };
            next.insert(u.name.clone(), Arc::clone(&state));
            out.push(state);
        }
        *states = next;
        Ok(out)
    }
}
