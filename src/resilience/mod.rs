//! Resilience (SPEC §5): the polite refusal a client gets when every
//! target has failed, rendered once per config generation in the shape of
//! the API it called.
//!
//! The rest of §5 lives where it acts: each upstream's circuit breaker in
//! `upstream::breaker`, the timeouts in `upstream` and the attempt phase
//! (`proxy::attempt`), and the walk down the fallback chain in
//! `proxy::fallback`, which ends here.

pub mod refusal;

pub use refusal::Refusal;
