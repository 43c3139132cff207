//! Counters behind `--stats`.

use crate::block::Branch;
use crate::context::ThreadCtx;
use crate::dispatch::Engine;
use crate::fragments::FragmentKind;
use crate::modules;
use rewire_mem::AddressSpace;
use std::collections::BTreeMap;
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

/// Where one thread's time went, measured with the monotonic clock at every entry into and
/// exit from the dispatcher (wall time: a blocking system call counts while it waits).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct ThreadTime {
    /// When the thread first entered the dispatcher (0: not yet).
    pub started: u64,
    /// Nanoseconds in the dispatcher, system calls included.
    pub dispatcher: u64,
    /// Of which running the program's system calls (with their hooks).
    pub syscalls: u64,
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
    fn add(&mut self, t: &ThreadTime, now: u64) {
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

/// The `--stats` report, one line per item.
pub fn report(engine: &Engine, lookups: u64) -> Vec<String> {
    let s = &engine.stats;
    let l = &engine.frags.stats;
    let mut per_module: BTreeMap<String, u64> = BTreeMap::new();
    let space = AddressSpace::read(None).unwrap_or_default();
    for f in engine.frags.all().iter().filter(|f| f.kind == FragmentKind::Block) {
        *per_module.entry(modules::name_in(&space, f.tag)).or_default() += 1;
    }
    let mut by_count: Vec<_> = per_module.into_iter().collect();
    by_count.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let modules = by_count.iter().map(|(m, n)| format!("{m} {n}")).collect::<Vec<_>>().join(", ");
    let misses: u64 = s.ibl_misses.iter().sum();
    let secs = s.build_time.as_secs_f64();
    let mut out = vec![
        format!("blocks built: {} ({modules})", s.blocks),
        format!("application instructions translated: {}", s.app_insns),
        format!("code cache: {} bytes of code, {} bytes reserved", engine.cache.used(), engine.cache.reserved()),
        format!("dispatcher entries: {}", s.dispatches),
        format!(
            "exits to the dispatcher: direct {} (before linking), system calls {}, indirect-branch misses {} (ret {}, call {}, jmp {})",
            s.direct_exits, s.syscalls, misses, s.ibl_misses[0], s.ibl_misses[1], s.ibl_misses[2]
        ),
        format!(
            "links: {} ({} far), unlinks {}, fragments invalidated {} (memory reclaimed for {}, {} bytes free for reuse)",
            l.links,
            l.far_links,
            l.unlinks,
            l.invalidated,
            l.reclaimed,
            engine.cache.reclaimed()
        ),
    ];
    let w = &engine.code_writes;
    if w.faults > 0 {
        out.push(format!("code writes: {} write faults on watched pages, {} stale self-verifying blocks rebuilt", w.faults, w.stale));
    }
    if lookups > 0 {
        let hits = lookups.saturating_sub(misses);
        out.push(format!(
            "indirect-branch lookups: {lookups}, hits {hits} ({:.2}%), misses {misses}",
            100.0 * hits as f64 / lookups as f64
        ));
    }
    let t = &engine.trace_stats;
    if engine.opts.traces.enabled {
        out.push(format!(
            "traces: {} built, {:.1} blocks on average, {} hot heads, {} recordings given up, {:.3} ms building them",
            t.built,
            if t.built > 0 { t.blocks as f64 / t.built as f64 } else { 0.0 },
            t.hot_heads,
            t.aborted,
            t.build_time.as_secs_f64() * 1e3
        ));
    }
    out.push(format!("block building: {:.3} ms, {:.0} blocks/s", secs * 1e3, if secs > 0.0 { s.blocks as f64 / secs } else { 0.0 }));
    if let Some(line) = time_line(engine) {
        out.push(line);
    }
    out
}

/// Where the threads' time went: in the cache, in the dispatcher (building code or not), in
/// system calls; and exits to the dispatcher per second.
fn time_line(engine: &Engine) -> Option<String> {
    let now = timestamp()?;
    let mut total = engine.stats.exited_time;
    for &c in &engine.contexts {
        // SAFETY: registered contexts are live ThreadCtx headers; plain reads of counters.
        total.add(&unsafe { &*(c as *const ThreadCtx) }.time, now);
    }
    let ms = |ns: u64| ns as f64 / 1e6;
    let all = total.lived.max(1);
    let pct = |ns: u64| 100.0 * ns as f64 / all as f64;
    let dispatcher = total.dispatcher.saturating_sub(total.syscalls);
    let building = (engine.stats.build_time + engine.trace_stats.build_time).as_nanos() as u64;
    Some(format!(
        "time: {:.1} ms of thread time, {:.1}% in the cache, {:.1}% in the dispatcher ({:.1}% building blocks and traces), \
         {:.1}% in system calls; {:.0} exits to the dispatcher per second",
        ms(total.lived),
        pct(total.lived.saturating_sub(total.dispatcher)),
        pct(dispatcher),
        pct(building.min(dispatcher)),
        pct(total.syscalls),
        engine.stats.dispatches as f64 / (all as f64 / 1e9)
    ))
}

/// Indirect-branch lookups counted in all thread contexts, exited threads included.
pub fn lookups(engine: &Engine) -> u64 {
    let live: u64 = engine
        .contexts
        .iter()
        .map(|&c| {
            // SAFETY: registered contexts are live ThreadCtx headers; a plain read of a counter.
            unsafe { &*(c as *const ThreadCtx) }.ibl_lookups
        })
        .sum();
    engine.stats.exited_lookups + live
}
