//! Copies of memory that may fault: the runtime reads and writes program memory with a
//! plain copy whose fault the signal handler resumes past, instead of a system call per
//! access. Being the process's own access, a store below the stack grows it as natively
//! (`process_vm_writev` cannot).

use std::arch::global_asm;

// Copies rdx bytes from rsi to rdi; returns in rax how many were left uncopied. A fault of
// the `rep movsb` (unreadable program memory) is resumed by the signal handler at
// `rewire_safe_copy_resume` with rcx still counting what is left.
global_asm!(
    ".globl rewire_safe_copy",
    ".globl rewire_safe_copy_fault",
    ".globl rewire_safe_copy_resume",
    ".p2align 4",
    "rewire_safe_copy:",
    "mov rcx, rdx",
    "rewire_safe_copy_fault:",
    "rep movsb",
    "rewire_safe_copy_resume:",
    "mov rax, rcx",
    "ret",
);

extern "C" {
    fn rewire_safe_copy(dst: *mut u8, src: u64, len: usize) -> usize;
    fn rewire_safe_copy_fault();
    fn rewire_safe_copy_resume();
}

/// Copies `buf.len()` bytes from `src`, which may be unmapped or unreadable; false when a
/// fault stopped the copy. Only for threads whose fault signals are unblocked and reach
/// the runtime's handler (see [`resume_after_copy_fault`]).
pub fn copy_or_fault(src: u64, buf: &mut [u8]) -> bool {
    // SAFETY: writes at most `buf.len()` bytes into `buf`; reads of `src` that fault are
    // resumed by the signal handler instead of crashing (the caller's contract).
    unsafe { rewire_safe_copy(buf.as_mut_ptr(), src, buf.len()) == 0 }
}

/// Copies `data` to `dst`, which may be unmapped or not writable; false when a fault
/// stopped the copy. Same contract as [`copy_or_fault`].
pub fn store_or_fault(dst: u64, data: &[u8]) -> bool {
    // SAFETY: reads `data`; stores to `dst` that fault are resumed by the signal handler
    // (the caller's contract); the program's memory is the program's to have written to.
    unsafe { rewire_safe_copy(dst as *mut u8, data.as_ptr() as u64, data.len()) == 0 }
}

/// If `pc` is the copy of [`copy_or_fault`] and [`store_or_fault`], where the thread resumes after a fault there.
pub fn resume_after_copy_fault(pc: u64) -> Option<u64> {
    (pc == rewire_safe_copy_fault as *const () as u64).then_some(rewire_safe_copy_resume as *const () as u64)
}
