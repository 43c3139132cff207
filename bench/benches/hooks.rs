//! rewire's hooks side by side with the `retour` crate, in one run:
//!
//! * install + enable time per hook (median), on 1,000 functions of libm;
//! * extra cost per call through hook + trampoline (ns);
//! * executable memory committed per hook with 1,000 hooks, and whether any page is writable
//!   and executable at once;
//! * the fraction of libc + libm exports each can hook, and how many of the hooks it accepts
//!   are unsafe (a branch back into the patched bytes, or a syscall whose return point they
//!   overwrite).
//!
//! Run with `cargo bench -p rewire-bench --bench hooks`.

use rewire_bench::{exec_memory, ExecMemory};
use rewire_hook::elf::ElfModule;
use rewire_hook::{HookError, Interceptor, Refusal, Sharing};
use rewire_mem::TrampolineSpace;
use rewire_x86::emit::{indirect_jmp_stub, INDIRECT_STUB_PTR};
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::time::Instant;

const HOOKS: usize = 1000;
const CALLS: u64 = 20_000_000;

extern "C" fn never_called() {
    std::process::abort();
}

/// Load address and exports of a loaded library.
fn exports(interceptor: &Interceptor, soname: &str) -> Vec<(String, u64)> {
    let name = std::ffi::CString::new(soname).unwrap();
    // SAFETY: loading a system library.
    assert!(!unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW) }.is_null());
    let mem = &**interceptor.process().memory();
    let modules = interceptor.process().modules();
    let path = modules.module(mem, soname).unwrap().path;
    let base = modules.load_base(mem, &path).unwrap();
    let mut out: Vec<(String, u64)> = ElfModule::open(&path).unwrap().exports().iter().map(|e| (e.name.clone(), base + e.addr)).collect();
    out.sort_by_key(|e| e.1);
    out
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.total_cmp(b));
    v[v.len() / 2]
}

struct InstallFigures {
    median_us: f64,
    per_hook: ExecMemory,
    hooks: usize,
}

/// Installs hooks on `targets` with `install` until [`HOOKS`] succeed, timing each call;
/// measures the executable memory they hold; then lets `release` remove them.
fn measure_installs<H>(targets: &[u64], mut install: impl FnMut(u64) -> Option<H>, release: impl FnOnce(Vec<H>)) -> InstallFigures {
    let before = exec_memory();
    let mut times = Vec::with_capacity(HOOKS);
    let mut hooks = Vec::with_capacity(HOOKS);
    for &t in targets {
        let start = Instant::now();
        let hook = install(t);
        let took = start.elapsed();
        if let Some(h) = hook {
            times.push(took.as_secs_f64() * 1e6);
            hooks.push(h);
        }
        if hooks.len() == HOOKS {
            break;
        }
    }
    let per_hook = exec_memory().minus(&before).per(hooks.len());
    let n = hooks.len();
    release(hooks);
    InstallFigures { median_us: median(times), per_hook, hooks: n }
}

fn install_rewire(targets: &[u64]) -> InstallFigures {
    let interceptor = Interceptor::with_sharing(Sharing::Shared);
    let detour = never_called as extern "C" fn() as usize as u64;
    // SAFETY: the targets are never called while hooked.
    let install = |t| unsafe { interceptor.hook(t, detour) }.ok();
    measure_installs(targets, install, |hooks| hooks.into_iter().for_each(|h| h.remove().unwrap()))
}

fn install_retour(targets: &[u64]) -> InstallFigures {
    // SAFETY: as above.
    let install =
        |t: u64| unsafe { retour::RawDetour::new(t as *const (), never_called as *const ()).and_then(|d| d.enable().map(|()| d)) }.ok();
    measure_installs(targets, install, drop)
}

macro_rules! work_fn {
    ($name:ident) => {
        #[inline(never)]
        extern "C" fn $name(x: u64) -> u64 {
            black_box(x.wrapping_mul(0x9e37_79b9_7f4a_7c15) ^ (x >> 7))
        }
    };
}
work_fn!(work_native);
work_fn!(work_rewire);
work_fn!(work_retour);

static NEXT_REWIRE: AtomicU64 = AtomicU64::new(0);
static NEXT_RETOUR: AtomicU64 = AtomicU64::new(0);
extern "C" fn detour_rewire(x: u64) -> u64 {
    let next: extern "C" fn(u64) -> u64 = unsafe { std::mem::transmute(NEXT_REWIRE.load(Relaxed) as usize) };
    next(x)
}
extern "C" fn detour_retour(x: u64) -> u64 {
    let next: extern "C" fn(u64) -> u64 = unsafe { std::mem::transmute(NEXT_RETOUR.load(Relaxed) as usize) };
    next(x)
}

/// Nanoseconds per call of `f` over one round of [`CALLS`] calls.
fn ns_per_call(f: extern "C" fn(u64) -> u64) -> f64 {
    let f = black_box(f);
    let start = Instant::now();
    let mut acc = 0u64;
    for i in 0..CALLS {
        acc = acc.wrapping_add(f(i));
    }
    black_box(acc);
    start.elapsed().as_secs_f64() * 1e9 / CALLS as f64
}

