//! `server.max_buffered`: one budget for every request body held in memory
//! (SPEC §2).
//!
//! A body takes a [`Reservation`] as its bytes arrive (it counts from its
//! first byte), and the finished body is one `Bytes` that owns the
//! reservation (`Bytes::from_owner`): attempts, fallbacks, `set_json` and
//! mirrors all share clones of it, and the bytes are given back when the
//! last clone drops, whichever of them needs the body longest. A request
//! whose body would pass the budget is shed (`reason="overload"`).
//!
//! One atomic add per body frame and one subtract per body; the gauge
//! `cutover_buffered_bytes` moves with them.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::telemetry::names;

pub struct BodyBudget {
    held: AtomicU64,
    gauge: metrics::Gauge,
}

impl Default for BodyBudget {
    fn default() -> Self {
        BodyBudget {
            held: AtomicU64::new(0),
            gauge: metrics::gauge!(names::BUFFERED_BYTES),
        }
    }
}

impl BodyBudget {
    /// Bytes of request bodies held now.
    pub fn held(&self) -> u64 {
        self.held.load(Ordering::Acquire)
    }

    /// Whether `bytes` more would still fit under `limit` now (a cheap
    /// early look; only a reservation holds anything).
    pub fn would_fit(&self, bytes: u64, limit: u64) -> bool {
        self.held().saturating_add(bytes) <= limit
    }

    /// An empty reservation, grown as a body's bytes arrive.
    pub fn reservation(self: &Arc<Self>) -> Reservation {
        Reservation {
            budget: Arc::clone(self),
            bytes: 0,
        }
    }

    fn take(&self, bytes: u64, limit: u64) -> bool {
        let taken = self
            .held
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |held| {
                held.checked_add(bytes).filter(|&next| next <= limit)
            })
            .is_ok();
        if taken {
            self.gauge.increment(bytes as f64);
        }
        taken
    }

    fn give_back(&self, bytes: u64) {
        if bytes > 0 {
            self.held.fetch_sub(bytes, Ordering::AcqRel);
            self.gauge.decrement(bytes as f64);
        }
    }
}

/// Bytes of one body held against the budget, given back on drop.
pub struct Reservation {
    budget: Arc<BodyBudget>,
    bytes: u64,
}

impl Reservation {
    /// Hold `more` bytes, unless that would pass `limit`.
    pub fn grow(&mut self, more: u64, limit: u64) -> bool {
        let ok = self.budget.take(more, limit);
        if ok {
            self.bytes += more;
        }
        ok
    }

    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// The body as one `Bytes` that gives the reservation back when its
    /// last clone drops.
    pub fn attach(self, body: Bytes) -> Bytes {
        if self.bytes == 0 {
            return body;
        }
        Bytes::from_owner(Held {
            body,
            _reservation: self,
        })
    }
}

impl Drop for Reservation {
    fn drop(&mut self) {
        self.budget.give_back(self.bytes);
    }
}

/// The owner behind a budgeted body's `Bytes`.
struct Held {
    body: Bytes,
    _reservation: Reservation,
}

impl AsRef<[u8]> for Held {
    fn as_ref(&self) -> &[u8] {
        &self.body
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_until_the_last_clone_drops() {
        let budget = Arc::new(BodyBudget::default());
        let mut r = budget.reservation();
        assert!(r.grow(6, 10));
        assert!(!r.grow(5, 10), "past the limit");
        assert!(r.grow(4, 10));
        assert_eq!(budget.held(), 10);
        let body = r.attach(Bytes::from_static(b"0123456789"));
        let mirror = body.clone();
        let slice = body.slice(2..4);
        drop(body);
        assert_eq!(budget.held(), 10);
        drop(mirror);
        assert_eq!(&slice[..], b"23");
        assert_eq!(budget.held(), 10, "a slice still needs the body");
        drop(slice);
        assert_eq!(budget.held(), 0);
        assert!(budget.would_fit(10, 10));
        // An abandoned read gives its bytes back too.
        let mut r = budget.reservation();
        assert!(r.grow(3, 10));
        drop(r);
        assert_eq!(budget.held(), 0);
    }
}
