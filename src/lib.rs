//! cutover: a reverse proxy for shipping new versions of LLM agents safely.
//!
//! The crate is split along the two planes of `docs/architecture.md`:
//!
//! * control plane: [`config`] (load, validate) → [`runtime`] (compile into
//!   an immutable snapshot) published by [`gateway::Gateway`] into the
//!   [`gateway::DataPlane`], one atomic swap;
//!   [`admin`] serves health, readiness, metrics, `/status` and `/reload` on
//!   its own listener; [`reload`] watches the config file and SIGHUP and
//!   asks the gateway to reload.
//! * data plane: [`server`] (listeners, TLS, shutdown) → [`proxy`] (the
//!   request pipeline, holding only the `DataPlane`) using [`routing`] (route, sticky key, split),
//!   [`upstream`] (pooled clients per upstream), [`resilience`] (refusal)
//!   and [`telemetry`] (metric handles, access log).
//!
//! [`api`] owns what cutover understands of the model APIs agents speak
//! (usage, stream reassembly, refusals), for both planes' users.
//!
//! [`eval`] is `cutover eval`, the CI gate: golden replay, scoring, report.
//! [`mock`] is the fake agent backend used by the demo, tests and benches.

pub mod admin;
#[cfg(feature = "mimalloc")]
pub mod alloc;
pub mod api;
pub mod ascii;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod cluster;
pub mod config;
pub mod crypto;
pub mod eval;
pub mod gateway;
pub mod mock;
pub mod proxy;
pub mod reload;
pub mod resilience;
pub mod rollout;
pub mod routing;
pub mod runtime;
pub mod secret;
pub mod server;
pub mod shadow;
pub mod telemetry;
pub mod upstream;
