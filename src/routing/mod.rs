//! Routing: which route a request takes (`matcher`), which key makes it
//! sticky (`sticky`), and which version that key lands on (`split`).

pub mod matcher;
pub mod split;
pub mod sticky;

pub use split::{BUCKETS, BucketTable, bucket};
pub use sticky::{StickyKey, sticky_key};
