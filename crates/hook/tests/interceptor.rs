//! The Interceptor on functions of this test program and of libc: call-through, enable and
//! disable, stacking, transactions, hook cells, symbols, probes, and bad input.

use rewire_hook::{HookCell, HookError, Interceptor, Refusal, Sharing};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering};

fn code(addr: u64, len: usize) -> Vec<u8> {
    // SAFETY: reading code bytes of a live function.
    unsafe { std::slice::from_raw_parts(addr as *const u8, len).to_vec() }
}

macro_rules! target_fn {
    ($name:ident, $k:expr) => {
        #[inline(never)]
        extern "C" fn $name(a: u64, b: u64) -> u64 {
            let mut x = a.wrapping_mul($k) ^ b.rotate_left(7);
            for i in 0..(b % 5) {
                x = x.wrapping_add(i * a) ^ (x >> 3);
            }
            black_box(x)
        }
    };
}
target_fn!(mix1, 3);
target_fn!(mix2, 5);
target_fn!(mix3, 7);
target_fn!(mix4, 11);
target_fn!(mix5, 13);

type Mix = extern "C" fn(u64, u64) -> u64;

static ORIG1: AtomicU64 = AtomicU64::new(0);
extern "C" fn detour_plus_one(a: u64, b: u64) -> u64 {
    let orig: Mix = unsafe { std::mem::transmute(ORIG1.load(Ordering::SeqCst) as usize) };
    orig(a, b) + 1
}

fn call(f: Mix, a: u64, b: u64) -> u64 {
    black_box(f)(a, b)
}

#[test]
fn hook_calls_through_enables_disables_and_restores_exact_bytes() {
    let i = Interceptor::new();
    let target = mix1 as Mix as usize as u64;
    let before = code(target, 32);
    let expected = call(mix1, 1234, 9876);
    let hook = unsafe { i.hook(target, detour_plus_one as Mix as usize as u64) }.unwrap();
    ORIG1.store(hook.trampoline(), Ordering::SeqCst);
    assert_ne!(code(target, 32), before);
    assert_eq!(call(mix1, 1234, 9876), expected + 1);
    hook.disable().unwrap();
    assert!(!hook.is_enabled());
    assert_eq!(call(mix1, 1234, 9876), expected);
    hook.enable().unwrap();
    assert_eq!(call(mix1, 1234, 9876), expected + 1);
    let site = i.site(target).unwrap();
    assert_eq!(site.patch_len, 5, "a near trampoline: the patch is a 5-byte jump");
    assert!(site.slot.end - site.slot.start <= 32, "one 32-byte slot per hooked target");
    hook.remove().unwrap();
    assert_eq!(code(target, 32), before, "original bytes restored exactly");
    assert_eq!(call(mix1, 1234, 9876), expected);
    assert!(i.site(target).is_none());
}

static ORDER: std::sync::Mutex<Vec<&'static str>> = std::sync::Mutex::new(Vec::new());
static NEXT_A: AtomicU64 = AtomicU64::new(0);
static NEXT_B: AtomicU64 = AtomicU64::new(0);
static NEXT_C: AtomicU64 = AtomicU64::new(0);
macro_rules! chain_detour {
    ($name:ident, $next:ident, $tag:expr) => {
        extern "C" fn $name(a: u64, b: u64) -> u64 {
            ORDER.lock().unwrap().push($tag);
            let next: Mix = unsafe { std::mem::transmute($next.load(Ordering::SeqCst) as usize) };
            next(a, b) * 2
        }
    };
}
chain_detour!(chain_a, NEXT_A, "a");
chain_detour!(chain_b, NEXT_B, "b");
chain_detour!(chain_c, NEXT_C, "c");

fn run_chain() -> (u64, Vec<&'static str>) {
    ORDER.lock().unwrap().clear();
    let r = call(mix2, 5, 6);
    (r, std::mem::take(&mut *ORDER.lock().unwrap()))
}

#[test]
fn hooks_stack_newest_first_and_come_off_in_any_order() {
    let i = Interceptor::new();
    let other = i.sibling(Sharing::Unique);
    let target = mix2 as Mix as usize as u64;
    let before = code(target, 32);
    let base = call(mix2, 5, 6);
    let a = unsafe { i.hook(target, chain_a as Mix as usize as u64) }.unwrap();
    NEXT_A.store(a.trampoline(), Ordering::SeqCst);
    let b = unsafe { other.hook(target, chain_b as Mix as usize as u64) }.unwrap();
    NEXT_B.store(b.trampoline(), Ordering::SeqCst);
    let c = unsafe { i.hook(target, chain_c as Mix as usize as u64) }.unwrap();
    NEXT_C.store(c.trampoline(), Ordering::SeqCst);
    assert_eq!(i.site(target).unwrap().hooks, 3);
    assert_eq!(run_chain(), (base * 8, vec!["c", "b", "a"]));
    b.disable().unwrap();
    assert_eq!(run_chain(), (base * 4, vec!["c", "a"]));
    b.enable().unwrap();
    a.remove().unwrap(); // the oldest, which owns the site
    assert_eq!(run_chain(), (base * 4, vec!["c", "b"]));
    c.remove().unwrap();
    assert_eq!(run_chain(), (base * 2, vec!["b"]));
    assert!(matches!(unsafe { i.hook(target, chain_b as Mix as usize as u64) }, Err(HookError::AlreadyHooked { .. })));
    b.remove().unwrap();
    assert_eq!(run_chain(), (base, vec![]));
    assert_eq!(code(target, 32), before);
}

