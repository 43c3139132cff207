//! rewire's dynamic binary instrumentation engine, in the style of DynamoRIO: it loads a
//! program into this process and runs it entirely from a code cache of translated basic
//! blocks, from the first instruction of its ELF interpreter to its last `exit_group`.
//!
//! The flow: [`run`] loads the program and its interpreter ([`loader`]), builds the initial
//! stack ([`stack`]), creates the thread's runtime context ([`context`]) and enters the
//! dispatcher ([`dispatch`]), which builds blocks ([`block`]) into the cache ([`cache`]),
//! links them ([`fragments`]) and follows every exit: unlinked direct exits, indirect-branch
//! lookup misses and system calls ([`syscalls`]).

#![warn(missing_docs)]

mod appmem;
pub mod arch;
pub mod block;
pub mod cache;
pub mod code_writes;
pub mod context;
pub mod dispatch;
mod emitter;
mod error;
mod exec;
pub mod fragments;
mod heap;
pub mod loader;
pub mod modules;
pub mod regions;
pub mod signals;
pub mod stack;
pub mod stats;
pub mod syscalls;
mod threads;
pub mod tool;
pub mod tools;
pub mod traces;

pub use dispatch::EngineOptions;
pub use error::RunError;

use block::{ExitKind, ExitRecord};
use context::{reg, ContextBlock};
use std::convert::Infallible;
use std::ffi::{CString, OsString};
use std::os::unix::ffi::{OsStrExt, OsStringExt};
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};

/// A program to run under the engine.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The program and its arguments.
    pub command: Vec<OsString>,
    /// `argv[0]` for the program, when it differs from the command's first word.
    pub argv0: Option<OsString>,
    /// What the engine does.
    pub engine: EngineOptions,
}

/// Bytes kept between the runtime's own stack frames and the program's initial stack.
const STACK_GAP: u64 = 256 << 10;

/// Runs the program under the engine with the built-in tool the options name. Returns only
/// with an error from before the program's first instruction; afterwards the process ends
/// when and how the program ends.
pub fn run(opts: Options) -> Result<Infallible, RunError> {
    let tool = tools::builtin(opts.engine.tool.as_deref().unwrap_or("null"), &opts.engine.tool_options, &opts.engine.output)?;
    run_tool(tool, opts)
}

/// Runs the program under the engine with your own `tool` (see `examples/call_edges.rs`).
/// Programs it `execve`s run natively unless `opts.engine.tool` names a built-in tool to
/// follow them with.
pub fn run_tool(tool: Box<dyn tool::Tool>, opts: Options) -> Result<Infallible, RunError> {
    heap::prepare();
    let modules = modules::Modules::excluding_current();
    if let Some(dir) = &opts.engine.output.dir {
        if !dir.is_dir() {
            return Err(RunError::Io(dir.clone(), std::io::Error::from(std::io::ErrorKind::NotFound)));
        }
    }
    let loaded = loader::load(&opts.command, opts.argv0.as_deref())?;
    open_report_fd();
    let envp: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let mut b = k.into_vec();
            b.push(b'=');
            b.extend(v.into_vec());
            CString::new(b).expect("environment without NUL bytes")
        })
        .collect();
    // SAFETY: getauxval reads this process's auxiliary vector.
    let (hwcap2, vdso) = unsafe { (libc::getauxval(libc::AT_HWCAP2), libc::getauxval(libc::AT_SYSINFO_EHDR)) };
    let mut block = ContextBlock::new(arch::fs_base(), hwcap2 & 2 != 0)?;
    block.populate_lookup_table();

    let mut exec = regions::ExecRegions::default();
    let app_code: Vec<_> = loaded.program.code.iter().chain(loaded.interp.iter().flat_map(|i| i.code.iter())).cloned().collect();
    for r in &app_code {
        exec.add(r.clone());
    }
    if let Some(m) = rewire_mem::AddressSpace::read(None).ok().and_then(|s| s.find(vdso).cloned()) {
        exec.add(m.range);
    }
    if opts.engine.strip_exec {
        for r in &app_code {
            // SAFETY: the program's own code pages, not yet run; the engine reads them only.
            unsafe { libc::mprotect(r.start as *mut _, (r.end - r.start) as usize, libc::PROT_READ) };
        }
    }
    let brk = syscalls::Brk::new(loaded.brk);
    let cache = cache::CodeCache::default();
    let exe = CString::new(loaded.program.path.as_os_str().as_bytes()).expect("path without NUL bytes");
    let rewire_exe = std::env::current_exe().map_err(|e| RunError::Sys("readlink(/proc/self/exe)", e))?;
    let rewire_exe = CString::new(rewire_exe.into_os_string().into_vec()).expect("path without NUL bytes");
    signals::inherit_dispositions();
    let mut engine = dispatch::Engine::new(cache, exec, opts.engine, brk, exe, rewire_exe);
    engine.contexts.push(block.address());
    engine.tool = tool;
    engine.modules = modules;
    // SAFETY: gettid has no effects.
    block.ctx().tid = unsafe { libc::gettid() } as u64;
    engine.tool.on_thread_start(block.ctx().tid as u32);
    engine.install();
    unregister_rseq();
    signals::install_fault_handlers();
    set_process_name(&loaded.execfn);

    let top = (arch::stack_pointer() - STACK_GAP) & !0xfff;
    // SAFETY: below our own frames by STACK_GAP, in the main thread's stack, which grows
    // down into it; nothing else uses that memory.
    let st = unsafe { stack::build(top, &loaded, &envp) };
    set_mm_strings(st);
    let ctx = block.ctx();
    ctx.regs.gpr[reg::RSP] = st.sp;
    let entry = loaded.interp.as_ref().map_or(loaded.program.entry, |i| i.entry);
    ctx.exit_record = ExitRecord::new(ExitKind::Start { entry }, 0).address();
    // The context lives as long as the thread: ContextBlock never unmaps it.
    let gs = block.address();
    // SAFETY: the context is complete, its runtime stack unused, the engine installed.
    unsafe { arch::start(gs) }
}

