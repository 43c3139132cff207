//! The entry of the runtime's signal handler: it swaps to the runtime's FS base around the
//! handler proper, `rewire_on_signal`, which the engine layer defines and this code reaches
//! by its symbol name.

use crate::arch::context::off;
use std::arch::global_asm;

// Signal entry: the kernel may interrupt cache code, where FS is the application's. Switch
// to the runtime's FS base for the Rust handler and back afterwards (signal frames do not
// carry the FS base).
global_asm!(
    ".globl rewire_signal_entry",
    ".p2align 4",
    "rewire_signal_entry:",
    "push rbx",
    "push r12",
    "push r13",
    "push r14",
    "sub rsp, 8",
    // The kernel clears DF for a handler but leaves AC as the program had it.
    "pushfq",
    "and dword ptr [rsp], {no_ac}",
    "popfq",
    "mov r12, rdi",
    "mov r13, rsi",
    "mov rbx, rdx",
    "cmp qword ptr gs:[{fsgs}], 0",
    "je 2f",
    "rdfsbase r14",
    "mov rax, gs:[{rt_fs}]",
    "wrfsbase rax",
    "jmp 3f",
    "2:",
    "mov eax, 158",
    "mov edi, 0x1003",
    "mov rsi, rsp",
    "syscall",
    "mov r14, [rsp]",
    "mov eax, 158",
    "mov edi, 0x1002",
    "mov rsi, gs:[{rt_fs}]",
    "syscall",
    "3:",
    "mov rdi, r12",
    "mov rsi, r13",
    "mov rdx, rbx",
    "call rewire_on_signal",
    "cmp qword ptr gs:[{fsgs}], 0",
    "je 4f",
    "wrfsbase r14",
    "jmp 5f",
    "4:",
    "mov eax, 158",
    "mov edi, 0x1002",
    "mov rsi, r14",
    "syscall",
    "5:",
    "add rsp, 8",
    "pop r14",
    "pop r13",
    "pop r12",
    "pop rbx",
    "ret",
    fsgs = const off::FSGSBASE,
    rt_fs = const off::RT_FS,
    no_ac = const !0x4_0000u32 as i32,

);

extern "C" {
    fn rewire_signal_entry();
}

/// Address of the signal entry, for `sigaction`.
pub fn signal_entry_address() -> usize {
    rewire_signal_entry as *const () as usize
}
