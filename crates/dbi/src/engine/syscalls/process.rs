//! Processes and threads: `clone` of a thread (a runtime thread of its own, see
//! [`crate::engine::threads`]), of a process on this memory (`vfork`, `clone` with CLONE_VM,
//! see [`crate::engine::shared_child`]), of a process on a copy (`fork`, `clone` without
//! CLONE_VM: the child continues in a copy of the runtime with its own copy of the code
//! cache), and the end of a thread (`exit`) or of the process (`exit_group`, the last
//! thread's `exit`), which first flushes the tool's output (and exits with a failure status
//! instead of success when that output could not be written).

use super::{raw, Call, Outcome};
use crate::arch::context::{reg, ThreadCtx};
use crate::arch::syscall6;
use crate::engine::finish::start_flushing;
use crate::engine::state::engine;
use crate::engine::{shared_child, threads};
use crate::os::process_end::{self, exit_status, flush, stop};
use crate::os::report;

/// The flags of a child that borrows its parent's memory until it execs or exits.
const VFORK: u64 = (libc::CLONE_VM | libc::CLONE_VFORK) as u64;

/// Calls that make processes and threads.
pub(super) const CALLS: &[i64] = &[libc::SYS_clone, libc::SYS_clone3, libc::SYS_fork, libc::SYS_vfork];
/// Calls that end threads or the process.
pub(super) const EXIT_CALLS: &[i64] = &[libc::SYS_exit, libc::SYS_exit_group];

pub(super) fn handle(call: &mut Call<'_>) -> Outcome {
    let a = call.args;
    Outcome::Returns(match call.nr as i64 {
        libc::SYS_clone if a[0] & libc::CLONE_THREAD as u64 != 0 => threads::clone_thread(call.ctx, a, call.next),
        // posix_spawn's child: on the parent's memory, the parent waiting.
        libc::SYS_clone if a[0] & VFORK == VFORK => shared_child::clone_vfork(call.ctx, a, call.next),
        // A process beside its parent on the parent's memory (LeakSanitizer's tracer).
        libc::SYS_clone if a[0] & libc::CLONE_VM as u64 != 0 => shared_child::clone_beside(call.ctx, a, call.next),
        // Another process gets a copy of memory.
        libc::SYS_clone => fork(call.ctx, a),
        // glibc falls back to clone, which the engine knows how to follow.
        libc::SYS_clone3 => super::err(libc::ENOSYS),
        libc::SYS_vfork => shared_child::clone_vfork(call.ctx, [VFORK | libc::SIGCHLD as u64, 0, 0, 0, 0, 0], call.next),
        _ => fork(call.ctx, [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]),
    })
}

/// `exit` of a thread that is not the last one ends that thread; otherwise the process ends.
pub(super) fn exit(call: &mut Call<'_>) -> Outcome {
    if !process_end::owns_memory() {
        // A vfork child ends: its parent, waiting, cleans up its context.
        // SAFETY: ends this child process; the memory stays its parent's.
        unsafe { syscall6(libc::SYS_exit_group as u64, [call.args[0], 0, 0, 0, 0, 0]) };
    }
    if call.nr as i64 == libc::SYS_exit && !threads::exiting() {
        engine().tool.on_thread_exit(call.tid);
        threads::exit_thread(call.ctx, call.args[0])
    }
    flush();
    let mut args = call.args;
    args[0] = exit_status(args[0]);
    // SAFETY: the program ends itself; nothing of ours needs to outlive it.
    Outcome::Returns(unsafe { syscall6(call.nr, args) })
}

/// `clone` of a process (fork and its variants): the child continues in a copy of the
/// runtime, with its own copy of the code cache, on the stack the call names if any (a
/// CLONE_VFORK parent does not wait: the child has memory of its own).
fn fork(ctx: &mut ThreadCtx, a: [u64; 6]) -> u64 {
    let flags = a[0] & !(libc::CLONE_VFORK as u64);
    // Held across the fork: the child must not inherit the engine in the middle of a change.
    let mut eng = engine();
    let snap = match eng.cache.snapshot() {
        Ok(s) => s,
        Err(e) => {
            drop(eng);
            stop(&format!("cannot copy the code cache for a new process: {e}"))
        }
    };
    // The child's runtime keeps the runtime's thread pointer; the program's goes to the context.
    let settls = flags & libc::CLONE_SETTLS as u64 != 0;
    let ret = raw(libc::SYS_clone as u64, [flags & !(libc::CLONE_SETTLS as u64), 0, a[2], a[3], 0, 0]);
    if ret == 0 {
        // SAFETY: gettid has no effects.
        ctx.tid = unsafe { libc::gettid() } as u64;
        report::forked();
        process_end::forked();
        eng.tool.on_fork_child();
        if a[1] != 0 {
            ctx.regs.gpr[reg::RSP] = a[1];
        }
        if settls {
            ctx.app_fs = a[4];
        }
        if let Err(e) = eng.cache.adopt(snap) {
            drop(eng);
            stop(&format!("cannot give the new process its own code cache: {e}"));
        }
        if let Some(every) = eng.opts.flush_interval {
            start_flushing(every);
        }
    }
    ret
}
