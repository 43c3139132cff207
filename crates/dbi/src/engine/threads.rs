//! Program threads. `clone` with `CLONE_VM | CLONE_THREAD` (what `pthread_create` issues)
//! becomes a runtime thread of rewire's own (so that the runtime's code keeps a thread
//! pointer and libc state of its own per thread), which takes the kernel-side duties of the
//! clone flags (thread id stores, clear-on-exit) and enters the cache with the program's new
//! thread state: the parent's registers with rax 0, the requested stack and TLS. Threads
//! share the fragments; each has its own context and indirect-branch table.

use crate::arch::context::{reg, ThreadCtx, CTX_BYTES, STACKS_BYTES};
use crate::arch::context_block::{stacks_base, ContextBlock};
use crate::arch::{self, syscall6};
use crate::engine::start::unregister_rseq;
use crate::engine::state::engine;
use crate::engine::stats;
use crate::os::appmem;
use crate::os::process_end::stop;
use crate::os::{sigmask, signals};
use crate::translate::{ExitKind, ExitRecord};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Program threads alive (the process ends with the last one).
static LIVE: AtomicUsize = AtomicUsize::new(1);
/// Stack of the runtime thread before it switches to its context's runtime stack.
const BOOT_STACK: usize = 64 << 10;

/// Ends the calling program thread (not the last one) with `status`: its counters are kept
/// for the tool, then its context, signal state and runtime stack are released.
pub fn exit_thread(ctx: &mut ThreadCtx, status: u64) -> ! {
    sigmask::sigprocmask(libc::SIG_SETMASK, Some(!0));
    let base = ctx.self_ptr;
    retire_context(ctx);
    // SAFETY: every signal is blocked and the context is out of the engine's list: nothing
    // reads its signal state any more.
    unsafe { signals::release(ctx) };
    let stacks = stacks_base(ctx);
    // SAFETY: signals blocked, no references left, and this runs on the context's runtime stack.
    unsafe { arch::exit_thread((base, CTX_BYTES as u64), (stacks, STACKS_BYTES as u64), status) }
}

/// Takes the context `ctx` of a thread (or a child on this memory) that no longer runs out
/// of the engine's list, its counters and times kept for the tool and the statistics.
pub fn retire_context(ctx: &ThreadCtx) {
    let mut eng = engine();
    let used = eng.next_counter as usize / 8;
    if eng.exited_counters.len() < used {
        eng.exited_counters.resize(used, 0);
    }
    for (i, total) in eng.exited_counters.iter_mut().enumerate().take(used) {
        *total += ctx.counter(i as u32 * 8);
    }
    stats::thread_exits(&mut eng.stats, ctx);
    eng.contexts.retain(|&c| c != ctx.self_ptr);
}

/// Counts a thread leaving; true when it was the last one.
pub fn exiting() -> bool {
    LIVE.fetch_sub(1, Ordering::SeqCst) == 1
}

struct Start {
    block: ContextBlock,
    flags: u64,
    parent_tid: u64,
    child_tid: u64,
}

/// The program's `clone(flags, stack, parent_tid, child_tid, tls)` for a new thread; `next`
/// is the instruction after the system call. Returns the new thread's id.
pub fn clone_thread(ctx: &mut ThreadCtx, a: [u64; 6], next: u64) -> u64 {
    let flags = a[0];
    let needed = (libc::CLONE_VM | libc::CLONE_THREAD | libc::CLONE_SIGHAND) as u64;
    if flags & needed != needed || a[1] == 0 {
        stop(&format!("the program called clone with flags {flags:#x}: a shared address space without a new thread is not supported yet"));
    }
    let mut block = match ContextBlock::new(0, ctx.has_fsgsbase != 0) {
        Ok(b) => b,
        Err(e) => return (-(e.errno().unwrap_or(libc::ENOMEM)) as i64) as u64,
    };
    block.inherit_app_state(ctx);
    signals::attach(block.ctx());
    let child = block.ctx();
    child.regs.gpr[reg::RAX] = 0;
    child.regs.gpr[reg::RSP] = a[1];
    child.regs.gpr[reg::RCX] = next;
    child.regs.gpr[reg::R11] = child.regs.rflags;
    if flags & libc::CLONE_SETTLS as u64 != 0 {
        child.app_fs = a[4];
    }
    child.exit_record = ExitRecord::new(ExitKind::Start { entry: next }, 0).address();
    let start = Start { block, flags, parent_tid: a[2], child_tid: a[3] };
    let (tx, rx) = std::sync::mpsc::channel::<u64>();
    LIVE.fetch_add(1, Ordering::SeqCst);
    // The new runtime thread starts with its creator's GS base: it must not take a signal
    // before it has its own context. It starts with every signal blocked and unblocks the
    // program's mask once its GS base is set.
    let app_mask = sigmask::sigprocmask(libc::SIG_SETMASK, Some(!0));
    let spawned = std::thread::Builder::new().stack_size(BOOT_STACK).spawn(move || thread_main(start, app_mask, tx));
    sigmask::sigprocmask(libc::SIG_SETMASK, Some(app_mask));
    if spawned.is_err() {
        LIVE.fetch_sub(1, Ordering::SeqCst);
        return (-libc::EAGAIN) as i64 as u64;
    }
    rx.recv().unwrap_or((-libc::EAGAIN) as i64 as u64)
}

fn thread_main(mut start: Start, app_mask: u64, tid_to_parent: std::sync::mpsc::Sender<u64>) {
    arch::set_gs_base(start.block.address());
    start.block.use_signal_stack();
    sigmask::sigprocmask(libc::SIG_SETMASK, Some(app_mask));
    // SAFETY: gettid has no effects.
    let tid = unsafe { libc::gettid() } as u32;
    if start.flags & libc::CLONE_PARENT_SETTID as u64 != 0 {
        appmem::write(start.parent_tid, &tid.to_le_bytes());
    }
    if start.flags & libc::CLONE_CHILD_SETTID as u64 != 0 {
        appmem::write(start.child_tid, &tid.to_le_bytes());
    }
    if start.flags & libc::CLONE_CHILD_CLEARTID as u64 != 0 {
        // SAFETY: the kernel will clear (and futex-wake) the program's tid word when this
        // thread exits, as the program asked; rewire's own thread record is never joined.
        unsafe { syscall6(libc::SYS_set_tid_address as u64, [start.child_tid, 0, 0, 0, 0, 0]) };
    }
    unregister_rseq();
    let ctx = start.block.ctx();
    ctx.rt_fs = arch::fs_base();
    ctx.tid = tid as u64;
    let gs = start.block.address();
    {
        let mut eng = engine();
        eng.contexts.push(gs);
        eng.tool.on_thread_start(tid);
    }
    let _ = tid_to_parent.send(tid as u64);
    // SAFETY: a complete context with an unused runtime stack; the engine is installed.
    unsafe { arch::start(gs) }
}
