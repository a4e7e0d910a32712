//! Allocation accounting for the bounded runs. [`CountingAlloc`] forwards
//! to the system allocator and keeps the bytes live and their peak, so the
//! runner can fail an input whose peak rises more than
//! [`MAX_INPUT_ALLOC`] above what was live when it started (a parser
//! amplifying a few KiB into hundreds of MiB). A test binary opts in with
//! `#[global_allocator]`; without it nothing is counted and no input fails
//! for it (libFuzzer has its own `-malloc_limit_mb`).
//!
//! The count is process-wide: allocations of other threads (an in-process
//! storage member's tasks) while an input runs count too, which the limit
//! leaves ample room for.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// How far one input may raise the peak of live heap bytes.
pub const MAX_INPUT_ALLOC: usize = 256 << 20;

/// A single allocation larger than this is refused (the process then stops
/// with Rust's "memory allocation of N bytes failed") instead of taking
/// the shared machine's memory.
pub const MAX_ONE_ALLOC: usize = 4 << 30;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static COUNTING: AtomicBool = AtomicBool::new(false);

/// The system allocator, counted (see the module docs).
#[derive(Debug, Default, Clone, Copy)]
pub struct CountingAlloc;

fn grew(n: usize) {
    let live = LIVE.fetch_add(n, Ordering::Relaxed) + n;
    PEAK.fetch_max(live, Ordering::Relaxed);
    if !COUNTING.load(Ordering::Relaxed) {
        COUNTING.store(true, Ordering::Relaxed);
    }
}

fn shrank(n: usize) {
    LIVE.fetch_sub(n, Ordering::Relaxed);
}

// SAFETY: every call goes to `System` with the caller's arguments
// unchanged (or is refused with a null pointer, which `GlobalAlloc`
// allows); only counters are updated besides.
#[allow(unsafe_code)]
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ONE_ALLOC {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as is (see above).
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() > MAX_ONE_ALLOC {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as is (see above).
        let p = unsafe { System.alloc_zeroed(layout) };
        if !p.is_null() {
            grew(layout.size());
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded as is (see above).
        unsafe { System.dealloc(ptr, layout) };
        shrank(layout.size());
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if new_size > MAX_ONE_ALLOC {
            return std::ptr::null_mut();
        }
        // SAFETY: forwarded as is (see above).
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            if new_size >= layout.size() {
                grew(new_size - layout.size());
            } else {
                shrank(layout.size() - new_size);
            }
        }
        p
    }
}

/// Whether a [`CountingAlloc`] is this process's allocator.
pub fn counting() -> bool {
    COUNTING.load(Ordering::Relaxed)
}

/// Starts a measurement: the peak is reset to what is live now, returned.
pub fn start() -> usize {
    let live = LIVE.load(Ordering::Relaxed);
    PEAK.store(live, Ordering::Relaxed);
    live
}

/// How far the peak of live bytes rose above `base` (from [`start`]).
pub fn peak_above(base: usize) -> usize {
    PEAK.load(Ordering::Relaxed).saturating_sub(base)
}
