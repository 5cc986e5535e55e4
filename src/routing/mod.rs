//! Routing: which route a request takes (`matcher`, indexed by `index`),
//! which key makes it sticky (`sticky`), which version that key lands on
//! (`split`), and which version a protocol session belongs to (`session`).

pub mod index;
pub mod matcher;
pub mod session;
pub mod split;
pub mod sticky;

pub use index::RouteIndex;
pub use split::{BUCKETS, BucketTable, bucket};
pub use sticky::{StickyKey, sticky_key};
