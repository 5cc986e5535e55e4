//! The global allocator: mimalloc, entered where its fast paths are.
//!
//! `mimalloc::MiMalloc` sends every allocation through `mi_malloc_aligned`,
//! whatever its alignment. That is free for blocks of up to 1 KiB, but
//! above them mimalloc (v3) only skips its over-allocating path when the
//! block size is a power of two: every other larger block (the request's
//! future, its context, a response head, an access-log line that grew) was
//! allocated `alignment - 1` bytes too big and its pointer adjusted, about
//! a hundred instructions each, five times a request. Every block
//! `mi_malloc` returns is aligned to a machine word, so a layout that asks
//! for no more than that goes to `mi_malloc` and its kin directly, as the
//! standard library's `System` allocator does with `malloc`. Only wider
//! alignments (tokio's task cells ask for 128) take the aligned calls.

use std::alloc::{GlobalAlloc, Layout};
use std::ffi::c_void;

use libmimalloc_sys as mi;

/// What every `mi_malloc` block is aligned to: block sizes are whole
/// machine words and pages start aligned.
const WORD: usize = std::mem::size_of::<usize>();

/// mimalloc behind `GlobalAlloc`, for `#[global_allocator]`.
pub struct MiMalloc;

// SAFETY: each method passes the caller's layout on to mimalloc, whose
// calls return null on failure and blocks of at least `size` bytes aligned
// to `WORD`, or to the alignment asked of the `_aligned` variants; a block
// from either is freed by `mi_free` and resized by `mi_realloc*`.
unsafe impl GlobalAlloc for MiMalloc {
    #[inline]
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: plain calls into mimalloc with a size and alignment.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_malloc(layout.size()).cast()
            } else {
                mi::mi_malloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as `alloc`.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_zalloc(layout.size()).cast()
            } else {
                mi::mi_zalloc_aligned(layout.size(), layout.align()).cast()
            }
        }
    }

    #[inline]
    unsafe fn dealloc(&self, ptr: *mut u8, _layout: Layout) {
        // SAFETY: `ptr` came from this allocator (GlobalAlloc's contract).
        unsafe { mi::mi_free(ptr.cast::<c_void>()) }
    }

    #[inline]
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: `ptr` came from this allocator with `layout`
        // (GlobalAlloc's contract); the block keeps its alignment.
        unsafe {
            if layout.align() <= WORD {
                mi::mi_realloc(ptr.cast::<c_void>(), new_size).cast()
            } else {
                mi::mi_realloc_aligned(ptr.cast::<c_void>(), new_size, layout.align()).cast()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every size class around mimalloc's 1 KiB small-block limit and the
    /// larger ones, at every alignment up to a page: aligned, usable for
    /// the whole size, zeroed when asked, and resized with its bytes kept.
    #[test]
    fn blocks_are_aligned_sized_and_keep_their_bytes() {
        let sizes = (1..=160usize).chain((1000..=1100).step_by(3)).chain([
            4095,
            4096,
            4097,
            10_000,
            65_536,
            1 << 20,
            (1 << 20) + 3,
        ]);
        for size in sizes {
            for align in [1usize, 2, 4, 8, 16, 32, 64, 128, 4096] {
                let Ok(layout) = Layout::from_size_align(size, align) else {
                    continue;
                };
                // SAFETY: a non-zero size; each block is written within its
                // size, checked, resized and freed once.
                unsafe {
                    let p = MiMalloc.alloc(layout);
                    assert!(!p.is_null());
                    assert_eq!(p as usize % align, 0, "size {size} align {align}");
                    assert!(mi::mi_usable_size(p.cast()) >= size);
                    std::ptr::write_bytes(p, 0xa5, size);

                    let z = MiMalloc.alloc_zeroed(layout);
                    assert_eq!(z as usize % align, 0, "zeroed size {size} align {align}");
                    assert!(std::slice::from_raw_parts(z, size).iter().all(|&b| b == 0));
                    MiMalloc.dealloc(z, layout);

                    let grown = MiMalloc.realloc(p, layout, size * 3 + 7);
                    assert_eq!(
                        grown as usize % align,
                        0,
                        "realloc size {size} align {align}"
                    );
                    assert!(
                        std::slice::from_raw_parts(grown, size)
                            .iter()
                            .all(|&b| b == 0xa5)
                    );
                    let grown_layout =
                        Layout::from_size_align(size * 3 + 7, align).expect("a valid layout");
                    MiMalloc.dealloc(grown, grown_layout);
                }
            }
        }
    }
}