static NEXT_T3: AtomicU64 = AtomicU64::new(0);
static NEXT_T4: AtomicU64 = AtomicU64::new(0);
extern "C" fn neg3(a: u64, b: u64) -> u64 {
    let n: Mix = unsafe { std::mem::transmute(NEXT_T3.load(Ordering::SeqCst) as usize) };
    !n(a, b)
}
extern "C" fn neg4(a: u64, b: u64) -> u64 {
    let n: Mix = unsafe { std::mem::transmute(NEXT_T4.load(Ordering::SeqCst) as usize) };
    !n(a, b)
}

#[test]
fn transactions_apply_together_or_not_at_all() {
    let i = Interceptor::with_sharing(Sharing::Unique); // its own slots, to count them
    let (t3, t4) = (mix3 as Mix as usize as u64, mix4 as Mix as usize as u64);
    let (b3, b4) = (code(t3, 16), code(t4, 16));
    let (e3, e4) = (call(mix3, 3, 4), call(mix4, 3, 4));
    // A batch with one bad item changes nothing.
    let mut tx = i.transaction();
    unsafe { tx.hook(t3, neg3 as Mix as usize as u64).hook(0x10, neg4 as Mix as usize as u64) };
    assert!(matches!(tx.commit(), Err(HookError::Unmapped(0x10))));
    assert_eq!((code(t3, 16), code(t4, 16)), (b3.clone(), b4.clone()));
    let live_before = i.space().stats().live_slots;
    let mut tx = i.transaction();
    unsafe { tx.hook(t3, neg3 as Mix as usize as u64).hook_disabled(t4, neg4 as Mix as usize as u64) };
    let hooks = tx.commit().unwrap();
    NEXT_T3.store(hooks[0].trampoline(), Ordering::SeqCst);
    NEXT_T4.store(hooks[1].trampoline(), Ordering::SeqCst);
    assert_eq!((call(mix3, 3, 4), call(mix4, 3, 4)), (!e3, e4));
    let mut tx = i.transaction();
    tx.disable(&hooks[0]).enable(&hooks[1]);
    tx.commit().unwrap();
    assert_eq!((call(mix3, 3, 4), call(mix4, 3, 4)), (e3, !e4));
    let mut tx = i.transaction();
    for h in hooks {
        tx.remove(h);
    }
    tx.commit().unwrap();
    assert_eq!((code(t3, 16), code(t4, 16)), (b3, b4));
    assert_eq!(i.space().stats().live_slots, live_before, "all slots returned");
}

static GETPID: HookCell<extern "C" fn() -> libc::pid_t> = HookCell::new();
extern "C" fn fake_getpid() -> libc::pid_t {
    GETPID.original().expect("published before the detour runs")() + 1_000_000
}

#[test]
fn hook_cell_by_symbol_and_typed() {
    let real = unsafe { libc::getpid() };
    let i = Interceptor::new();
    let hook = unsafe { GETPID.install_symbol(&i, "libc.so.6", "getpid", fake_getpid) }.unwrap();
    assert_eq!(unsafe { libc::getpid() }, real + 1_000_000);
    assert_eq!(hook.original()(), real);
    // A second install returns the same hook, never installs twice.
    let again = unsafe { GETPID.install_symbol(&i, "libc.so.6", "getpid", fake_getpid) }.unwrap();
    assert_eq!(again.hook().trampoline(), hook.hook().trampoline());
    hook.hook().disable().unwrap();
    assert_eq!(unsafe { libc::getpid() }, real);
}

static FAILING: HookCell<extern "C" fn()> = HookCell::new();
extern "C" fn nothing() {}

#[test]
fn hook_cell_failure_is_final_and_leaks_nothing() {
    let i = Interceptor::with_sharing(Sharing::Unique);
    let err = unsafe { FAILING.install_symbol(&i, "libc.so.6", "no_such_function_xyz", nothing) }.unwrap_err();
    assert!(matches!(err, HookError::SymbolNotFound { .. }), "{err}");
    // Even with a valid target, the cell does not retry.
    let again = unsafe { FAILING.install(&i, nothing, nothing) }.unwrap_err();
    assert_eq!(again, err);
    assert!(FAILING.original().is_none() && FAILING.get().is_none());
    assert_eq!(i.space().stats().live_slots, 0);
}

