//! cutover: a reverse proxy for shipping new versions of LLM agents safely.
//!
//! The crate is split along the two planes of `docs/architecture.md`:
//!
//! * control plane: [`config`] (load, validate) → [`runtime`] (compile into
//!   an immutable snapshot, swapped atomically);
//! * data plane: [`server`] (listeners, TLS, shutdown) → [`proxy`] (the
//!   request pipeline) using [`routing`] (route, sticky key, split) and
//!   [`upstream`] (pooled clients per upstream).
//!
//! [`mock`] is the fake agent backend used by the demo, tests and benches.

pub mod cli;
pub mod config;
pub mod mock;
pub mod routing;
