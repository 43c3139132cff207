//! The context switch between cache code and the dispatcher (`rewire_fcache_return`,
//! `rewire_start`) and a thread's last steps (`rewire_exit_thread`). The dispatcher is
//! reached by its symbol name, `rewire_dispatch`, which the engine layer defines: this
//! layer imports nothing above it.

use crate::arch::context::off;
use std::arch::global_asm;

// Cache → runtime: `rewire_fcache_return` is entered from cache code with the application's
// rax in `scratch_rax` and the exit record in rax. It saves every application register, the
// flags and the SIMD state into the thread context, switches to the runtime stack and the
// runtime's FS base, and calls the dispatcher. The SIMD state goes into the XSAVE area with
// `xsave`, or, where the OS enables nothing beyond x87, SSE, AVX and PKRU (see
// `simd_by_moves`), with plain moves of what runtime code can change (xmm/ymm registers and
// MXCSR) into the same places of the area: a pair of `xsave`/`xrstor` costs about 200 ns on
// a virtual machine, the moves a tenth of that. Where the CPU has it, `xsaveopt` replaces
// `xsave`: it does not write again what the program left as the last `xrstor` from the same
// area set it (only the dispatcher writes the area, between the save and the restore), which
// on a CPU with AVX-512 takes a round trip from 260 to 150 ns. The dispatcher leaves the cache address to
// resume at in `next_pc`; the second half restores the application state and jumps there.
// `rewire_start` enters that second half directly for a thread's first block.
global_asm!(
    ".text",
    ".globl rewire_fcache_return",
    ".p2align 4",
    "rewire_fcache_return:",
    "mov gs:[{exit}], rax",
    "mov rax, gs:[{s_rax}]",
    "mov gs:[{r0}], rax",
    "mov gs:[{r1}], rcx",
    "mov gs:[{r2}], rdx",
    "mov gs:[{r3}], rbx",
    "mov gs:[{r4}], rsp",
    "mov gs:[{r5}], rbp",
    "mov gs:[{r6}], rsi",
    "mov gs:[{r7}], rdi",
    "mov gs:[{r8}], r8",
    "mov gs:[{r9}], r9",
    "mov gs:[{r10}], r10",
    "mov gs:[{r11}], r11",
    "mov gs:[{r12}], r12",
    "mov gs:[{r13}], r13",
    "mov gs:[{r14}], r14",
    "mov gs:[{r15}], r15",
    "mov rsp, gs:[{rt_stack}]",
    "pushfq",
    "pop qword ptr gs:[{rflags}]",
    // Runtime code runs with the flags the ABI expects: DF and AC clear (HotSpot sets AC;
    // with it, an unaligned access of the runtime's raises SIGBUS).
    "push 0x202",
    "popfq",
    "mov rcx, gs:[{self_}]",
    "lea rcx, [rcx + {xsave}]",
    "cmp qword ptr gs:[{simd_moves}], 0",
    "je 6f",
    "vmovdqu [rcx + 160], xmm0",
    "vmovdqu [rcx + 176], xmm1",
    "vmovdqu [rcx + 192], xmm2",
    "vmovdqu [rcx + 208], xmm3",
    "vmovdqu [rcx + 224], xmm4",
    "vmovdqu [rcx + 240], xmm5",
    "vmovdqu [rcx + 256], xmm6",
    "vmovdqu [rcx + 272], xmm7",
    "vmovdqu [rcx + 288], xmm8",
    "vmovdqu [rcx + 304], xmm9",
    "vmovdqu [rcx + 320], xmm10",
    "vmovdqu [rcx + 336], xmm11",
    "vmovdqu [rcx + 352], xmm12",
    "vmovdqu [rcx + 368], xmm13",
    "vmovdqu [rcx + 384], xmm14",
    "vmovdqu [rcx + 400], xmm15",
    "vextractf128 [rcx + 576], ymm0, 1",
    "vextractf128 [rcx + 592], ymm1, 1",
    "vextractf128 [rcx + 608], ymm2, 1",
    "vextractf128 [rcx + 624], ymm3, 1",
    "vextractf128 [rcx + 640], ymm4, 1",
    "vextractf128 [rcx + 656], ymm5, 1",
    "vextractf128 [rcx + 672], ymm6, 1",
    "vextractf128 [rcx + 688], ymm7, 1",
    "vextractf128 [rcx + 704], ymm8, 1",
    "vextractf128 [rcx + 720], ymm9, 1",
    "vextractf128 [rcx + 736], ymm10, 1",
    "vextractf128 [rcx + 752], ymm11, 1",
    "vextractf128 [rcx + 768], ymm12, 1",
    "vextractf128 [rcx + 784], ymm13, 1",
    "vextractf128 [rcx + 800], ymm14, 1",
    "vextractf128 [rcx + 816], ymm15, 1",
    "stmxcsr [rcx + 24]",
    "vzeroupper",
    "jmp 7f",
    "6:",
    "mov eax, -1",
    "mov edx, -1",
    "cmp qword ptr gs:[{xsaveopt}], 0",
    "je 10f",
    "xsaveopt64 [rcx]",
    "jmp 7f",
    "10:",
    "xsave64 [rcx]",
    "7:",
    "cmp qword ptr gs:[{fsgs}], 0",
    "je 2f",
    "rdfsbase rax",
    "mov gs:[{app_fs}], rax",
    "mov rax, gs:[{rt_fs}]",
    "wrfsbase rax",
    "jmp 3f",
    "2:",
    "mov eax, 158",
    "mov edi, 0x1002",
    "mov rsi, gs:[{rt_fs}]",
    "syscall",
    "3:",
    ".Lrewire_dispatch_and_enter:",
    "mov rdi, gs:[{self_}]",
    "call rewire_dispatch",
    "cmp qword ptr gs:[{fsgs}], 0",
    "je 4f",
    "mov rax, gs:[{app_fs}]",
    "wrfsbase rax",
    "jmp 5f",
    "4:",
    "mov eax, 158",
    "mov edi, 0x1002",
    "mov rsi, gs:[{app_fs}]",
    "syscall",
    "5:",
    "mov rcx, gs:[{self_}]",
    "lea rcx, [rcx + {xsave}]",
    "cmp qword ptr gs:[{simd_moves}], 0",
    "je 8f",
    "vmovdqu xmm0, [rcx + 160]",
    "vmovdqu xmm1, [rcx + 176]",
    "vmovdqu xmm2, [rcx + 192]",
    "vmovdqu xmm3, [rcx + 208]",
    "vmovdqu xmm4, [rcx + 224]",
    "vmovdqu xmm5, [rcx + 240]",
    "vmovdqu xmm6, [rcx + 256]",
    "vmovdqu xmm7, [rcx + 272]",
    "vmovdqu xmm8, [rcx + 288]",
    "vmovdqu xmm9, [rcx + 304]",
    "vmovdqu xmm10, [rcx + 320]",
    "vmovdqu xmm11, [rcx + 336]",
    "vmovdqu xmm12, [rcx + 352]",
    "vmovdqu xmm13, [rcx + 368]",
    "vmovdqu xmm14, [rcx + 384]",
    "vmovdqu xmm15, [rcx + 400]",
    "vinsertf128 ymm0, ymm0, [rcx + 576], 1",
    "vinsertf128 ymm1, ymm1, [rcx + 592], 1",
    "vinsertf128 ymm2, ymm2, [rcx + 608], 1",
    "vinsertf128 ymm3, ymm3, [rcx + 624], 1",
    "vinsertf128 ymm4, ymm4, [rcx + 640], 1",
    "vinsertf128 ymm5, ymm5, [rcx + 656], 1",
    "vinsertf128 ymm6, ymm6, [rcx + 672], 1",
    "vinsertf128 ymm7, ymm7, [rcx + 688], 1",
    "vinsertf128 ymm8, ymm8, [rcx + 704], 1",
    "vinsertf128 ymm9, ymm9, [rcx + 720], 1",
    "vinsertf128 ymm10, ymm10, [rcx + 736], 1",
    "vinsertf128 ymm11, ymm11, [rcx + 752], 1",
    "vinsertf128 ymm12, ymm12, [rcx + 768], 1",
    "vinsertf128 ymm13, ymm13, [rcx + 784], 1",
    "vinsertf128 ymm14, ymm14, [rcx + 800], 1",
    "vinsertf128 ymm15, ymm15, [rcx + 816], 1",
    "ldmxcsr [rcx + 24]",
    "jmp 9f",
    "8:",
    "mov eax, -1",
    "mov edx, -1",
    "xrstor64 [rcx]",
    "9:",
    "push qword ptr gs:[{rflags}]",
    "popfq",
    "mov rax, gs:[{r0}]",
    "mov rcx, gs:[{r1}]",
    "mov rdx, gs:[{r2}]",
    "mov rbx, gs:[{r3}]",
    "mov rbp, gs:[{r5}]",
    "mov rsi, gs:[{r6}]",
    "mov rdi, gs:[{r7}]",
    "mov r8, gs:[{r8}]",
    "mov r9, gs:[{r9}]",
    "mov r10, gs:[{r10}]",
    "mov r11, gs:[{r11}]",
    "mov r12, gs:[{r12}]",
    "mov r13, gs:[{r13}]",
    "mov r14, gs:[{r14}]",
    "mov r15, gs:[{r15}]",
    "mov rsp, gs:[{r4}]",
    "jmp qword ptr gs:[{next_pc}]",
    "",
    ".globl rewire_start",
    ".p2align 4",
    "rewire_start:",
    "mov rsp, gs:[{rt_stack}]",
    "jmp .Lrewire_dispatch_and_enter",
    exit = const off::EXIT,
    s_rax = const off::S_RAX,
    r0 = const off::gpr(0),
    r1 = const off::gpr(1),
    r2 = const off::gpr(2),
    r3 = const off::gpr(3),
    r4 = const off::gpr(4),
    r5 = const off::gpr(5),
    r6 = const off::gpr(6),
    r7 = const off::gpr(7),
    r8 = const off::gpr(8),
    r9 = const off::gpr(9),
    r10 = const off::gpr(10),
    r11 = const off::gpr(11),
    r12 = const off::gpr(12),
    r13 = const off::gpr(13),
    r14 = const off::gpr(14),
    r15 = const off::gpr(15),
    rflags = const off::RFLAGS,
    rt_stack = const off::RT_STACK,
    self_ = const off::SELF,
    xsave = const off::XSAVE,
    fsgs = const off::FSGSBASE,
    simd_moves = const off::SIMD_MOVES,
    xsaveopt = const off::XSAVEOPT,
    app_fs = const off::APP_FS,
    rt_fs = const off::RT_FS,
    next_pc = const off::NEXT_PC,

);

