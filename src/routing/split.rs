//! The sticky split (SPEC §3).
//!
//! `bucket = u64_le(blake3(salt ++ 0x00 ++ key)[0..8]) mod 10000`, and
//! versions take consecutive bucket ranges in declaration order, each as wide
//! as its weight in basis points. Growing the last version's weight only
//! moves keys into it, and every replica agrees without talking.

use crate::config::WeightBps;

/// Number of buckets: one per basis point.
pub const BUCKETS: u16 = 10_000;

/// The bucket of a sticky key under a salt.
#[inline]
pub fn bucket(salt: &[u8], key: &[u8]) -> u16 {
    bucket_and_tag(salt, key).0
}

/// The bucket, and a 64-bit tag from the same hash (bytes 8..16) that the
/// access log shows instead of the raw key: it correlates one user's
/// requests without revealing who they are, and costs no second hash.
#[inline]
pub fn bucket_and_tag(salt: &[u8], key: &[u8]) -> (u16, u64) {
    let mut hasher = blake3::Hasher::new();
    hasher.update(salt);
    hasher.update(&[0]);
    hasher.update(key);
    let hash = hasher.finalize();
    let bytes = hash.as_bytes();
    let mut first = [0u8; 8];
    first.copy_from_slice(&bytes[..8]);
    let mut second = [0u8; 8];
    second.copy_from_slice(&bytes[8..16]);
    (
        (u64::from_le_bytes(first) % u64::from(BUCKETS)) as u16,
        u64::from_le_bytes(second),
    )
}

/// Cumulative upper bounds of each version's bucket range.
///
/// With weights 95 / 5 the bounds are `[9500, 10000]`: buckets 0..9499 map
/// to version 0 and 9500..9999 to version 1. A handful of versions makes a
/// linear scan faster than anything cleverer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BucketTable {
    bounds: Box<[u16]>,
}

impl BucketTable {
    /// Weights must sum to 10 000 (the loader guarantees it); a shortfall is
    /// given to the last version so that every bucket maps somewhere.
    pub fn new(weights: impl IntoIterator<Item = WeightBps>) -> BucketTable {
        let mut acc: u32 = 0;
        let mut bounds: Vec<u16> = weights
            .into_iter()
            .map(|w| {
                acc = (acc + u32::from(w.get())).min(u32::from(BUCKETS));
                acc as u16
            })
            .collect();
        if let Some(last) = bounds.last_mut() {
            *last = BUCKETS;
        }
        BucketTable {
            bounds: bounds.into_boxed_slice(),
        }
    }

    /// Index of the version that owns `bucket` (0..10000).
    #[inline]
    pub fn index_of(&self, bucket: u16) -> usize {
        self.bounds
            .iter()
            .position(|&upper| bucket < upper)
            .unwrap_or(self.bounds.len().saturating_sub(1))
    }

    pub fn len(&self) -> usize {
        self.bounds.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bounds.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bps(p: f64) -> WeightBps {
        WeightBps::from_percent(p).expect("valid test weight")
    }

    #[test]
    fn spec_vectors() {
        let chat = b"chat";
        assert_eq!(bucket(chat, b"user-1"), 4175);
        assert_eq!(bucket(chat, b"user-2"), 2613);
        assert_eq!(bucket(chat, b"user-8"), 9564);
        assert_eq!(bucket(chat, b"user-42"), 565);
        assert_eq!(bucket(chat, b"alice"), 2742);
        assert_eq!(bucket(chat, b"bob"), 8887);
        assert_eq!(bucket(chat, b""), 3913);
        assert_eq!(bucket(b"support", b"user-1"), 2181);
    }

    #[test]
    fn spec_weight_vectors() {
        let t = BucketTable::new([bps(95.0), bps(5.0)]);
        assert_eq!(t.index_of(bucket(b"chat", b"user-8")), 1);
        assert_eq!(t.index_of(bucket(b"chat", b"bob")), 0);
        let t = BucketTable::new([bps(85.0), bps(15.0)]);
        assert_eq!(t.index_of(bucket(b"chat", b"bob")), 1);
        assert_eq!(t.index_of(bucket(b"chat", b"user-8")), 1);
    }

    #[test]
    fn range_edges() {
        let t = BucketTable::new([bps(95.0), bps(5.0)]);
        assert_eq!(t.index_of(0), 0);
        assert_eq!(t.index_of(9499), 0);
        assert_eq!(t.index_of(9500), 1);
        assert_eq!(t.index_of(9999), 1);
        let t = BucketTable::new([bps(0.0), bps(100.0)]);
        assert_eq!(t.index_of(0), 1);
    }
}
