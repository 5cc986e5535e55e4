//! The registry of long-lived upstream state.
//!
//! A reload builds a new `Runtime`, but connection pools and breakers must
//! not be lost with it: they live here, keyed by upstream name. While the
//! url is unchanged the breaker (state, streak, window) carries over with
//! the new thresholds, and the pool with its connections, taking the new
//! `connect_timeout` and `pool_idle_timeout`. A changed url starts fresh.
//!
//! A reload prepares an [`UpstreamPlan`] (fallible, no side effects) and
//! commits it only once the whole new generation has compiled, so a
//! rejected reload touches no breaker and no pool (SPEC §8, §9).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::uri::Scheme as UriScheme;

use crate::config::{BreakerConfig, Scheme, UpstreamConfig};

use super::breaker::Breaker;
use super::connect::Endpoint;
use super::pool::{Pool, PoolSettings};
use super::tls::upstream_connector;

/// What survives a reload for one upstream.
pub struct UpstreamState {
    /// The url this state was built for.
    pub url: String,
    /// Idle connections and the h2 connection, shared by every route.
    pub pool: Arc<Pool>,
    /// Shared by every route; also counts and caps requests in flight.
    pub breaker: Arc<Breaker>,
}

impl UpstreamState {
    /// Requests in flight to this upstream (streams included).
    pub fn in_flight(&self) -> usize {
        self.breaker.in_flight()
    }
}

/// Control-plane only: the mutex is taken on reload and by the pool
/// sweeper, never per request.
pub struct UpstreamRegistry {
    states: Mutex<HashMap<String, Arc<UpstreamState>>>,
    /// Idle queues per pool: one per traffic worker thread.
    queues: usize,
}

/// The upstream states a new config would run on, built without touching
/// the registry: [`UpstreamRegistry::prepare`] may fail (a TLS setup that
/// cannot be built), [`UpstreamRegistry::commit`] cannot. A plan that is
/// dropped instead of committed leaves every breaker and pool as it was.
pub struct UpstreamPlan {
    /// In config order, for `Runtime::compile`.
    states: Vec<Arc<UpstreamState>>,
    names: Vec<String>,
    /// Kept breakers and pools, and the settings they take on commit.
    reconfigure: Vec<Reconfigure>,
}

struct Reconfigure {
    breaker: Arc<Breaker>,
    config: BreakerConfig,
    max_in_flight: usize,
    pool: Arc<Pool>,
    settings: PoolSettings,
}

impl UpstreamPlan {
    /// The states in config order.
    pub fn states(&self) -> &[Arc<UpstreamState>] {
        &self.states
    }
}

impl UpstreamRegistry {
    /// `workers`: the traffic runtime's worker threads.
    pub fn new(workers: usize) -> UpstreamRegistry {
        UpstreamRegistry {
            states: Mutex::default(),
            queues: workers.max(1),
        }
    }

    /// The state for each configured upstream, in config order: its breaker
    /// and pool are kept when name and url are unchanged, new otherwise.
    /// Nothing changes until the plan is committed.
    pub fn prepare(&self, upstreams: &[UpstreamConfig]) -> Result<UpstreamPlan, String> {
        let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
        let mut plan = UpstreamPlan {
            states: Vec::with_capacity(upstreams.len()),
            names: Vec::with_capacity(upstreams.len()),
            reconfigure: Vec::new(),
        };
        for u in upstreams {
            let state = match states.get(&u.name) {
                Some(old) if old.url == u.url.raw => {
                    plan.reconfigure.push(Reconfigure {
                        breaker: Arc::clone(&old.breaker),
                        config: u.breaker.clone(),
                        max_in_flight: u.max_in_flight,
                        pool: Arc::clone(&old.pool),
                        settings: settings(u),
                    });
                    Arc::clone(old)
                }
                _ => Arc::new(UpstreamState {
                    url: u.url.raw.clone(),
                    pool: Arc::new(new_pool(u, self.queues)?),
                    breaker: Arc::new(Breaker::new(u.breaker.clone(), u.max_in_flight)),
                }),
            };
            plan.names.push(u.name.clone());
            plan.states.push(state);
        }
        Ok(plan)
    }

    /// Make a prepared plan the registry's state: kept breakers and pools
    /// take their new settings, and upstreams no longer configured are
    /// forgotten (in-flight requests keep their `Arc`). Infallible.
    pub fn commit(&self, plan: UpstreamPlan) {
        for r in plan.reconfigure {
            r.breaker.set_config(r.config, r.max_in_flight);
            r.pool.update(r.settings);
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

    /// Close idle connections past their upstream's `pool_idle_timeout`.
    /// The control plane calls this every second.
    pub fn sweep(&self) {
        let pools: Vec<_> = {
            let states = self.states.lock().unwrap_or_else(|p| p.into_inner());
            states.values().map(|s| Arc::clone(&s.pool)).collect()
        };
        for pool in pools {
            pool.sweep();
        }
    }
}

fn settings(u: &UpstreamConfig) -> PoolSettings {
    PoolSettings {
        connect_timeout: u.connect_timeout,
        idle_timeout: u.pool_idle_timeout,
    }
}

fn new_pool(u: &UpstreamConfig, queues: usize) -> Result<Pool, String> {
    let (scheme, tls) = match u.url.scheme {
        Scheme::Http => (UriScheme::HTTP, None),
        Scheme::Https => (
            UriScheme::HTTPS,
            Some(upstream_connector().map_err(|e| format!("upstreams {}: {e}", u.name))?),
        ),
    };
    // IPv6 literals are written in brackets in URLs, bare in sockets and SNI.
    let host = u.url.host.trim_start_matches('[').trim_end_matches(']');
    let server_name = match tls {
        Some(_) => Some(
            rustls_pki_types::ServerName::try_from(host.to_owned())
                .map_err(|e| format!("upstreams {}: TLS server name {host:?}: {e}", u.name))?,
        ),
        None => None,
    };
    Ok(Pool::new(
        Endpoint {
            host: Arc::from(host),
            port: u.url.port,
            tls: server_name,
        },
        scheme,
        u.url.authority.clone(),
        tls,
        settings(u),
        queues,
    ))
}
