//! Children that run on their parent's memory: `vfork`, `clone(CLONE_VM | CLONE_VFORK)` as
//! glibc's `posix_spawn` issues it (its child reports an exec error by a store into the
//! parent's memory, which the parent then returns), and `clone(CLONE_VM)` of a process that
//! runs beside its parent (LeakSanitizer's tracer). The child runs under the engine like a
//! thread of the parent: a context, runtime stack and signal stack of its own, the shared
//! cache under the engine's lock. Its runtime code needs a libc thread pointer that nothing
//! else uses meanwhile: a vfork child borrows that of the calling thread, which waits in the
//! kernel; a child beside its parent borrows that of a runtime thread made for it, which
//! waits until the child has exited. The parent's other threads go on, and the lock orders
//! what both change. Once the child is gone from this memory its context is released. Its
//! signal dispositions are its parent's table (see `os::signals::app_sigaction`), and it
//! writes no tool output: the output is its parent's, its counts are added to the totals.

use crate::arch::context::{reg, ThreadCtx};
use crate::arch::context_block::{use_signal_stack_of, ContextBlock};
use crate::arch::{self, shared_child};
use crate::engine::state::engine;
use crate::engine::threads;
use crate::os::{sigmask, signals};
use crate::translate::{ExitKind, ExitRecord};

/// Stack of the runtime thread that lends its thread pointer to a child beside its parent.
const DONOR_STACK: usize = 64 << 10;

/// The context of the child of `clone(flags, stack, parent_tid, child_tid, tls)` (`a`) on
/// this memory, with the calling thread's registers; `next` is the instruction after the
/// system call and `rt_fs` the runtime thread pointer the child's runtime code will use.
fn child_context(ctx: &ThreadCtx, a: [u64; 6], next: u64, rt_fs: u64) -> Result<ContextBlock, u64> {
    let mut block = ContextBlock::new(rt_fs, ctx.has_fsgsbase != 0).map_err(|e| (-(e.errno().unwrap_or(libc::ENOMEM)) as i64) as u64)?;
    block.inherit_app_state(ctx);
    signals::attach(block.ctx());
    signals::inherit_alt_stack(ctx, block.ctx());
    let child = block.ctx();
    child.regs.gpr[reg::RAX] = 0;
    if a[1] != 0 {
        child.regs.gpr[reg::RSP] = a[1];
    }
    child.regs.gpr[reg::RCX] = next;
    child.regs.gpr[reg::R11] = child.regs.rflags;
    if a[0] & libc::CLONE_SETTLS as u64 != 0 {
        child.app_fs = a[4];
    }
    child.exit_record = ExitRecord::new(ExitKind::Start { entry: next }, 0).address();
    // The mask of the calling thread now is the program's.
    child.start_mask = sigmask::sigprocmask(libc::SIG_BLOCK, None);
    Ok(block)
}

/// Starts the child of `block` with the clone flags `flags` (the program's, without
/// CLONE_SETTLS: the child runs runtime code first) and returns the raw result.
fn clone_child(block: &mut ContextBlock, flags: u64, a: [u64; 6]) -> u64 {
    let stack_top = block.ctx().rt_stack_top;
    let gs = block.address();
    // SAFETY: no CLONE_SETTLS; the child starts on the context's unused runtime stack, which
    // outlives its use of this memory (the caller releases it only once the child is gone).
    unsafe { shared_child::clone_shared(flags & !(libc::CLONE_SETTLS as u64), stack_top, a[2], a[3], gs) }
}

/// The program's `clone(flags, stack, parent_tid, child_tid, tls)` with `CLONE_VM` and
/// `CLONE_VFORK` (or its `vfork`); `next` is the instruction after the system call.
/// Returns the child's pid (or `-errno`) once the child has exec'd or exited.
pub fn clone_vfork(ctx: &mut ThreadCtx, a: [u64; 6], next: u64) -> u64 {
    let mut block = match child_context(ctx, a, next, ctx.rt_fs) {
        Ok(b) => b,
        Err(errno) => return errno,
    };
    let gs = block.address();
    engine().contexts.push(gs);
    // CLONE_VFORK keeps this thread waiting while the child runs.
    let pid = clone_child(&mut block, a[0], a);
    engine().contexts.retain(|&c| c != gs);
    // SAFETY: the child has exec'd or exited (or never ran): nothing runs on the context or
    // reads its signal state any more.
    unsafe {
        signals::release(block.ctx());
        block.unmap();
    }
    pid
}

/// The program's `clone` with `CLONE_VM` but neither `CLONE_THREAD` nor `CLONE_VFORK`
/// (LeakSanitizer's tracer, which ptrace-stops its parent's threads to scan their memory):
/// a process that runs beside its parent, on its memory. Its runtime code needs a libc
/// thread pointer nobody else uses while it runs: a runtime thread of the parent's, every
/// signal blocked, makes the call and lends it its own, then waits (without reaping) until
/// the child has exited, folds the child's counters into the totals and releases its
/// context. Returns the child's pid (or `-errno`).
pub fn clone_beside(ctx: &mut ThreadCtx, a: [u64; 6], next: u64) -> u64 {
    let mut block = match child_context(ctx, a, next, 0) {
        Ok(b) => b,
        Err(errno) => return errno,
    };
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    let app_mask = sigmask::sigprocmask(libc::SIG_SETMASK, Some(!0));
    let donor = std::thread::Builder::new().stack_size(DONOR_STACK).spawn(move || {
        block.ctx().rt_fs = arch::fs_base();
        let gs = block.address();
        engine().contexts.push(gs);
        let pid = clone_child(&mut block, a[0], a);
        let _ = tx.send(pid);
        if (pid as i64) > 0 {
            wait_until_gone(pid as libc::pid_t);
        }
        threads::retire_context(block.ctx());
        // SAFETY: the child has exited (or never ran): nothing runs on the context or reads
        // its signal state any more, and the engine no longer lists it.
        unsafe {
            signals::release(block.ctx());
            block.unmap();
        }
    });
    sigmask::sigprocmask(libc::SIG_SETMASK, Some(app_mask));
    match donor {
        Ok(_) => rx.recv().unwrap_or((-libc::EAGAIN) as i64 as u64),
        Err(_) => (-libc::EAGAIN) as i64 as u64,
    }
}

/// Waits until process `pid`, a child of this process, has exited, leaving it for the
/// program to reap (it may have reaped it already).
fn wait_until_gone(pid: libc::pid_t) {
    loop {
        // SAFETY: a zeroed siginfo_t is valid; the kernel writes into it.
        let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
        // SAFETY: WNOWAIT leaves the child waitable; nothing else changes.
        let r = unsafe { libc::waitid(libc::P_PID, pid as libc::id_t, &mut info, libc::WEXITED | libc::WNOWAIT | libc::__WALL) };
        if r == 0 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}

/// Where the child starts, on its runtime stack with a runtime thread pointer lent to it
/// (called by `arch::shared_child` by its symbol name).
#[no_mangle]
pub(crate) extern "C" fn rewire_shared_child(gs: u64) -> ! {
    // SAFETY: `gs` is the context `child_context` prepared, live until the child is gone.
    let ctx = unsafe { &mut *(gs as *mut ThreadCtx) };
    arch::set_gs_base(gs);
    use_signal_stack_of(ctx);
    // SAFETY: gettid has no effects.
    ctx.tid = unsafe { libc::gettid() } as u64;
    sigmask::sigprocmask(libc::SIG_SETMASK, Some(ctx.start_mask));
    // SAFETY: a complete context with an unused runtime stack; the engine is installed.
    unsafe { arch::start(gs) }
}
