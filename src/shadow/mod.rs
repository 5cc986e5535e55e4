//! Shadow traffic: building blocks for mirrored requests (SPEC §4).
//!
//! [`compare`] turns a response body into one comparable JSON document
//! (reassembling streamed chat completions) and compares primary and shadow
//! answers at configured JSON pointers.

pub mod compare;
