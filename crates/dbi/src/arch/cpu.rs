//! The calling thread's machine state the runtime reads or sets directly (GS and FS bases,
//! the stack pointer), raw system calls and anonymous memory.

/// The calling thread's GS base (its context), read through the context's self pointer.
pub fn gs_base() -> u64 {
    let v: u64;
    // SAFETY: reads 8 bytes at gs:[0], the context's self pointer, on threads whose GS base
    // is a context (the only ones the signal handler runs on).
    unsafe { std::arch::asm!("mov {}, gs:[0]", out(reg) v, options(nostack, readonly, preserves_flags)) };
    v
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
