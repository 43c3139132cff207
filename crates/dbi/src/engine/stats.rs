//! Counters behind `--stats`.

use crate::arch::context::{ThreadCtx, ThreadTime};
use crate::translate::Branch;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

/// Whether threads time their dispatches (`--stats`).
static TIMING: AtomicBool = AtomicBool::new(false);

/// Makes threads time their dispatches from now on.
pub fn start_timing() {
    TIMING.store(true, Ordering::Relaxed);
}

/// Monotonic nanoseconds when timing is on.
pub fn timestamp() -> Option<u64> {
    if !TIMING.load(Ordering::Relaxed) {
        return None;
    }
    let mut t = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: clock_gettime writes the timespec we own (a vDSO call, no kernel entry).
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut t) };
    Some(t.tv_sec as u64 * 1_000_000_000 + t.tv_nsec as u64)
}

/// The time of several threads, summed.
#[derive(Debug, Default, Clone, Copy)]
pub struct TimeTotals {
    /// Nanoseconds the threads lived (from their first dispatch).
    pub lived: u64,
    /// Of which in the dispatcher, system calls included.
    pub dispatcher: u64,
    /// Of which running the program's system calls.
    pub syscalls: u64,
}

impl TimeTotals {
    /// Adds a thread's time, the thread alive until `now`.
    pub fn add(&mut self, t: &ThreadTime, now: u64) {
        if t.started != 0 {
            self.lived += now.saturating_sub(t.started);
            self.dispatcher += t.dispatcher;
            self.syscalls += t.syscalls;
        }
    }
}

/// What the engine did.
#[derive(Debug, Default)]
pub struct Stats {
    /// Blocks built.
    pub blocks: u64,
    /// Application instructions in them.
    pub app_insns: u64,
    /// Bytes of cache code written for them.
    pub cache_code: u64,
    /// Time spent building them (traces not included).
    pub build_time: Duration,
    /// Entries into the dispatcher.
    pub dispatches: u64,
    /// Direct exits taken while unlinked.
    pub direct_exits: u64,
    /// System calls.
    pub syscalls: u64,
    /// Indirect-branch lookup misses: returns, calls, jumps.
    pub ibl_misses: [u64; 3],
    /// Indirect-branch lookups of threads that have exited (live ones count in their context).
    pub exited_lookups: u64,
    /// Time of threads that have exited.
    pub exited_time: TimeTotals,
}

/// Folds the time of a thread that is about to exit into the totals.
pub fn thread_exits(stats: &mut Stats, ctx: &ThreadCtx) {
    stats.exited_lookups += ctx.ibl_lookups;
    if let Some(now) = timestamp() {
        stats.exited_time.add(&ctx.time, now);
    }
}

impl Stats {
    /// Counts a lookup miss of `branch`.
    pub fn count_miss(&mut self, branch: Branch) {
        self.ibl_misses[branch as usize] += 1;
    }
}
