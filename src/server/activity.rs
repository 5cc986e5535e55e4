//! What a client connection is doing, as the parking decision in
//! [`super::conn`] reads it: written by the service (requests started and
//! still open) and by the framing sniffer (blocked writes, a partial head).
//! A leaf, so the connection and the sniffer both import it and not each
//! other.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};

/// What the parking decision reads: kept up to date by the service (for
/// requests) and by [`Sniffed`] (for writes).
#[derive(Debug, Default)]
pub struct Activity {
    /// Requests started on this connection.
    started: AtomicU64,
    /// Requests whose response is not yet fully handed to hyper (or
    /// dropped).
    open: AtomicU32,
    /// The last write or flush did not complete: hyper (or TLS) still holds
    /// bytes for the client.
    write_blocked: AtomicBool,
    /// The bytes read so far end inside a message (a partial head): the
    /// head-read deadline must keep running, so the connection is not parked.
    mid_message: AtomicBool,
}

impl Activity {
    pub(super) fn begin(self: &Arc<Self>) -> Open {
        self.started.fetch_add(1, Ordering::Relaxed);
        self.open.fetch_add(1, Ordering::Relaxed);
        Open(Arc::clone(self))
    }

    pub(super) fn set_write_blocked(&self, blocked: bool) {
        if self.write_blocked.load(Ordering::Relaxed) != blocked {
            self.write_blocked.store(blocked, Ordering::Relaxed);
        }
    }

    pub(super) fn set_mid_message(&self, mid: bool) {
        if self.mid_message.load(Ordering::Relaxed) != mid {
            self.mid_message.store(mid, Ordering::Relaxed);
        }
    }

    pub(super) fn started(&self) -> u64 {
        self.started.load(Ordering::Relaxed)
    }

    /// No request in flight and nothing left to write: hyper is waiting for
    /// the next head (or reading part of it).
    pub(super) fn awaiting_head(&self) -> bool {
        self.open.load(Ordering::Relaxed) == 0 && !self.write_blocked.load(Ordering::Relaxed)
    }

    /// Waiting for a head, with none of it read: safe to park.
    pub(super) fn quiet(&self) -> bool {
        self.awaiting_head() && !self.mid_message.load(Ordering::Relaxed)
    }
}

/// A request in flight, until its response body is done or dropped.
pub(super) struct Open(Arc<Activity>);

impl Drop for Open {
    fn drop(&mut self) {
        self.0.open.fetch_sub(1, Ordering::Relaxed);
    }
}
