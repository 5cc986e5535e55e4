//! The registry of long-lived upstream state.
//!
//! A reload builds a new `Runtime`, but connection pools and (later) breakers
//! must not be lost with it: they live here, keyed by upstream name, and are
//! reused while the url is unchanged. A changed url starts fresh.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use crate::config::UpstreamConfig;

use super::client::{UpstreamClient, build_client};

/// What survives a reload for one upstream.
pub struct UpstreamState {
    /// The url this state was built for.
    pub url: String,
    /// Baked into the client's connector: a change rebuilds the pool.
    connect_timeout: std::time::Duration,
    pub client: UpstreamClient,
    /// Requests currently in flight to this upstream.
    pub in_flight: AtomicUsize,
}

impl UpstreamState {
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Relaxed)
    }
}

/// RAII in-flight count for one upstream attempt.
pub struct InFlight(Arc<UpstreamState>);

impl InFlight {
    pub fn new(state: &Arc<UpstreamState>) -> InFlight {
        state.in_flight.fetch_add(1, Ordering::Relaxed);
        InFlight(Arc::clone(state))
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::Relaxed);
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
            let state = match states.get(&u.name) {
                Some(s) if s.url == u.url.raw && s.connect_timeout == u.connect_timeout => {
                    Arc::clone(s)
                }
                _ => Arc::new(UpstreamState {
                    url: u.url.raw.clone(),
                    connect_timeout: u.connect_timeout,
                    client: build_client(u).map_err(|e| format!("upstreams {}: {e}", u.name))?,
                    in_flight: AtomicUsize::new(0),
                }),
            };
            next.insert(u.name.clone(), Arc::clone(&state));
            out.push(state);
        }
        *states = next;
        Ok(out)
    }
}
