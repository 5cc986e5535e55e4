//! Handing freed heap back to the system once idle connections have
//! parked. A parked connection frees hyper's buffers and its dispatcher,
//! but an allocator keeps freed memory for reuse: glibc in its arenas
//! (after ten thousand connections parked, about 20 MiB of RSS was such
//! free heap, `bench/idle.sh`), mimalloc in pages whose purge waits for
//! the owning thread's next allocation. `malloc_trim` or `mi_collect`
//! returns it.
//!
//! It runs on the control plane's thread, at most once a period and only
//! when connections parked since the last run: under steady keep-alive
//! traffic nothing parks, so it never runs, and a traffic worker never
//! calls it. With glibc, an arena's lock is held while it is trimmed, so a
//! worker allocating from it waits; the rate limit bounds that to one
//! short pause a period, and only after connections went idle.

use std::sync::atomic::{AtomicU64, Ordering};

/// Connections parked so far, in this process.
static PARKS: AtomicU64 = AtomicU64::new(0);

/// Note that a connection parked.
pub(super) fn parked() {
    PARKS.fetch_add(1, Ordering::Relaxed);
}

/// Trims when a connection parked since the last trim.
#[derive(Debug, Default)]
pub struct AfterParking {
    seen: AtomicU64,
}

impl AfterParking {
    /// Called by the control plane once a period. Says whether it trimmed.
    pub fn run(&self) -> bool {
        let due = self.due(PARKS.load(Ordering::Relaxed));
        if due {
            release_freed_memory();
        }
        due
    }

    fn due(&self, parks: u64) -> bool {
        self.seen.swap(parks, Ordering::Relaxed) != parks
    }
}

/// Return freed memory to the system: the allocator keeps it to reuse, so
/// RSS would stay where a burst (parked connections, a config load's parse
/// tree) left it. Control plane only, never per request.
pub fn release_freed_memory() {
    #[cfg(feature = "mimalloc")]
    // SAFETY: mi_collect takes no pointers. With `force` it frees this
    // thread's empty pages and purges what every thread's arenas have
    // marked free.
    unsafe {
        libmimalloc_sys::mi_collect(true);
    }
    #[cfg(all(target_os = "linux", target_env = "gnu", not(feature = "mimalloc")))]
    // SAFETY: malloc_trim takes no pointers; it only returns free memory
    // at the top of each arena and whole free pages inside them.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trims_only_after_a_park() {
        let trim = AfterParking::default();
        assert!(!trim.due(0), "nothing parked yet");
        assert!(trim.due(3), "connections parked");
        assert!(!trim.due(3), "none since the last trim");
        assert!(trim.due(4));
    }

    #[test]
    fn a_park_is_counted() {
        let before = PARKS.load(Ordering::Relaxed);
        parked();
        assert!(PARKS.load(Ordering::Relaxed) > before);
    }
}