// A thread's last steps: unmap its context and runtime stack (the one this runs on) and
// exit, using registers only. rdi/rsi = context, rdx/rcx = stack, r8 = exit status.
global_asm!(
    ".globl rewire_exit_thread",
    ".p2align 4",
    "rewire_exit_thread:",
    "mov r9, rdx",
    "mov r10, rcx",
    "mov eax, 11",
    "syscall",
    "mov rdi, r9",
    "mov rsi, r10",
    "mov eax, 11",
    "syscall",
    "mov edi, r8d",
    "mov eax, 60",
    "syscall",
    "ud2",
);

extern "C" {
    fn rewire_exit_thread(ctx: u64, ctx_len: u64, stack: u64, stack_len: u64, status: u64) -> !;
    fn rewire_fcache_return();
    fn rewire_start() -> !;
}

/// Address of the cache-exit routine.
pub fn fcache_return_address() -> u64 {
    rewire_fcache_return as *const () as u64
}

/// Sets this thread's GS base to `ctx` and enters the cache for the first time: the
/// dispatcher runs for the exit record already stored in the context.
///
/// # Safety
/// `ctx` must be a fully initialised context whose runtime stack is unused, and the engine
/// must be ready to dispatch; this thread never returns to its caller.
pub unsafe fn start(ctx: u64) -> ! {
    crate::arch::cpu::set_gs_base(ctx);
    // SAFETY: per the contract; rewire_start switches to the context's runtime stack.
    unsafe { rewire_start() }
}

/// Unmaps the calling thread's context and runtime stack and ends the thread with `status`.
///
/// # Safety
/// Every signal must be blocked, nothing may refer to the context any more, and the caller
/// must be running on that runtime stack, which is gone when this is called.
pub unsafe fn exit_thread(ctx: (u64, u64), stack: (u64, u64), status: u64) -> ! {
    // SAFETY: per the contract; the routine touches no memory.
    unsafe { rewire_exit_thread(ctx.0, ctx.1, stack.0, stack.1, status) }
}