/// Extra ns per call through hook + trampoline + a detour that calls the original. Native
/// calls are timed before any hook exists (patching a neighbour's code slows the native loop
/// down); then rounds of rewire and retour alternate. The fastest round of each is kept.
fn call_overhead() -> (f64, f64, f64) {
    let fastest = |f: extern "C" fn(u64) -> u64| (0..7).map(|_| ns_per_call(f)).fold(f64::MAX, f64::min);
    let native = fastest(work_native);
    let interceptor = Interceptor::new();
    // SAFETY: the detour has the target's signature.
    let hook =
        unsafe { interceptor.hook_fn(work_rewire as extern "C" fn(u64) -> u64, detour_rewire as extern "C" fn(u64) -> u64) }.unwrap();
    NEXT_REWIRE.store(hook.hook().trampoline(), Relaxed);
    // SAFETY: as above.
    let d = unsafe { retour::RawDetour::new(work_retour as *const (), detour_retour as *const ()) }.unwrap();
    NEXT_RETOUR.store(d.trampoline() as *const () as u64, Relaxed);
    unsafe { d.enable() }.unwrap();
    let (mut rewire, mut retour) = (f64::MAX, f64::MAX);
    for _ in 0..7 {
        rewire = rewire.min(ns_per_call(work_rewire));
        retour = retour.min(ns_per_call(work_retour));
    }
    (native, rewire - native, retour - native)
}

struct Coverage {
    hooked: usize,
    total: usize,
    unsafe_accepted: usize,
}

/// Installs and removes a live pass-through hook on every export with each engine.
fn coverage(all: &[(String, u64)]) -> (Coverage, Coverage) {
    let interceptor = Interceptor::with_sharing(Sharing::Unique);
    let stubs = TrampolineSpace::new(interceptor.process().memory().clone());
    let mut ours = Coverage { hooked: 0, total: all.len(), unsafe_accepted: 0 };
    let mut theirs = Coverage { hooked: 0, total: all.len(), unsafe_accepted: 0 };
    for (_, addr) in all {
        let stub = stubs.alloc(*addr, 16).unwrap();
        stub.write(0, &indirect_jmp_stub(*addr));
        let mut tx = interceptor.transaction();
        // SAFETY: the detour jumps to the trampoline: behaviour unchanged.
        unsafe { tx.hook_disabled(*addr, stub.addr) };
        let unsafe_site = match tx.commit() {
            Ok(mut h) => {
                ours.hooked += 1;
                h.pop().unwrap().remove().unwrap();
                false
            }
            Err(HookError::Unhookable { reason: Refusal::BranchIntoWindow { .. } | Refusal::SyscallInWindow, .. }) => true,
            Err(_) => false,
        };
        // SAFETY: a pass-through detour again, enabled only for an instant.
        let retour_ok = unsafe { retour::RawDetour::new(*addr as *const (), stub.addr as *const ()) }.is_ok_and(|d| {
            stub.store_u64(INDIRECT_STUB_PTR, d.trampoline() as *const () as u64);
            unsafe { d.enable().is_ok() && d.disable().is_ok() }
        });
        if retour_ok {
            theirs.hooked += 1;
            theirs.unsafe_accepted += usize::from(unsafe_site);
        }
        stubs.free(stub);
    }
    (ours, theirs)
}

fn main() {
    let interceptor = Interceptor::new();
    let libm = exports(&interceptor, "libm.so.6");
    let libc_exports = exports(&interceptor, "libc.so.6");
    // Install targets: functions this benchmark never calls (libm, then other libraries).
    let mut targets: Vec<u64> = libm.iter().map(|e| e.1).collect();
    for lib in ["libz.so.1", "libstdc++.so.6", "libgcc_s.so.1", "libcrypto.so.3"] {
        if std::path::Path::new("/lib/x86_64-linux-gnu").join(lib).exists() {
            targets.extend(exports(&interceptor, lib).iter().map(|e| e.1));
        }
    }
    targets.dedup();

    let ours = install_rewire(&targets);
    let theirs = install_retour(&targets);
    let (native, extra_ours, extra_theirs) = call_overhead();
    let all: Vec<(String, u64)> = libc_exports.iter().chain(&libm).cloned().collect();
    let (cov_ours, cov_theirs) = coverage(&all);

    println!("{:<58} {:>14} {:>14}", "measure", "rewire", "retour");
    println!(
        "{:<58} {:>14.2} {:>14.2}",
        format!("install + enable, median µs ({} / {} hooks)", ours.hooks, theirs.hooks),
        ours.median_us,
        theirs.median_us
    );
    println!("{:<58} {:>14.2} {:>14.2}", format!("extra ns per call (native call {native:.2} ns)"), extra_ours, extra_theirs);
    println!("{:<58} {:>14.1} {:>14.1}", "executable bytes committed per hook (1,000 hooks)", ours.per_hook.bytes, theirs.per_hook.bytes);
    println!("{:<58} {:>14} {:>14}", "any page writable and executable", yes_no(ours.per_hook.wx_pages), yes_no(theirs.per_hook.wx_pages));
    let pct = |c: &Coverage| format!("{:.2}% ({}/{})", 100.0 * c.hooked as f64 / c.total as f64, c.hooked, c.total);
    println!("{:<58} {:>14} {:>14}", "libc + libm exports hooked", pct(&cov_ours), pct(&cov_theirs));
    println!("{:<58} {:>14} {:>14}", "unsafe hooks accepted", cov_ours.unsafe_accepted, cov_theirs.unsafe_accepted);
}

fn yes_no(b: bool) -> &'static str {
    if b {
        "yes"
    } else {
        "no"
    }
}
