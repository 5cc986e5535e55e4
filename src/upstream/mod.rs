//! Upstreams: the long-lived, per-upstream state that survives reloads
//! (connection pool, circuit breaker with its in-flight cap), kept in a
//! registry keyed by name and url.

pub mod breaker;
mod connect;
pub mod h1;
pub mod pool;
mod registry;
mod tls;

pub use breaker::{Breaker, BreakerState, Permit, Rejection};
pub use connect::{ConnectError, Endpoint};
pub use pool::{Pool, PoolSettings, RequestBody, SendError, UpstreamBody, UpstreamError};
pub use registry::{UpstreamPlan, UpstreamRegistry, UpstreamState};
pub use tls::{tls_client_config, upstream_connector};
