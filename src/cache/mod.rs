//! The version-aware response cache (SPEC §6).
//!
//! * [`key`]: the cache key, a blake3 hash over a canonical, length-prefixed
//!   encoding of everything that can change the upstream's answer (route,
//!   version and its deps, `set_json`, method, path, query, body, `vary`
//!   headers), plus the bypass predicates. Pure, no I/O.

pub mod key;
