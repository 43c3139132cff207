//! The engine's machine-level code: the context switch between cache and dispatcher, the
//! indirect-branch lookup template, the signal entry, and raw system calls. All of the
//! crate's inline assembly is here.

use crate::context::off;
use std::arch::global_asm;

// Cache → runtime: `rewire_fcache_return` is entered from cache code with the application's
// rax in `scratch_rax` and the exit record in rax. It saves every application register, the
// flags and the SIMD state into the thread context, switches to the runtime stack and the
// runtime's FS base, and calls the dispatcher. The SIMD state goes into the XSAVE area with
// `xsave`, or, where the OS enables nothing beyond x87, SSE, AVX and PKRU (see
// `simd_by_moves`), with plain moves of what runtime code can change (xmm/ymm registers and
// MXCSR) into the same places of the area: a pair of `xsave`/`xrstor` costs about 200 ns on
// a virtual machine, the moves a tenth of that. The dispatcher leaves the cache address to
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
    "cld",
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
    "call {dispatch}",
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
    app_fs = const off::APP_FS,
    rt_fs = const off::RT_FS,
    next_pc = const off::NEXT_PC,
    dispatch = sym crate::dispatch::rewire_dispatch,
);

// The indirect-branch lookup, copied into every block that ends in an indirect branch.
// On entry rax holds the application target and `scratch_rax` the application's rax. The
// thread's table holds `{-tag, cache address}` pairs (one cache line for both halves); the
// home slot is the low 16 bits of the target, collisions probe the following slots up to an
// empty one. Nothing touches the arithmetic flags: comparisons are `lea` + `jrcxz`, and rcx
// counts in qwords (2 per slot) so `[rcx*8]` addresses a slot. A hit restores rax and jumps
// through the table to the fragment's lookup entry, whose first instruction restores rcx.
// A miss falls off the end with the target in `ibl_target`, rax in `scratch_rax` and rcx
// restored; the block appends its own exit there. Only relative jumps inside the template:
// it works at any address.
global_asm!(
    ".globl rewire_ibl_template",
    ".globl rewire_ibl_template_end",
    ".globl rewire_ibl_template_rcx_saved",
    "rewire_ibl_template:",
    "mov gs:[{s_rcx}], rcx",
    "rewire_ibl_template_rcx_saved:",
    "movzx ecx, ax",
    "lea rcx, [rcx + rcx]",
    "mov gs:[{idx}], rcx",
    "mov rcx, gs:[rcx * 8 + {tags}]",
    "lea rcx, [rcx + rax]",
    "jrcxz 3f",
    "2:",
    "mov rcx, gs:[{idx}]",
    "lea rcx, [rcx + 2]",
    "mov gs:[{idx}], rcx",
    "mov rcx, gs:[rcx * 8 + {tags}]",
    "jrcxz 4f",
    "lea rcx, [rcx + rax]",
    "jrcxz 3f",
    "jmp 2b",
    "3:",
    "mov rcx, gs:[{idx}]",
    "mov rax, gs:[{s_rax}]",
    "jmp qword ptr gs:[rcx * 8 + {targets}]",
    "4:",
    "mov gs:[{target}], rax",
    "mov rcx, gs:[{s_rcx}]",
    "rewire_ibl_template_end:",
    s_rcx = const off::S_RCX,
    s_rax = const off::S_RAX,
    idx = const off::IBL_INDEX,
    tags = const off::IBL_TABLE,
    targets = const off::IBL_TABLE + 8,
    target = const off::IBL_TARGET,
);

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
    "call {handler}",
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
    handler = sym crate::signals::rewire_on_signal,
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
    fn rewire_exit_thread(ctx: u64, ctx_len: u64, stack: u64, stack_len: u64, status: u64) -> !;
    fn rewire_fcache_return();
    fn rewire_start() -> !;
    fn rewire_signal_entry();
    fn rewire_safe_copy(dst: *mut u8, src: u64, len: usize) -> usize;
    fn rewire_safe_copy_fault();
    fn rewire_safe_copy_resume();
    static rewire_ibl_template: u8;
    static rewire_ibl_template_end: u8;
    static rewire_ibl_template_rcx_saved: u8;
}

/// Address of the cache-exit routine.
pub fn fcache_return_address() -> u64 {
    rewire_fcache_return as *const () as u64
}

/// Address of the signal entry, for `sigaction`.
pub fn signal_entry_address() -> usize {
    rewire_signal_entry as *const () as usize
}

/// Copies `buf.len()` bytes from `src`, which may be unmapped or unreadable; false when a
/// fault stopped the copy. Only for threads whose fault signals are unblocked and reach
/// the runtime's handler (see [`resume_after_copy_fault`]).
pub fn copy_or_fault(src: u64, buf: &mut [u8]) -> bool {
    // SAFETY: writes at most `buf.len()` bytes into `buf`; reads of `src` that fault are
    // resumed by the signal handler instead of crashing (the caller's contract).
    unsafe { rewire_safe_copy(buf.as_mut_ptr(), src, buf.len()) == 0 }
}

