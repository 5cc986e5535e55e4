//! The registry of long-lived upstream state.
//!
//! A reload builds a new `Runtime`, but connection pools and breakers must
//! not be lost with it: they live here, keyed by upstream name. While the
//! url is unchanged the breaker (state, streak, window) carries over with
//! the new thresholds, and the pool with its connections, taking the new
//! `connect_timeout` and `pool_idle_timeout`. A changed url starts fresh.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use http::uri::Scheme as UriScheme;

use crate::config::{Scheme, UpstreamConfig};

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

impl UpstreamRegistry {
    /// `workers`: the traffic runtime's worker threads.
    pub fn new(workers: usize) -> UpstreamRegistry {
        UpstreamRegistry {
            states: Mutex::default(),
            queues: workers.max(1),
        }
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
                Some(old) if old.url == u.url.raw => {
                    old.breaker.set_config(u.breaker.clone(), u.max_in_flight);
                    old.pool.update(settings(u));
                    Arc::clone(old)
                }
                _ => Arc::new(UpstreamState {
                    url: u.url.raw.clone(),
                    pool: Arc::new(new_pool(u, self.queues)?),
                    breaker: Arc::new(Breaker::new(u.breaker.clone(), u.max_in_flight)),
                }),
            };
            next.insert(u.name.clone(), Arc::clone(&state));
            out.push(state);
        }
        *states = next;
        Ok(out)
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
