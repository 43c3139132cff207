//! With no free address space within ±2 GiB of the target, the hook falls back to a 14-byte
//! absolute jump to a trampoline placed anywhere, and still behaves (own test binary: it
//! fills the neighbourhood of its own code).

use rewire_hook::{Interceptor, Sharing};
use rewire_mem::{AddressSpace, NEAR_REACH};
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

std::arch::global_asm!(
    ".globl rewire_far_target",
    ".type rewire_far_target,@function",
    ".p2align 4",
    "rewire_far_target:",
    "push rbx",
    "push rbp",
    "push r12",
    "push r13",
    "mov rax, rdi",
    "add rax, rsi",
    "imul rax, rax, 3",
    "pop r13",
    "pop r12",
    "pop rbp",
    "pop rbx",
    "ret",
    ".size rewire_far_target, .-rewire_far_target",
);

extern "C" {
    fn rewire_far_target(a: u64, b: u64) -> u64;
}

static ORIGINAL: AtomicU64 = AtomicU64::new(0);
extern "C" fn detour(a: u64, b: u64) -> u64 {
    let f: extern "C" fn(u64, u64) -> u64 = unsafe { std::mem::transmute(ORIGINAL.load(SeqCst) as usize) };
    f(a, b) + 1
}

/// Reserves (inaccessible, no memory) every free range within reach of `near`.
fn fill_neighbourhood(near: u64) -> Vec<(usize, usize)> {
    let mut reserved = Vec::new();
    let space = AddressSpace::read(None).unwrap();
    let (lo, hi) = (near.saturating_sub(NEAR_REACH + (1 << 30)), near + NEAR_REACH + (1 << 30));
    let mut start = 0x10000u64;
    for m in space.mappings.iter().map(|m| m.range.clone()).chain(std::iter::once(0x7fff_ffff_f000..u64::MAX)) {
        let (a, b) = (start.max(lo).next_multiple_of(0x1000), m.start.min(hi) & !0xfff);
        if a < b {
            // SAFETY: a fresh inaccessible reservation of a free range (never replaces anything).
            let p = unsafe {
                libc::mmap(
                    a as *mut _,
                    (b - a) as usize,
                    libc::PROT_NONE,
                    libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED_NOREPLACE,
                    -1,
                    0,
                )
            };
            if p != libc::MAP_FAILED {
                reserved.push((p as usize, (b - a) as usize));
            }
        }
        start = start.max(m.end);
    }
    reserved
}

#[test]
fn no_near_space_means_an_absolute_jump_that_works() {
    let target = rewire_far_target as unsafe extern "C" fn(u64, u64) -> u64 as usize as u64;
    let call = |a, b| unsafe { std::hint::black_box(rewire_far_target as unsafe extern "C" fn(u64, u64) -> u64)(a, b) };
    let before: Vec<u8> = unsafe { std::slice::from_raw_parts(target as *const u8, 24) }.to_vec();
    let reserved = fill_neighbourhood(target);
    let interceptor = Interceptor::with_sharing(Sharing::Unique);
    let mut tx = interceptor.transaction();
    unsafe { tx.hook_disabled(target, detour as extern "C" fn(u64, u64) -> u64 as usize as u64) };
    let hook = tx.commit().unwrap().pop().unwrap();
    ORIGINAL.store(hook.trampoline(), SeqCst);
    hook.enable().unwrap();
    let site = interceptor.site(target).unwrap();
    assert_eq!(site.patch_len, 14, "absolute jump");
    assert!(site.slot.start.abs_diff(target) > NEAR_REACH, "trampoline out of rel32 reach");
    assert_eq!(call(4, 5), 28);
    hook.remove().unwrap();
    assert_eq!(call(4, 5), 27);
    assert_eq!(unsafe { std::slice::from_raw_parts(target as *const u8, 24) }, &before[..]);
    for (p, len) in reserved {
        unsafe { libc::munmap(p as *mut _, len) };
    }
}
