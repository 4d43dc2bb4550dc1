//! A global allocator that counts heap use on the threads that opt in.
//!
//! Tests and benchmarks run the proxy in the same process as its clients and
//! upstreams; only the proxy's threads call [`track_current_thread`], so the
//! figures are the proxy's alone. Crates such as `stats_alloc` or `dhat`
//! count the whole process, which would mix in the client and the upstream;
//! hence this small allocator.
//!
//! Attribution is by the thread that allocates or frees: memory a tracked
//! thread frees but an untracked one allocated lowers the count. The proxy
//! does all its I/O on its own threads, so for it the figures are exact.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};

/// Counts allocations of tracked threads, then forwards to the system allocator.
pub struct CountingAllocator;

thread_local! {
    static TRACKED: Cell<bool> = const { Cell::new(false) };
}

static LIVE_BYTES: AtomicI64 = AtomicI64::new(0);
static PEAK_BYTES: AtomicI64 = AtomicI64::new(0);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

/// Counts from now on what the calling thread allocates and frees.
pub fn track_current_thread() {
    TRACKED.with(|t| t.set(true));
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// Bytes allocated and not yet freed by tracked threads.
    pub live_bytes: i64,
    /// The highest `live_bytes` since the last [`reset_peak`].
    pub peak_bytes: i64,
    /// Allocation calls (including reallocations) by tracked threads.
    pub allocations: u64,
}

/// Reads the counters.
pub fn snapshot() -> Snapshot {
    Snapshot {
        live_bytes: LIVE_BYTES.load(Ordering::SeqCst),
        peak_bytes: PEAK_BYTES.load(Ordering::SeqCst),
        allocations: ALLOCATIONS.load(Ordering::SeqCst),
    }
}

/// Starts a new peak measurement from the current live bytes.
pub fn reset_peak() {
    PEAK_BYTES.store(LIVE_BYTES.load(Ordering::SeqCst), Ordering::SeqCst);
}

fn tracked() -> bool {
    TRACKED.try_with(Cell::get).unwrap_or(false)
}

fn record(delta: i64, is_allocation: bool) {
    if is_allocation {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
    let live = LIVE_BYTES.fetch_add(delta, Ordering::SeqCst) + delta;
    PEAK_BYTES.fetch_max(live, Ordering::SeqCst);
}

fn size(layout: Layout) -> i64 {
    i64::try_from(layout.size()).unwrap_or(i64::MAX)
}

// SAFETY: every method forwards to `System` with the caller's arguments
// unchanged, so `System`'s guarantees hold; the counting touches only atomics
// and a const-initialised thread-local, neither of which allocates.
unsafe impl GlobalAlloc for CountingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { System.alloc(layout) };
        if !ptr.is_null() && tracked() {
            record(size(layout), true);
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let ptr = unsafe { System.alloc_zeroed(layout) };
        if !ptr.is_null() && tracked() {
            record(size(layout), true);
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as the caller's.
        unsafe { System.dealloc(ptr, layout) };
        if tracked() {
            record(-size(layout), false);
        }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: same contract as the caller's.
        let new = unsafe { System.realloc(ptr, layout, new_size) };
        if !new.is_null() && tracked() {
            record(i64::try_from(new_size).unwrap_or(i64::MAX) - size(layout), true);
        }
        new
    }
}
