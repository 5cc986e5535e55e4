//! Phase: admission. Above `server.max_in_flight` a request is shed at
//! once, before its body is read: shedding exists to protect the process,
//! so it must stay cheap.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::gateway::data_plane::DataPlane;

/// One slot of `server.max_in_flight`, given back when dropped.
pub struct Admission {
    plane: Arc<DataPlane>,
}

impl Admission {
    /// A slot, or `None` when `limit` are taken.
    pub fn take(plane: &Arc<DataPlane>, limit: usize) -> Option<Admission> {
        let prev = plane.in_flight.fetch_add(1, Ordering::AcqRel);
        if prev >= limit {
            plane.in_flight.fetch_sub(1, Ordering::AcqRel);
            return None;
        }
        Some(Admission {
            plane: Arc::clone(plane),
        })
    }
}

impl Drop for Admission {
    fn drop(&mut self) {
        self.plane.in_flight.fetch_sub(1, Ordering::AcqRel);
    }
}
