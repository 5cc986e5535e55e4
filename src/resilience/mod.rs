//! Resilience: what happens when targets fail. For now the refusal; the
//! fallback chain lives in the proxy pipeline, breakers come next.

pub mod refusal;

pub use refusal::Refusal;
