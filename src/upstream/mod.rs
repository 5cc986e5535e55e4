//! Upstreams: the long-lived, per-upstream state that survives reloads
//! (connection pool, circuit breaker with its in-flight cap), kept in a
//! registry keyed by name and url.

pub mod breaker;
mod client;
mod registry;

pub use breaker::{Breaker, BreakerState, Permit, Rejection};
pub use client::{
    TimedConnector, UpstreamClient, UpstreamRequestBody, build_client, tls_client_config,
};
pub use registry::{UpstreamPlan, UpstreamRegistry, UpstreamState};
