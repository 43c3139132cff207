//! The calling thread's signal mask and the kernel's disposition of a signal, set with raw
//! system calls (what both signal delivery and the end of the process need).

use crate::arch::syscall6;

/// The bit of `sig` in a signal mask.
pub fn mask_of(sig: i32) -> u64 {
    1 << (sig - 1)
}

/// `rt_sigprocmask(how, set)` for the calling thread; returns the mask it had.
pub fn sigprocmask(how: i32, set: Option<u64>) -> u64 {
    let mut old = 0u64;
    let set_ptr = set.as_ref().map_or(0, |s| s as *const u64 as u64);
    // SAFETY: changes or reads this thread's signal mask (the program's own mask).
    unsafe { syscall6(libc::SYS_rt_sigprocmask as u64, [how as u64, set_ptr, &raw mut old as u64, 8, 0, 0]) };
    old
}

/// Gives `sig` the kernel's default action.
pub fn kernel_default(sig: usize) {
    let dfl = [0u64, 0, 0, 0];
    // SAFETY: the default action for `sig` (SIG_DFL), as the program asked or as it ends.
    unsafe { syscall6(libc::SYS_rt_sigaction as u64, [sig as u64, dfl.as_ptr() as u64, 0, 8, 0, 0]) };
}
