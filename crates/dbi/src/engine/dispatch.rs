//! The dispatcher: every exit from the cache lands here, with the application's state saved
//! in the thread context. It runs system calls, delivers signals, steps trace recording,
//! finds (or builds) the fragment for the next application address, links the exit that
//! brought the thread here, and resumes the application in the cache. The context switch
//! (`arch::switch`) calls it by its symbol name.

use crate::arch::context::{reg, ThreadCtx};
use crate::engine::fork_server;
use crate::engine::fork_server::persistent::Next;
use crate::engine::signal_handler;
use crate::engine::state::{engine, Engine, NoFragment};
use crate::engine::stats;
use crate::engine::syscalls;
use crate::engine::trace_builder;
use crate::os::appmem;
use crate::os::credentials;
use crate::os::modules;
use crate::os::process_end::{flush, stop};
use crate::os::sigmask::kernel_default;
use crate::os::signals::{self, bad_jump, SignalsOf};
use crate::tool::{self, LoopEvent};
use crate::translate::{ExitKind, ExitRecord};

/// The dispatcher, called by `rewire_fcache_return` and `rewire_start` on the runtime stack
/// with the runtime's FS base, the application state saved in `ctx`.
#[no_mangle]
pub(crate) extern "C" fn rewire_dispatch(ctx: *mut ThreadCtx) {
    // SAFETY: the assembly passes this thread's context (GS base), live for the thread.
    let ctx = unsafe { &mut *ctx };
    let Some(entered) = stats::timestamp() else { return dispatch(ctx) };
    if ctx.time.started == 0 {
        ctx.time.started = entered;
    }
    dispatch(ctx);
    ctx.time.dispatcher += stats::timestamp().unwrap_or(entered) - entered;
}

/// The dispatcher's work for one exit of `ctx`'s thread from the cache.
fn dispatch(ctx: &mut ThreadCtx) {
    ctx.in_cache = 0;
    ctx.dispatches += 1;
    // SAFETY: `exit_record` was loaded by cache code from an exit of a live fragment (or
    // is the start record); records are never freed.
    let rec = unsafe { &*(ctx.exit_record as *const ExitRecord) };
    let tag = match rec.kind {
        ExitKind::Direct { target } => target,
        ExitKind::Syscall { next } => {
            let started = stats::timestamp();
            let next = syscalls::handle(ctx, next);
            if let Some(t) = started {
                ctx.time.syscalls += stats::timestamp().unwrap_or(t) - t;
            }
            next
        }
        ExitKind::Redirect => ctx.ibl_target,
        ExitKind::Verify => {
            let mut eng = engine();
            let f = eng.frags.get(rec.fragment);
            let tag = f.tag;
            let same = f.live
                && f.built_from.as_deref().is_some_and(|b| {
                    let mut now = vec![0u8; b.len()];
                    appmem::read(tag, &mut now) && now == b
                });
            if same {
                ctx.next_pc = rec.stub();
                ctx.in_cache = 1;
                return;
            }
            eng.code_writes.stale += 1;
            let page = tag & !0xfff;
            eng.invalidate(page..page + 0x1000);
            tag
        }
        ExitKind::Watched => {
            let mut eng = engine();
            let (tag, edge_prev) = (eng.frags.get(rec.fragment).tag, eng.edge_prev);
            let (next, watch, event) = eng.persistent.as_mut().map_or((Next::Resume, None, None), |p| p.at(ctx, tag, edge_prev));
            if let Some(event) = event {
                eng.tool.on_persistent_loop(event);
                if event == LoopEvent::End {
                    eng.persistent = None;
                }
            }
            if let Some(ret) = watch.filter(|r| !eng.watched.contains(r)) {
                // Its block, if built already, is built again with the watch at its start.
                eng.watched.push(ret);
                eng.invalidate(ret..ret + 1);
            }
            match next {
                Next::Resume => {
                    ctx.next_pc = rec.stub();
                    ctx.in_cache = 1;
                    return;
                }
                Next::GoTo(app) => app,
            }
        }
        ExitKind::Indirect(_) => ctx.ibl_target,
        ExitKind::Start { entry } | ExitKind::TraceHead { target: entry } => entry,
        ExitKind::CleanCall { site } => {
            let site = engine().call_sites[site as usize].clone();
            (site.func)(&tool::evaluate(&site, ctx));
            let _lock = engine();
            ctx.next_pc = rec.stub();
            ctx.in_cache = 1;
            return;
        }
        ExitKind::Unsupported { at, what } => {
            stop(&format!("the program executed an instruction rewire does not support yet at {at:#x} ({}): {what}", modules::describe(at)))
        }
    };
    let exit_target = tag;
    let tag = signals::deliver_pending(ctx, tag);
    // Link or cache the way out of the exit only when the thread goes where the exit leads
    // (not into a signal handler delivered on the way).
    let diverted = tag != exit_target;
    let mut eng = engine();
    eng.stats.dispatches += 1;
    match rec.kind {
        ExitKind::Direct { .. } => eng.stats.direct_exits += 1,
        ExitKind::Indirect(branch) => eng.stats.count_miss(branch),
        _ => {}
    }
    if !eng.limbo.is_empty() {
        eng.reclaim();
    }
    if eng.fork_server.is_some() && tag == eng.fork_server_at && !diverted {
        fork_server::serve(ctx, &mut eng);
    }
    if let Some(copy) = trace_builder::step(&mut eng, ctx, &rec.kind, tag, diverted) {
        ctx.next_pc = eng.frags.get(copy).entry;
        ctx.in_cache = 1;
        return;
    }
    let id = match eng.fragment_for(tag) {
        Ok(id) => id,
        Err(NoFragment::NotExecutable) if credentials::traced() => {
            // A tracer reads the registers of the fault (gdb's start-up probe jumps to a
            // non-executable page on purpose): the jump is made for real, from the
            // program's state. At the default action the kernel's SIGSEGV ends the process
            // as natively; else the signal handler takes the fault as the program's.
            drop(eng);
            if signals::fault_ends_the_program() {
                flush();
                kernel_default(libc::SIGSEGV as usize);
            } else {
                signal_handler::expect_native_fault(tag);
            }
            ctx.next_pc = tag;
            ctx.in_cache = 1;
            return;
        }
        Err(NoFragment::NotExecutable) => {
            drop(eng);
            bad_jump(tag, ctx.regs.gpr[reg::RSP])
        }
        Err(NoFragment::CacheFull(why)) => {
            drop(eng);
            stop(&format!("the code cache cannot grow: {why}"))
        }
    };
    let (entry, lookup_entry) = (eng.frags.get(id).entry, eng.frags.get(id).lookup_entry());
    match rec.kind {
        _ if diverted => {}
        ExitKind::Direct { .. } => {
            let Engine { frags, cache, .. } = &mut *eng;
            frags.link(cache, rec.fragment, rec.index, id);
        }
        ExitKind::Indirect(_) if !eng.opts.no_link => {
            ctx.ibl_insert(tag, lookup_entry);
            if let Some(built) = &mut eng.built_blocks {
                built.push(tag);
            }
        }
        _ => {}
    }
    ctx.next_pc = entry;
    if ctx.signals().any_pending() {
        // A signal came while this thread held the lock, so its handler could unlink nothing:
        // the fragment it enters now exits to the dispatcher, which delivers it.
        let Engine { frags, cache, .. } = &mut *eng;
        frags.unlink_fragment_at(cache, entry);
    }
    // Still under the lock: an invalidation after this point sees the thread in the cache.
    ctx.in_cache = 1;
}
