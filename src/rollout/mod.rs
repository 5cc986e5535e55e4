//! Progressive rollout (SPEC §9): shadow → canary steps → promoted, judged
//! by anytime-valid statistics, with automatic rollback.
pub mod judge;
pub mod stats;
