//! The request pipeline (the data plane), one module per phase:
//!
//! ```text
//! pipeline::handle
//!   matching → admit → request_body → assign → mirror (shadows)
//!   → cache_lookup → fallback (→ attempt → forward) → respond → body
//!   → log (once, when the body ends or the client leaves)
//! ```
//!
//! `ctx` is what the phases learn about the request, for `log` to write
//! up; `tap` holds what watches a response body (meter, usage, cache fill,
//! shadow compare). Imports point one way, down that list: no module here
//! imports one above it (`tests/module_graph.rs` checks).

pub mod admit;
pub mod assign;
pub mod attempt;
pub mod body;
pub mod budget;
pub mod cache_lookup;
pub mod ctx;
pub mod fallback;
pub mod feedback;
pub mod forward;
pub mod headers;
pub mod json;
pub mod log;
pub mod matching;
pub mod mirror;
pub mod pipeline;
pub mod request_body;
pub mod respond;
pub mod tap;

pub use body::ProxyBody;
pub use pipeline::{ConnInfo, handle};
