//! A child process on its parent's memory (`clone` with `CLONE_VM | CLONE_VFORK`): the
//! system call runs here so that the child starts on a runtime stack of its own; it calls
//! the engine's `rewire_shared_child` (by its symbol name) with its context, the parent
//! returns the call's result once the child has exec'd or exited.

use std::arch::global_asm;

// rdi = flags, rsi = the child's stack top, rdx = parent tid pointer, rcx = child tid
// pointer, r8 = the child's context. r9 keeps the context across the call (`syscall`
// clobbers only rcx and r11); the child finds it there on its new stack.
global_asm!(
    ".globl rewire_clone_shared",
    ".p2align 4",
    "rewire_clone_shared:",
    "mov r10, rcx",
    "mov r9, r8",
    "mov eax, 56",
    "syscall",
    "test rax, rax",
    "jnz 1f",
    "mov rdi, r9",
    "call rewire_shared_child",
    "ud2",
    "1:",
    "ret",
);

extern "C" {
    fn rewire_clone_shared(flags: u64, stack_top: u64, parent_tid: u64, child_tid: u64, ctx: u64) -> u64;
}

/// `clone(flags)` of a child that shares this process's memory and starts on `stack_top`
/// (16-byte aligned) by calling `rewire_shared_child(ctx)`; returns the raw result in the
/// parent, after the child exec'd or exited when `flags` has `CLONE_VFORK`.
///
/// # Safety
/// `flags` must not carry `CLONE_SETTLS` (the child runs runtime code first) and must hold
/// `CLONE_VFORK` unless the child's runtime state is its own; `stack_top` must be the top of
/// an unused stack that lives as long as the child runs on it.
pub unsafe fn clone_shared(flags: u64, stack_top: u64, parent_tid: u64, child_tid: u64, ctx: u64) -> u64 {
    // SAFETY: per the contract; the parent's registers and stack are as the call left them.
    unsafe { rewire_clone_shared(flags, stack_top, parent_tid, child_tid, ctx) }
}
