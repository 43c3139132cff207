//! A thread's context mapping: the [`ThreadCtx`] header, the XSAVE area, the lookup table
//! and the counter area at their offsets, with the thread's runtime stack beside it.

use crate::arch::context::{off, ThreadCtx, CTX_BYTES, IBL_SLOTS, SIGNAL_STACK_BYTES, STACKS_BYTES, XSAVE_MAX};
use crate::arch::{cpu, simd, switch};
use crate::error::RunError;

/// A thread's context mapping (its runtime stack is mapped beside it).
#[derive(Debug)]
pub struct ContextBlock {
    base: *mut u8,
}

impl ContextBlock {
    /// Maps a fresh context with its own runtime stack; the application state starts as the
    /// kernel leaves it at `execve` (registers zero, SIMD state at its initial values).
    pub fn new(rt_fs: u64, has_fsgsbase: bool) -> Result<ContextBlock, RunError> {
        let xsave_len = simd::xsave_size();
        if xsave_len > XSAVE_MAX {
            return Err(RunError::Unsupported(format!("an XSAVE area of {xsave_len} bytes (at most {XSAVE_MAX} supported)")));
        }
        let base = cpu::map_anonymous(CTX_BYTES).map_err(|e| RunError::Sys("mmap(thread context)", e))?;
        let stack = cpu::map_anonymous(STACKS_BYTES).map_err(|e| RunError::Sys("mmap(runtime stack)", e))?;
        let mut block = ContextBlock { base };
        let ctx = block.ctx();
        ctx.self_ptr = base as u64;
        ctx.fcache_return = switch::fcache_return_address();
        ctx.rt_fs = rt_fs;
        ctx.rt_stack_top = stack as u64 + STACKS_BYTES as u64;
        ctx.has_fsgsbase = has_fsgsbase as u64;
        ctx.simd_moves = simd::simd_by_moves() as u64;
        ctx.xsaveopt = simd::has_xsaveopt() as u64;
        ctx.regs.rflags = 0x202;
        simd::init_xsave_area(block.xsave_area());
        Ok(block)
    }

    /// Makes the lookup table present now: one system call instead of a page fault (about
    /// 3 µs on a virtual machine) for nearly each of its 257 pages, which lookups by the low
    /// bits of addresses touch all over. For the first thread, which always fills its table
    /// (the dynamic loader alone inserts about a thousand targets); a thread of a pool may
    /// never need most of it.
    pub fn populate_lookup_table(&mut self) {
        rewire_mem::populate_write(self.base as u64 + off::IBL_TABLE as u64, IBL_SLOTS * 16);
    }

    /// The header.
    pub fn ctx(&mut self) -> &mut ThreadCtx {
        // SAFETY: `base` is a live, zero-initialised, page-aligned mapping of CTX_BYTES that
        // this block owns; a ThreadCtx is plain integers, valid for any bit pattern. Only the
        // owning thread (or the dispatcher on its behalf) touches it.
        unsafe { &mut *(self.base as *mut ThreadCtx) }
    }

    /// Takes the application state of `parent` (registers, SIMD state, FS and GS bases), as
    /// a new thread starts with its creator's registers.
    pub fn inherit_app_state(&mut self, parent: &ThreadCtx) {
        let ctx = self.ctx();
        ctx.regs = parent.regs;
        ctx.app_fs = parent.app_fs;
        ctx.app_gs = parent.app_gs;
        // SAFETY: the parent's XSAVE area is inside its context mapping (see `ctx`).
        let from = unsafe { std::slice::from_raw_parts((parent.self_ptr as *const u8).add(off::XSAVE), XSAVE_MAX) };
        self.xsave_area().copy_from_slice(from);
    }

    /// Makes the context's signal stack the calling thread's alternate signal stack (the
    /// thread that runs this context calls it before it takes a signal).
    pub fn use_signal_stack(&mut self) {
        use_signal_stack_of(self.ctx());
    }

    /// Unmaps the context and its stacks.
    ///
    /// # Safety
    /// No thread may run on the context or its stacks any more, and nothing may refer to it.
    pub unsafe fn unmap(mut self) {
        let stacks = stacks_base(self.ctx());
        // SAFETY: the mappings `new` made, unused per the contract.
        unsafe {
            libc::munmap(stacks as *mut _, STACKS_BYTES);
            libc::munmap(self.base.cast(), CTX_BYTES);
        }
    }

    /// The header's address, which becomes the thread's GS base.
    pub fn address(&self) -> u64 {
        self.base as u64
    }

    fn xsave_area(&mut self) -> &mut [u8] {
        self.ctx().xsave_area()
    }
}

// SAFETY: the block owns its mappings; its thread uses them while running, the engine only
// under its lock on that thread's behalf (or to clear the lookup table of a thread that is
// in the dispatcher).
unsafe impl Send for ContextBlock {}

/// Makes `ctx`'s signal stack the calling thread's alternate signal stack.
pub fn use_signal_stack_of(ctx: &ThreadCtx) {
    let ss = libc::stack_t { ss_sp: stacks_base(ctx) as *mut _, ss_flags: 0, ss_size: SIGNAL_STACK_BYTES };
    // SAFETY: the stack is part of the context's mapping, which lives as long as the thread
    // that runs it; sigaltstack only reads `ss`.
    unsafe { cpu::syscall6(libc::SYS_sigaltstack as u64, [&raw const ss as u64, 0, 0, 0, 0, 0]) };
}

/// The start of the mapping that holds `ctx`'s signal and runtime stacks ([`STACKS_BYTES`]).
pub fn stacks_base(ctx: &ThreadCtx) -> u64 {
    ctx.rt_stack_top - STACKS_BYTES as u64
}
