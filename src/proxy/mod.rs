//! The request pipeline (the data plane).
//!
//! `service::handle` runs one request through named phases: route match →
//! admission (`max_in_flight`) → bounded body read → assignment (pin,
//! sticky bucket, random) → target attempts along the fallback chain →
//! response streaming through `ProxyBody` → `Exchange::finish`.

pub mod body;
pub mod budget;
pub mod exchange;
pub mod feedback;
pub mod headers;
pub mod json;
pub mod mirror;
pub mod service;

pub use body::ProxyBody;
pub use service::{ConnInfo, handle};
