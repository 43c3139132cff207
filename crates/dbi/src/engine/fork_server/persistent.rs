//! Persistent mode, as in AFL++'s QEMU and Frida modes: a child of the fork server runs one
//! function of the program many times instead of the whole program once. At the function's
//! first entry the child keeps the registers, flags and SIMD state; when the function
//! returns to where it was called from (the same stack pointer), the iteration is over: the
//! child stops itself (SIGSTOP, which the server reports to the fuzzer as a finished run),
//! and when the server sends SIGCONT for the next test case the kept state comes back and
//! the function runs again. After `count` iterations the function returns normally and the
//! program runs on to its end, and the server forks a fresh child.
//!
//! A hook library (`AFL_QEMU_PERSISTENT_HOOK`) may put each test case into the program
//! itself: its `afl_persistent_hook(regs, guest_base, input, len)` runs at the start of each
//! iteration with AFL++'s `struct x86_64_regs`, and the test case comes from the fuzzer's
//! shared memory (`__AFL_SHM_FUZZ_ID`).

use crate::arch::context::{reg, ThreadCtx};
use crate::arch::syscall6;
use crate::os::appmem;
use crate::tool::LoopEvent;
use std::path::PathBuf;

/// What the user asked of the persistent loop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PersistentOptions {
    /// The function (its address in the running program; a link-time address for a
    /// position-independent program).
    pub addr: u64,
    /// Iterations per child.
    pub count: u32,
    /// Where an iteration ends instead of the function's return address.
    pub ret: Option<u64>,
    /// The hook library.
    pub hook: Option<PathBuf>,
}

/// The first of `names` that is set, as a hexadecimal address.
fn address(names: &[&str]) -> Result<Option<u64>, String> {
    let Some((name, v)) = names.iter().find_map(|n| std::env::var(n).ok().map(|v| (*n, v))) else { return Ok(None) };
    u64::from_str_radix(v.trim().trim_start_matches("0x").trim_start_matches("0X"), 16)
        .map(Some)
        .map_err(|_| format!("{name}={v}: not a hexadecimal address"))
}

impl PersistentOptions {
    /// The persistent loop the environment asks for, by rewire's names or those of AFL++'s
    /// QEMU and Frida modes.
    pub fn from_env() -> Result<Option<PersistentOptions>, String> {
        let Some(addr) = address(&["REWIRE_AFL_PERSISTENT_ADDR", "AFL_QEMU_PERSISTENT_ADDR", "AFL_FRIDA_PERSISTENT_ADDR"])? else {
            return Ok(None);
        };
        let count = match ["REWIRE_AFL_PERSISTENT_CNT", "AFL_QEMU_PERSISTENT_CNT", "AFL_FRIDA_PERSISTENT_CNT"]
            .iter()
            .find_map(|n| std::env::var(n).ok().map(|v| (*n, v)))
        {
            Some((name, v)) => v.trim().parse::<u32>().ok().filter(|&n| n > 0).ok_or_else(|| format!("{name}={v}: not a count above 0"))?,
            None => 1000,
        };
        let ret = address(&["REWIRE_AFL_PERSISTENT_RET", "AFL_QEMU_PERSISTENT_RET", "AFL_FRIDA_PERSISTENT_RET"])?;
        let hook = ["REWIRE_AFL_PERSISTENT_HOOK", "AFL_QEMU_PERSISTENT_HOOK", "AFL_FRIDA_PERSISTENT_HOOK"]
            .iter()
            .find_map(std::env::var_os)
            .map(PathBuf::from);
        Ok(Some(PersistentOptions { addr, count, ret, hook }))
    }
}

/// AFL++'s register block for persistent hooks (`struct x86_64_regs`).
#[repr(C)]
struct HookRegs {
    gpr: [u64; 15],
    rip: u64,
    rsp: u64,
    rflags: u64,
    zmm: [[u8; 64]; 32],
}

/// The hook's signature.
type HookFn = unsafe extern "C" fn(regs: *mut HookRegs, guest_base: u64, input: *const u8, len: u32);

/// AFL++'s order of the registers in `HookRegs::gpr`, as the engine numbers them.
const HOOK_ORDER: [usize; 15] = [0, 3, 1, 2, 7, 6, 5, 8, 9, 10, 11, 12, 13, 14, 15];

/// The state of the loop in one child.
#[derive(Debug)]
pub struct Persistent {
    /// Where iterations start.
    pub entry: u64,
    count: u32,
    done: u32,
    ret: Option<u64>,
    kept: Option<Kept>,
    hook: Option<HookFn>,
    /// The fuzzer's shared test case (`[u32 length][bytes]`), when it sends them that way.
    input: Option<*const u8>,
}

// SAFETY: the raw pointers are the hook function and a shared mapping, both kept for the
// process's life; only the dispatcher, under the engine lock, uses them.
unsafe impl Send for Persistent {}

/// The application state an iteration starts from.
#[derive(Debug)]
struct Kept {
    regs: crate::arch::context::AppRegs,
    simd: Vec<u8>,
    app_fs: u64,
    /// Where the function returns to, and the stack pointer it returns with.
    ret: u64,
    sp_after: u64,
}

/// What the thread does after a watched block's entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Runs the block.
    Resume,
    /// Continues at this application address instead (the next iteration's start).
    GoTo(u64),
}

