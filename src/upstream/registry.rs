//! The registry of long-lived upstream state.
//!
//! A reload builds a new `Runtime`, but connection pools and breakers must
//! not be lost with it: they live here, keyed by upstream name. While the
//! url is unchanged the breaker (state, streak, window) carries over with
//! the new thresholds, and so does the pool unless `connect_timeout`
//! changed (it is baked into the connector). A changed url starts fresh.
//!
//! A reload prepares an [`UpstreamPlan`] (fallible, no side effects) and
//! commits it only once the whole new generation has compiled, so a
//! rejected reload touches no breaker and no pool (SPEC §8, §9).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crate::config::{BreakerConfig, UpstreamConfig};

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

/// The upstream states a new config would run on, built without touching
/// the registry: [`UpstreamRegistry::prepare`] may fail (a client that
/// cannot be built), [`UpstreamPlan::commit`] cannot. A plan that is
/// dropped instead of committed leaves every breaker and pool as it was.
pub struct UpstreamPlan {
    /// In config order, for `Runtime::compile`.
    states: Vec<Arc<UpstreamState>>,
    names: Vec<String>,
    /// Kept breakers and the thresholds they take on commit.
    reconfigure: Vec<(Arc<Breaker>, BreakerConfig, usize)>,
}

impl UpstreamPlan {
    /// The states in config order.
    pub fn states(&self) -> &[Arc<UpstreamState>] {
        &self.states
    }
}

impl UpstreamRegistry {
    pub fn new() -> UpstreamRegistry {
        UpstreamRegistry::default()
    }

    /// The state for each configured upstream, in config order: its breaker
    /// and pool are kept when name and url are unchanged (the pool unless
    /// `connect_timeout` changed), new otherwise. Nothing changes until the
    /// plan is committed.
    pub fn prepare(&self, upstreams: &[UpstreamConfig]) -> Result<UpstreamPlan, String> {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let mut plan = UpstreamPlan {
            states: Vec::with_capacity(upstreams.len()),
            names: Vec::with_capacity(upstreams.len()),
            reconfigure: Vec::new(),
        };
        for u in upstreams {
            let fresh_client = || build_client(u).map_err(|e| format!("upstreams {}: {e}", u.name));
            let state = match states.get(&u.name) {
                Some(old) if old.url == u.url.raw => {
                    plan.reconfigure.push((
                        Arc::clone(&old.breaker),
                        u.breaker.clone(),
                        u.max_in_flight,
                    ));
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
            plan.names.push(u.name.clone());
            plan.states.push(state);
        }
        Ok(plan)
    }

    /// Make a prepared plan the registry's state: kept breakers take their
    /// new thresholds, and upstreams no longer configured are forgotten
    /// (in-flight requests keep their `Arc`). Infallible.
    pub fn commit(&self, plan: UpstreamPlan) {
        for (breaker, config, max_in_flight) in plan.reconfigure {
            breaker.set_config(config, max_in_flight);
        }
        let next = plan.names.into_iter().zip(plan.states).collect();
        *self.states.lock().unwrap_or_else(|p| p.into_inner()) = next;
    }

    /// The state the registry holds for `name` now.
    pub fn get(&self, name: &str) -> Option<Arc<UpstreamState>> {
        self.states
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(name)
            .cloned()
    }
}
