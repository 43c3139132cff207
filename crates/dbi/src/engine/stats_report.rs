//! The `--stats` report: blocks per module, cache size, exits, links, lookups, traces,
//! build speed and where the threads' time went.

use crate::arch::context::ThreadCtx;
use crate::cache::FragmentKind;
use crate::engine::state::Engine;
use crate::engine::stats::timestamp;
use crate::os::modules;
use rewire_mem::AddressSpace;
use std::collections::BTreeMap;

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
