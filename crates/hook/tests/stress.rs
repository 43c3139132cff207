//! Hooking and unhooking a function 10,000 times while two threads call it in a loop: no
//! crash and no wrong result. The target's prologue is several short instructions, so the
//! callers are often stopped inside the bytes being patched and must be moved.

use rewire_hook::Interceptor;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::*};
use std::sync::Arc;

std::arch::global_asm!(
    ".globl rewire_stress_target",
    ".type rewire_stress_target,@function",
    ".p2align 4",
    "rewire_stress_target:",
    "push rbx",
    "push rbp",
    "mov rax, rdi",
    "lea rax, [rax + rsi*2]",
    "xor rax, 0x55",
    "pop rbp",
    "pop rbx",
    "ret",
    ".size rewire_stress_target, .-rewire_stress_target",
);

extern "C" {
    fn rewire_stress_target(a: u64, b: u64) -> u64;
}

fn expected(a: u64, b: u64) -> u64 {
    a.wrapping_add(b.wrapping_mul(2)) ^ 0x55
}

static ORIGINAL: AtomicU64 = AtomicU64::new(0);
static DETOUR_CALLS: AtomicU64 = AtomicU64::new(0);

extern "C" fn detour(a: u64, b: u64) -> u64 {
    DETOUR_CALLS.fetch_add(1, Relaxed);
    // A trampoline loaded here may belong to a hook removed meanwhile: it stays valid.
    let original: extern "C" fn(u64, u64) -> u64 = unsafe { std::mem::transmute(ORIGINAL.load(SeqCst) as usize) };
    original(a, b)
}

#[test]
fn hook_and_unhook_ten_thousand_times_under_two_calling_threads() {
    let target = rewire_stress_target as unsafe extern "C" fn(u64, u64) -> u64 as usize as u64;
    let stop = Arc::new(AtomicBool::new(false));
    let callers: Vec<_> = (0..2u64)
        .map(|t| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let f: extern "C" fn(u64, u64) -> u64 = unsafe { std::mem::transmute(target as usize) };
                let mut calls = 0u64;
                while !stop.load(Relaxed) {
                    let (a, b) = (calls.wrapping_mul(0x9e37_79b9) ^ t, calls);
                    assert_eq!(std::hint::black_box(f)(a, b), expected(a, b), "wrong result");
                    calls += 1;
                }
                calls
            })
        })
        .collect();
    let interceptor = Interceptor::new();
    for _ in 0..10_000 {
        let mut tx = interceptor.transaction();
        // SAFETY: the detour has the target's signature and calls the original.
        unsafe { tx.hook_disabled(target, detour as extern "C" fn(u64, u64) -> u64 as usize as u64) };
        let hook = tx.commit().unwrap().pop().unwrap();
        ORIGINAL.store(hook.trampoline(), SeqCst);
        hook.enable().unwrap();
        std::hint::spin_loop();
        hook.remove().unwrap();
    }
    stop.store(true, Relaxed);
    let calls: u64 = callers.into_iter().map(|c| c.join().expect("a caller crashed or saw a wrong result")).sum();
    eprintln!("{calls} calls, {} through the detour", DETOUR_CALLS.load(Relaxed));
    assert!(calls > 10_000);
    assert!(DETOUR_CALLS.load(Relaxed) > 0);
}
