//! Upstreams: the long-lived, per-upstream state that survives reloads
//! (connection pool, in-flight gauge; breakers come with the resilience
//! work), kept in a registry keyed by name and url.

pub mod breaker;
mod client;
mod registry;

pub use client::{UpstreamClient, UpstreamRequestBody, build_client, tls_client_config};
pub use registry::{InFlight, UpstreamRegistry, UpstreamState};