impl Persistent {
    /// The loop for `opts`, starting at `entry` (the function's run-time address); the hook
    /// library loaded and the shared test case attached if there is one.
    pub fn new(opts: &PersistentOptions, entry: u64, ret: Option<u64>) -> Result<Persistent, String> {
        let hook = opts.hook.as_deref().map(load_hook).transpose()?;
        let input = match (hook.is_some(), std::env::var("__AFL_SHM_FUZZ_ID")) {
            (true, Ok(id)) => {
                let id = id.trim().parse::<i32>().map_err(|_| format!("__AFL_SHM_FUZZ_ID={id}: not a shared memory id"))?;
                // SAFETY: attaches the fuzzer's test-case segment read-only wherever the
                // kernel chooses.
                let p = unsafe { libc::shmat(id, std::ptr::null(), libc::SHM_RDONLY) };
                if p as isize == -1 {
                    return Err(format!(
                        "cannot attach the fuzzer's test cases (__AFL_SHM_FUZZ_ID={id}): {}",
                        std::io::Error::last_os_error()
                    ));
                }
                Some(p as *const u8)
            }
            _ => None,
        };
        Ok(Persistent { entry, count: opts.count, done: 0, ret, kept: None, hook, input })
    }

    /// True when the fuzzer should send test cases through shared memory.
    pub fn wants_shared_input(&self) -> bool {
        self.hook.is_some()
    }

    /// The fuzzer sends test cases the usual way after all: the hook is not called.
    pub fn no_shared_input(&mut self) {
        self.input = None;
    }

    /// The application addresses whose blocks must be watched: the entry, and the return
    /// address once known.
    pub fn watched(&self) -> impl Iterator<Item = u64> + '_ {
        std::iter::once(self.entry).chain(self.kept.as_ref().map(|k| k.ret).or(self.ret))
    }

    /// At the watched block `tag` of the thread `ctx`. `edge_prev` is the edge coverage's
    /// `prev` counter, which every iteration starts from zero. Returns what the thread does
    /// next, a return address to watch from now on, and whether the loop starts or ends.
    pub fn at(&mut self, ctx: &mut ThreadCtx, tag: u64, edge_prev: Option<u32>) -> (Next, Option<u64>, Option<LoopEvent>) {
        let sp = ctx.regs.gpr[reg::RSP];
        if tag == self.entry && self.kept.is_none() {
            let mut ret = [0u8; 8];
            let called_from = if appmem::read(sp, &mut ret) { u64::from_le_bytes(ret) } else { 0 };
            let ret = self.ret.unwrap_or(called_from);
            self.kept = Some(Kept { regs: ctx.regs, simd: ctx.simd_image().to_vec(), app_fs: ctx.app_fs, ret, sp_after: sp + 8 });
            self.start_iteration(ctx, edge_prev);
            return (Next::Resume, Some(ret), Some(LoopEvent::Start));
        }
        let Some(kept) = self.kept.as_ref().filter(|k| tag == k.ret && (self.ret.is_some() || sp == k.sp_after)) else {
            return (Next::Resume, None, None);
        };
        self.done += 1;
        if self.done >= self.count {
            return (Next::Resume, None, Some(LoopEvent::End));
        }
        // SAFETY: stops this (single-threaded) process until the fork server sends SIGCONT.
        unsafe { syscall6(libc::SYS_kill as u64, [libc::getpid() as u64, libc::SIGSTOP as u64, 0, 0, 0, 0]) };
        ctx.regs = kept.regs;
        ctx.app_fs = kept.app_fs;
        let simd = kept.simd.clone();
        ctx.set_simd_image(&simd);
        self.start_iteration(ctx, edge_prev);
        (Next::GoTo(self.entry), None, None)
    }

    /// The start of an iteration: coverage starts afresh, the hook gets the test case.
    fn start_iteration(&mut self, ctx: &mut ThreadCtx, edge_prev: Option<u32>) {
        if let Some(prev) = edge_prev {
            ctx.set_counter(prev, 0);
        }
        let (Some(hook), Some(input)) = (self.hook, self.input) else { return };
        // SAFETY: the fuzzer's segment starts with the test case's length.
        let len = unsafe { std::ptr::read_volatile(input as *const u32) };
        let mut regs = HookRegs { gpr: [0; 15], rip: self.entry, rsp: ctx.regs.gpr[reg::RSP], rflags: ctx.regs.rflags, zmm: [[0; 64]; 32] };
        for (slot, &r) in regs.gpr.iter_mut().zip(&HOOK_ORDER) {
            *slot = ctx.regs.gpr[r];
        }
        // SAFETY: the hook has AFL++'s signature; it may write the program's memory (that is
        // its job) and the register block.
        unsafe { hook(&mut regs, 0, input.add(4), len) };
        for (slot, &r) in regs.gpr.iter().zip(&HOOK_ORDER) {
            ctx.regs.gpr[r] = *slot;
        }
        ctx.regs.gpr[reg::RSP] = regs.rsp;
    }
}

/// Loads the hook library into the runtime (not the program: its loader never sees it).
fn load_hook(path: &std::path::Path) -> Result<HookFn, String> {
    let c =
        std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).map_err(|_| format!("{}: a path with a NUL byte", path.display()))?;
    // SAFETY: dlopen of a library the user named for this purpose, in the runtime's own
    // namespace; dlsym of its hook.
    unsafe {
        let lib = libc::dlopen(c.as_ptr(), libc::RTLD_NOW | libc::RTLD_LOCAL);
        if lib.is_null() {
            let why = std::ffi::CStr::from_ptr(libc::dlerror()).to_string_lossy().into_owned();
            return Err(format!("persistent hook {}: {why}", path.display()));
        }
        let f = libc::dlsym(lib, c"afl_persistent_hook".as_ptr());
        if f.is_null() {
            return Err(format!("persistent hook {}: no function afl_persistent_hook", path.display()));
        }
        Ok(std::mem::transmute::<*mut libc::c_void, HookFn>(f))
    }
}
