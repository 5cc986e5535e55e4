//! Token usage, read from response bodies as their frames pass: the
//! scanner lives with the APIs it reads (see [`crate::api::usage`]).

pub use crate::api::usage::{Usage, UsageScanner};