#[test]
fn symbol_errors_name_close_matches() {
    let i = Interceptor::new();
    match i.resolve("libc.so.6", "getpidd") {
        Err(HookError::SymbolNotFound { similar, .. }) => {
            assert!(similar.iter().any(|s| s == "getpid"), "{similar:?}")
        }
        other => panic!("{other:?}"),
    }
    assert!(matches!(i.resolve("libnothere.so.9", "x"), Err(HookError::ModuleNotFound(_))));
}

#[test]
fn typed_hook_of_a_libc_function() {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    extern "C" fn my_labs(x: libc::c_long) -> libc::c_long {
        let orig: extern "C" fn(libc::c_long) -> libc::c_long = unsafe { std::mem::transmute(NEXT.load(Ordering::SeqCst) as usize) };
        orig(x) * 10
    }
    let i = Interceptor::new();
    let hook = unsafe { i.hook_symbol_fn("libc.so.6", "labs", my_labs as extern "C" fn(libc::c_long) -> libc::c_long) }.unwrap();
    NEXT.store(hook.hook().trampoline(), Ordering::SeqCst);
    assert_eq!(unsafe { black_box(libc::labs as unsafe extern "C" fn(libc::c_long) -> libc::c_long)(-7) }, 70);
    assert_eq!(hook.original()(-7), 7);
    hook.remove().unwrap();
    assert_eq!(unsafe { black_box(libc::labs as unsafe extern "C" fn(libc::c_long) -> libc::c_long)(-7) }, 7);
}

#[test]
fn probe_sees_and_changes_registers_mid_function() {
    use iced_x86::{Decoder, DecoderOptions};
    let i = Interceptor::new();
    let target = mix5 as Mix as usize as u64;
    let expected = call(mix5, 40, 2);
    // Probe the second instruction of the function, and the entry.
    let first = Decoder::with_ip(64, &code(target, 16), target, DecoderOptions::NONE).decode();
    let seen = std::sync::Arc::new(AtomicU64::new(0));
    let s = seen.clone();
    let mid = unsafe {
        i.probe(first.next_ip(), move |ctx| {
            s.fetch_add(1, Ordering::SeqCst);
            assert_eq!(ctx.sp() % 8, 0);
        })
    }
    .unwrap();
    let entry = unsafe {
        i.probe(target, |ctx| {
            assert_eq!(ctx.regs().rdi, 40);
            ctx.regs_mut().rdi = 41; // the function now computes mix5(41, 2)
        })
    }
    .unwrap();
    let with_41 = {
        entry.hook().disable().unwrap();
        let v = call(mix5, 41, 2);
        entry.hook().enable().unwrap();
        v
    };
    assert_eq!(call(mix5, 40, 2), with_41);
    assert_eq!(seen.load(Ordering::SeqCst), 2, "two calls passed the mid-function probe");
    entry.remove().unwrap();
    mid.remove().unwrap();
    assert_eq!(call(mix5, 40, 2), expected);
}

#[test]
fn bad_input_is_a_typed_error_and_changes_nothing() {
    let i = Interceptor::new();
    let detour = nothing as extern "C" fn() as usize as u64;
    assert_eq!(unsafe { i.hook(0, detour) }.unwrap_err(), HookError::NullTarget);
    assert_eq!(unsafe { i.hook(0x1000, detour) }.unwrap_err(), HookError::Unmapped(0x1000));
    static DATA: [u8; 64] = [0x90; 64];
    let data = DATA.as_ptr() as u64;
    assert_eq!(unsafe { i.hook(data, detour) }.unwrap_err(), HookError::NotExecutable(data));
    assert_eq!(unsafe { i.hook(mix4 as Mix as usize as u64, data) }.unwrap_err(), HookError::NotExecutable(data));
    // A function too short for the patch, followed by other code: `nothing` is one `ret`
    // followed by the next function (or padding, in which case it is hookable).
    let tiny = nothing as extern "C" fn() as usize as u64;
    let before = code(tiny, 16);
    match unsafe { i.hook(tiny, mix4 as Mix as usize as u64) } {
        Err(HookError::Unhookable { reason: Refusal::TooShort { available, needed: 5 }, .. }) => assert!(available < 5),
        Ok(h) => {
            assert!(code(tiny, 16)[5..].iter().zip(&before[5..]).all(|(a, b)| a == b));
            h.remove().unwrap();
        }
        Err(e) => panic!("{e}"),
    }
    assert_eq!(code(tiny, 16), before);
    // Already hooked with the same detour.
    let t = mix4 as Mix as usize as u64;
    let h = unsafe { i.hook(t, detour_plus_one as Mix as usize as u64) }.unwrap();
    assert_eq!(
        unsafe { i.hook(t, detour_plus_one as Mix as usize as u64) }.unwrap_err(),
        HookError::AlreadyHooked { target: t, detour: detour_plus_one as Mix as usize as u64 }
    );
    h.remove().unwrap();
}