/// If `pc` is the copy of [`copy_or_fault`], where the thread resumes after a fault there.
pub fn resume_after_copy_fault(pc: u64) -> Option<u64> {
    (pc == rewire_safe_copy_fault as *const () as u64).then_some(rewire_safe_copy_resume as *const () as u64)
}

/// The bytes of the indirect-branch lookup template.
pub fn ibl_template() -> &'static [u8] {
    template_from(&raw const rewire_ibl_template)
}

/// The template without its first instruction, which saves rcx in `scratch_rcx`: for code
/// that saved it there already (a trace's inlined check whose target did not match).
pub fn ibl_template_rcx_saved() -> &'static [u8] {
    template_from(&raw const rewire_ibl_template_rcx_saved)
}

fn template_from(start: *const u8) -> &'static [u8] {
    // SAFETY: `start` is one of the template's labels and the end label follows them all in
    // this crate's text; the bytes between are the assembled template, immutable for the
    // process lifetime.
    unsafe {
        let end = &raw const rewire_ibl_template_end;
        std::slice::from_raw_parts(start, end as usize - start as usize)
    }
}

/// Sets this thread's GS base to `ctx` and enters the cache for the first time: the
/// dispatcher runs for the exit record already stored in the context.
///
/// # Safety
/// `ctx` must be a fully initialised context whose runtime stack is unused, and the engine
/// must be ready to dispatch; this thread never returns to its caller.
pub unsafe fn start(ctx: u64) -> ! {
    set_gs_base(ctx);
    // SAFETY: per the contract; rewire_start switches to the context's runtime stack.
    unsafe { rewire_start() }
}

/// The calling thread's GS base (its context), read through the context's self pointer.
pub fn gs_base() -> u64 {
    let v: u64;
    // SAFETY: reads 8 bytes at gs:[0], the context's self pointer, on threads whose GS base
    // is a context (the only ones the signal handler runs on).
    unsafe { std::arch::asm!("mov {}, gs:[0]", out(reg) v, options(nostack, readonly, preserves_flags)) };
    v
}

