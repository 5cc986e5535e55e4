//! Telemetry: metric names (one place), per-generation metric handles, and
//! the non-blocking access log.
//!
//! Label values only ever come from config names (route, version, upstream)
//! or from closed sets (status class), so no client input can mint a series.

pub mod access_log;
pub mod metrics;
pub mod names;

pub use access_log::{AccessLog, AccessRecord};
pub use metrics::{StatusClass, VersionMetrics, install_recorder};
