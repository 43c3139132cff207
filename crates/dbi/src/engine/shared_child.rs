//! Children that run on their parent's memory until they exec or exit: `vfork`, and
//! `clone(CLONE_VM | CLONE_VFORK)` as glibc's `posix_spawn` issues it (its child reports an
//! exec error by a store into the parent's memory, which the parent then returns). The
//! child runs under the engine like a thread of the parent: a context, runtime stack and
//! signal stack of its own, the shared cache under the engine's lock. The calling thread of
//! the parent waits in the kernel meanwhile, so the child's runtime code may use that
//! thread's runtime state (its libc thread pointer: heap caches, errno); the parent's other
//! threads go on, and the lock orders what both change. When the call returns the child is
//! gone from this memory, and the parent releases its context.

use crate::arch::context::{reg, ThreadCtx};
use crate::arch::context_block::{use_signal_stack_of, ContextBlock};
use crate::arch::{self, shared_child};
use crate::engine::state::engine;
use crate::os::signals;
use crate::translate::{ExitKind, ExitRecord};

/// The program's `clone(flags, stack, parent_tid, child_tid, tls)` with `CLONE_VM` and
/// `CLONE_VFORK` (or its `vfork`); `next` is the instruction after the system call.
/// Returns the child's pid (or `-errno`) once the child has exec'd or exited.
pub fn clone_vfork(ctx: &mut ThreadCtx, a: [u64; 6], next: u64) -> u64 {
    let mut block = match ContextBlock::new(ctx.rt_fs, ctx.has_fsgsbase != 0) {
        Ok(b) => b,
        Err(e) => return (-(e.errno().unwrap_or(libc::ENOMEM)) as i64) as u64,
    };
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
    let settls = libc::CLONE_SETTLS as u64;
    if a[0] & settls != 0 {
        child.app_fs = a[4];
    }
    child.exit_record = ExitRecord::new(ExitKind::Start { entry: next }, 0).address();
    let stack_top = child.rt_stack_top;
    let gs = block.address();
    engine().contexts.push(gs);
    // SAFETY: no CLONE_SETTLS; CLONE_VFORK keeps this thread waiting while the child runs on
    // its fresh runtime stack, which outlives the child's use of this memory.
    let pid = unsafe { shared_child::clone_shared(a[0] & !settls, stack_top, a[2], a[3], gs) };
    engine().contexts.retain(|&c| c != gs);
    // SAFETY: the child has exec'd or exited (or never ran): nothing runs on the context or
    // reads its signal state any more.
    unsafe {
        signals::release(block.ctx());
        block.unmap();
    }
    pid
}

/// Where the child starts, on its runtime stack with its parent's runtime thread pointer
/// (called by `arch::shared_child` by its symbol name).
#[no_mangle]
pub(crate) extern "C" fn rewire_shared_child(gs: u64) -> ! {
    // SAFETY: `gs` is the context `clone_vfork` prepared, live until the child is gone.
    let ctx = unsafe { &mut *(gs as *mut ThreadCtx) };
    use_signal_stack_of(ctx);
    // SAFETY: gettid has no effects.
    ctx.tid = unsafe { libc::gettid() } as u64;
    // SAFETY: a complete context with an unused runtime stack; the engine is installed.
    unsafe { arch::start(gs) }
}