/// The runtime's own copy of stderr, kept open whatever the program does with its fds.
static REPORT_FD: AtomicI32 = AtomicI32::new(2);

/// Gives the runtime a private duplicate of stderr, numbered high (programs close their
/// stderr at exit, and reports come after that).
fn open_report_fd() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills the struct; fcntl duplicates fd 2 (close-on-exec).
    let fd = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        let want = (limit.rlim_cur.min(1024) as i32 - 24).max(3);
        libc::fcntl(2, libc::F_DUPFD_CLOEXEC, want)
    };
    if fd >= 0 {
        REPORT_FD.store(fd, Ordering::Relaxed);
    }
}

/// The descriptor reports go to (the program must not see or close it).
pub(crate) fn report_fd() -> i32 {
    REPORT_FD.load(Ordering::Relaxed)
}

/// Moves the report descriptor out of the way of a program about to use its number.
pub(crate) fn move_report_fd() {
    let old = report_fd();
    // SAFETY: duplicates our own descriptor to a free number above it, then closes the old one.
    let new = unsafe { libc::fcntl(old, libc::F_DUPFD_CLOEXEC, old + 1) };
    if new >= 0 {
        REPORT_FD.store(new, Ordering::Relaxed);
        // SAFETY: our descriptor, no longer used.
        unsafe { libc::close(old) };
    }
}

/// Writes `rewire: MSG` to the runtime's stderr.
pub(crate) fn report(msg: &str) {
    let line = format!("rewire: {msg}\n");
    // SAFETY: write(2) of a live buffer; a plain system call, safe in signal handlers.
    unsafe { libc::write(report_fd(), line.as_ptr().cast(), line.len()) };
}

pub(crate) static FINISHED: AtomicBool = AtomicBool::new(false);

/// Flushes what the engine reports at the end of the process (once).
pub(crate) fn finish() {
    if FINISHED.swap(true, Ordering::SeqCst) {
        return;
    }
    let Some(mut eng) = dispatch::try_engine() else { return };
    let dispatch::Engine { tool, contexts, exited_counters, modules, opts, exe, frags, .. } = &mut *eng;
    let merged = frags.merged_totals(|offset| tool::raw_total(contexts, exited_counters, offset));
    tool.on_exit(&tool::Finish {
        contexts,
        exited: exited_counters,
        merged,
        segments: modules.segments(),
        output: &opts.output,
        program: &exe.to_string_lossy(),
    });
    if eng.opts.stats {
        eng.opts.output.report(&stats::report(&eng, stats::lookups(&eng)));
    }
}

/// Gives the program's thread the kernel's restartable-sequence registration: the runtime's
/// libc registered this thread already, and the kernel allows one registration per thread.
pub(crate) fn unregister_rseq() {
    extern "C" {
        static __rseq_offset: isize;
        static __rseq_size: u32;
    }
    const RSEQ_FLAG_UNREGISTER: u64 = 1;
    const RSEQ_SIG: u64 = 0x5305_3053;
    // SAFETY: glibc (2.35+) exports both; plain reads of constants set at start-up.
    let (offset, size) = unsafe { (__rseq_offset, __rseq_size) };
    if size == 0 {
        return;
    }
    let area = (arch::fs_base() as i64 + offset as i64) as u64;
    for len in [32, size as u64] {
        // SAFETY: unregisters this thread's area, which nothing of the runtime relies on.
        if unsafe { arch::syscall6(libc::SYS_rseq as u64, [area, len, RSEQ_FLAG_UNREGISTER, RSEQ_SIG, 0, 0]) } == 0 {
            return;
        }
    }
}

fn set_process_name(execfn: &CString) {
    let base = execfn.as_bytes().rsplit(|&b| b == b'/').next().unwrap_or_default();
    let mut name = [0u8; 16];
    let n = base.len().min(15);
    name[..n].copy_from_slice(&base[..n]);
    // SAFETY: PR_SET_NAME reads 16 bytes from a live buffer.
    unsafe { libc::prctl(libc::PR_SET_NAME, name.as_ptr()) };
}

/// Points /proc/self/cmdline and /proc/self/environ at the program's strings (needs
/// CAP_SYS_RESOURCE; without it they keep showing rewire's).
fn set_mm_strings(st: stack::InitialStack) {
    for (what, value) in [
        (libc::PR_SET_MM_ARG_START, st.args.0),
        (libc::PR_SET_MM_ARG_END, st.args.1),
        (libc::PR_SET_MM_ENV_START, st.env.0),
        (libc::PR_SET_MM_ENV_END, st.env.1),
    ] {
        // SAFETY: only changes what /proc reports for this process.
        unsafe { libc::prctl(libc::PR_SET_MM, what, value, 0, 0) };
    }
}
