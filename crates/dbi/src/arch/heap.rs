//! The runtime's own heap (glibc's main arena, grown with `brk`), made present ahead of use.
//! The engine's records of its fragments fill it at about 0.6 KiB per block (`ls -la` builds
//! 6,000 blocks), and a page fault costs about 3 µs on a virtual machine: the heap grows in
//! steps of [`STEP`], and the dispatcher makes each step present with one system call.

use std::sync::atomic::{AtomicUsize, Ordering};

/// Bytes the heap grows by at a time (glibc's `M_TOP_PAD`), and the most it keeps free at
/// its top before giving memory back (`M_TRIM_THRESHOLD`, so that growth is not undone and
/// redone as blocks are built and their temporaries freed).
const STEP: usize = 1 << 20;

/// End of the part of the heap made present.
static PRESENT_TO: AtomicUsize = AtomicUsize::new(0);

fn heap_end() -> usize {
    // SAFETY: sbrk(0) only returns the current program break.
    unsafe { libc::sbrk(0) as usize }
}

/// Sets how the heap grows (before the engine allocates much).
pub fn prepare() {
    // SAFETY: mallopt changes two malloc settings; it has no other effect.
    unsafe {
        libc::mallopt(libc::M_TOP_PAD, STEP as i32);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 2 * STEP as i32);
    }
    PRESENT_TO.store(heap_end(), Ordering::Relaxed);
}

/// Makes present the heap memory added since the last call.
pub fn populate_growth() {
    let end = heap_end();
    let from = PRESENT_TO.swap(end, Ordering::Relaxed);
    if end > from {
        rewire_mem::populate_write(from as u64, end - from);
    }
}
