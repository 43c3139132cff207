//! The program's system calls, made so that a signal that comes on the way to one is never
//! lost. A signal the engine takes for the program is delivered at the thread's next stop in
//! the dispatcher; one that comes after the dispatcher last looked but before the kernel
//! started a blocking call (`pause`, `read` of a pipe) would wait for that call to end,
//! maybe for ever. So the call checks the context's `signal_kick` (set by the signal
//! handler when it records a signal) right before `syscall`, and the signal handler, when
//! it interrupts a thread between that check and the `syscall` instruction, makes it skip
//! the call. Either way the call returns [`NOT_STARTED`] and the dispatcher delivers the
//! signal first and then makes the call, as the kernel would have.

use crate::arch::context::off;
use std::arch::global_asm;

/// What a program system call returns when a signal came first and it did not start
/// (the kernel's ERESTARTNOINTR, which never reaches user space from the kernel).
pub const NOT_STARTED: u64 = -513i64 as u64;

// rdi: the call number, rsi: its six arguments. Returns the result in rax.
global_asm!(
    ".globl rewire_program_syscall",
    ".globl rewire_program_syscall_check",
    ".globl rewire_program_syscall_insn",
    ".globl rewire_program_syscall_skip",
    ".p2align 4",
    "rewire_program_syscall:",
    "mov rax, rdi",
    "mov r11, rsi",
    "mov rdi, [r11]",
    "mov rsi, [r11 + 8]",
    "mov rdx, [r11 + 16]",
    "mov r10, [r11 + 24]",
    "mov r8, [r11 + 32]",
    "mov r9, [r11 + 40]",
    "rewire_program_syscall_check:",
    "cmp qword ptr gs:[{kick}], 0",
    "jne rewire_program_syscall_skip",
    "rewire_program_syscall_insn:",
    "syscall",
    "ret",
    "rewire_program_syscall_skip:",
    "mov rax, {not_started}",
    "ret",
    kick = const off::SIGNAL_KICK,
    not_started = const -513i64,
);

extern "C" {
    fn rewire_program_syscall(nr: u64, args: *const [u64; 6]) -> u64;
    fn rewire_program_syscall_check();
    fn rewire_program_syscall_insn();
    fn rewire_program_syscall_skip();
}

/// Makes the program's system call `nr` (on a thread with a context at its GS base);
/// [`NOT_STARTED`] when a signal came first.
///
/// # Safety
/// As [`crate::arch::syscall6`]: the call's effects are the caller's to answer for.
pub unsafe fn program_syscall(nr: u64, args: [u64; 6]) -> u64 {
    // SAFETY: per the contract; the routine reads the six arguments and the context's kick.
    unsafe { rewire_program_syscall(nr, &args) }
}

/// If `pc` is between the check and the `syscall` instruction of [`program_syscall`],
/// where the interrupted thread resumes instead so that the call does not start.
pub fn skip_unstarted_call(pc: u64) -> Option<u64> {
    let (check, insn) = (rewire_program_syscall_check as *const () as u64, rewire_program_syscall_insn as *const () as u64);
    (check..=insn).contains(&pc).then_some(rewire_program_syscall_skip as *const () as u64)
}
