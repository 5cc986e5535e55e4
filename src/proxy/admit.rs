//! Phase: admission. Above `server.max_in_flight` a request is shed at
//! once, before its body is read: shedding exists to protect the process,
//! so it must stay cheap.

use std::sync::atomic::{AtomicUsize, Ordering};

/// One slot of `server.max_in_flight`. It holds no reference to the
/// counter: its one owner, the request's `Ctx`, already holds the data
/// plane and gives the slot back through it ([`Admission::release`]), on
/// every path, its `Drop` included. So a request clones the shared
/// `Arc<DataPlane>` once, not twice.
#[must_use = "a slot not released is lost until the process restarts"]
pub struct Admission {
    _slot: (),
}

impl Admission {
    /// A slot of `in_flight`, or `None` when `limit` are taken.
    pub fn take(in_flight: &AtomicUsize, limit: usize) -> Option<Admission> {
        let prev = in_flight.fetch_add(1, Ordering::AcqRel);
        if prev >= limit {
            in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Admission { _slot: () })
    }

    /// Give the slot back to the `in_flight` it was taken from.
    pub fn release(self, in_flight: &AtomicUsize) {
        in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slots_are_refused_past_the_limit_and_come_back_on_release() {
        let in_flight = AtomicUsize::new(0);
        let first = Admission::take(&in_flight, 2).expect("first");
        let second = Admission::take(&in_flight, 2).expect("second");
        assert!(Admission::take(&in_flight, 2).is_none());
        assert_eq!(
            in_flight.load(Ordering::Acquire),
            2,
            "a refusal takes nothing"
        );
        first.release(&in_flight);
        let third = Admission::take(&in_flight, 2).expect("a released slot is free again");
        second.release(&in_flight);
        third.release(&in_flight);
        assert_eq!(in_flight.load(Ordering::Acquire), 0);
    }
}