/// Makes an XSAVE image taken from the program (a signal frame) safe for `xrstor`: only
/// state components the OS enabled, standard format, reserved header bytes zero.
pub fn sanitize_xsave(area: &mut [u8]) {
    if area.len() < 576 {
        return;
    }
    set_xstate_bv(area, xstate_bv(area) & xcr0());
    area[520..576].fill(0);
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

/// Sets the GS base of the calling thread.
pub fn set_gs_base(base: u64) {
    // SAFETY: ARCH_SET_GS only changes this thread's GS base, which no code of this process
    // uses except the engine's.
    let r = unsafe { syscall6(libc::SYS_arch_prctl as u64, [0x1001, base, 0, 0, 0, 0]) };
    assert_eq!(r, 0, "arch_prctl(ARCH_SET_GS) failed");
}

/// The calling thread's FS base.
pub fn fs_base() -> u64 {
    let mut fs = 0u64;
    // SAFETY: ARCH_GET_FS writes 8 bytes to the pointer we pass, a live local.
    let r = unsafe { syscall6(libc::SYS_arch_prctl as u64, [0x1003, &raw mut fs as u64, 0, 0, 0, 0]) };
    assert_eq!(r, 0, "arch_prctl(ARCH_GET_FS) failed");
    fs
}

/// The current stack pointer.
pub fn stack_pointer() -> u64 {
    let sp: u64;
    // SAFETY: reads rsp; no memory or flags touched.
    unsafe { std::arch::asm!("mov {}, rsp", out(reg) sp, options(nomem, nostack, preserves_flags)) };
    sp
}

/// XSAVE state components: x87, SSE (xmm registers and MXCSR), AVX (upper ymm halves), PKRU.
const X87: u64 = 1;
const SSE: u64 = 2;
const AVX: u64 = 4;
const PKRU: u64 = 0x200;
/// Offset of the AVX component (upper ymm halves) in a standard-format XSAVE area.
const AVX_OFFSET: u32 = 576;
/// XSTATE_BV, the header's bitmap of components the area holds, at byte 512.
const XSTATE_BV: std::ops::Range<usize> = 512..520;
/// The xmm registers in a standard-format XSAVE area.
const XMM_AREA: std::ops::Range<usize> = 160..416;

fn xstate_bv(area: &[u8]) -> u64 {
    u64::from_le_bytes(area[XSTATE_BV].try_into().expect("8 bytes"))
}

fn set_xstate_bv(area: &mut [u8], bv: u64) {
    area[XSTATE_BV].copy_from_slice(&bv.to_le_bytes());
}

fn xcr0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: xgetbv(0) reads XCR0; OSXSAVE is set wherever the engine runs (it uses xsave).
    unsafe { std::arch::asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (hi as u64) << 32 | lo as u64
}

/// Whether the context switch may keep the application's SIMD state with moves instead of
/// `xsave`: the OS enables exactly x87, SSE and AVX (PKRU too, perhaps), and the AVX
/// component sits where the moves put it. Runtime code (Rust, and the libc string
/// functions it calls) changes only xmm/ymm registers and MXCSR of those; the x87 state and
/// PKRU stay live in the CPU while it runs. With AVX-512 or AMX enabled, libc's string
/// functions use registers the moves do not cover, so `xsave` it is.
pub fn simd_by_moves() -> bool {
    let avx = std::arch::x86_64::__cpuid_count(0xd, 2);
    xcr0() & !PKRU == X87 | SSE | AVX && avx.ebx == AVX_OFFSET && avx.eax == 256
}

/// The components the moves leave live in the CPU.
fn live_components() -> u64 {
    xcr0() & !(SSE | AVX)
}

/// Completes an XSAVE area the context switch filled by moves: stores the live x87 state
/// and PKRU into it and marks the SSE and AVX parts present.
pub fn save_live_simd(area: &mut [u8]) {
    assert!(area.len() >= AVX_OFFSET as usize + 256 && area.as_ptr() as usize % 64 == 0, "an aligned XSAVE area");
    let mask = live_components();
    // SAFETY: `area` is a 64-byte aligned buffer large enough for the enabled components
    // (XSAVE_MAX); xsave writes only there.
    unsafe {
        std::arch::asm!("xsave64 [{}]", in(reg) area.as_mut_ptr(), in("eax") mask as u32, in("edx") (mask >> 32) as u32, options(nostack, preserves_flags))
    };
    set_xstate_bv(area, xstate_bv(area) | SSE | AVX);
}

/// The other way: loads the x87 state and PKRU of an XSAVE area into the CPU, and writes
/// the SSE and AVX parts the area marks absent as their initial values (zeros), where the
/// context switch's moves read them.
pub fn load_live_simd(area: &mut [u8]) {
    assert!(area.len() >= AVX_OFFSET as usize + 256 && area.as_ptr() as usize % 64 == 0, "an aligned XSAVE area");
    let bv = xstate_bv(area);
    if bv & SSE == 0 {
        area[XMM_AREA].fill(0);
    }
    if bv & AVX == 0 {
        area[AVX_OFFSET as usize..AVX_OFFSET as usize + 256].fill(0);
    }
    set_xstate_bv(area, bv | SSE | AVX);
    let mask = live_components();
    // SAFETY: as in `save_live_simd`; the area was made valid for xrstor by
    // `sanitize_xsave` or by xsave itself. The x87 state and PKRU are the application's
    // while runtime code runs (it does not use them).
    unsafe {
        std::arch::asm!("xrstor64 [{}]", in(reg) area.as_ptr(), in("eax") mask as u32, in("edx") (mask >> 32) as u32, options(nostack, preserves_flags))
    };
}

/// Size of the XSAVE area for the features the OS enabled (CPUID 0xD, sub-leaf 0, EBX).
pub fn xsave_size() -> usize {
    std::arch::x86_64::__cpuid_count(0xd, 0).ebx as usize
}

/// Gives a fresh XSAVE area the state a new process starts with: empty state-component
/// bitmap (registers at their initial values), FCW 0x37f and MXCSR 0x1f80.
pub fn init_xsave_area(area: &mut [u8]) {
    area.fill(0);
    area[0..2].copy_from_slice(&0x37fu16.to_le_bytes());
    area[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
}

/// Issues system call `nr` with six arguments; returns the raw result (`-errno` on error).
///
/// # Safety
/// The call may change memory, mappings, signal state or the process itself; the caller
/// answers for its effects.
pub unsafe fn syscall6(nr: u64, a: [u64; 6]) -> u64 {
    let ret: u64;
    // SAFETY: per the contract; `syscall` clobbers rcx and r11 only.
    unsafe {
        std::arch::asm!(
            "syscall",
            inlateout("rax") nr => ret,
            in("rdi") a[0], in("rsi") a[1], in("rdx") a[2], in("r10") a[3], in("r8") a[4], in("r9") a[5],
            lateout("rcx") _, lateout("r11") _,
            options(nostack),
        )
    };
    ret
}

/// Maps `len` bytes of zeroed private read+write memory.
pub fn map_anonymous(len: usize) -> Result<*mut u8, std::io::Error> {
    // SAFETY: a fresh anonymous mapping at an address the kernel chooses aliases nothing.
    let p = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE,
            -1,
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(std::io::Error::last_os_error());
    }
    Ok(p.cast())
}
