//! Start-up: from `rewire run`'s options to the program's first instruction in the cache.
//! Load the program and its interpreter, create the first thread's context, install the
//! engine and the fault handlers, build the initial stack on the process stack, and enter
//! the dispatcher with a start record for the interpreter's entry.

use crate::arch::context::reg;
use crate::arch::context_block::ContextBlock;
use crate::arch::{self, heap};
use crate::cache::CodeCache;
use crate::engine::finish::{flush_tool_output, start_flushing};
use crate::engine::fork_server::options::{run_time, start_address};
use crate::engine::fork_server::persistent::{Persistent, PersistentOptions};
use crate::engine::options::Options;
use crate::engine::state::Engine;
use crate::error::RunError;
use crate::os::brk::Brk;
use crate::os::modules::Modules;
use crate::os::regions::ExecRegions;
use crate::os::report::{open_report_fd, route_death_reports};
use crate::os::{credentials, loader, process_end, program_env, signals, stack, symbols};
use crate::tool::{Program, Tool};
use crate::translate::{ExitKind, ExitRecord};
use std::convert::Infallible;
use std::ffi::CString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// Bytes kept between the runtime's own stack frames and the program's initial stack.
const STACK_GAP: u64 = 256 << 10;

/// Runs the program under the engine with your own `tool` (see `examples/call_edges.rs`).
/// Programs it `execve`s run natively unless `opts.engine.tool` names a built-in tool to
/// follow them with.
pub fn run_tool(tool: Box<dyn Tool>, mut opts: Options) -> Result<Infallible, RunError> {
    heap::prepare();
    process_end::on_end(flush_tool_output);
    let modules = Modules::excluding_current();
    opts.engine.output.prepare()?;
    let loaded = loader::load(&opts.command, opts.argv0.as_deref())?;
    if let Some(gain) = credentials::gained_at_exec(&loaded.program.path).filter(|_| !opts.engine.unprivileged) {
        return Err(RunError::Privileged(loaded.program.path.clone(), gain.to_string()));
    }
    open_report_fd();
    route_death_reports(opts.engine.verbose, opts.engine.output.log.as_deref());
    let rewire_path = std::env::current_exe().map_err(|e| RunError::Sys("readlink(/proc/self/exe)", e))?;
    // A shell sets `_` to the command it ran: rewire, where natively it is the program; the
    // variables for the program's loader have their own names back (`os::program_env`).
    let envp: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| {
            let names_rewire = k == "_" && std::fs::canonicalize(&v).is_ok_and(|p| p == rewire_path);
            let v = if names_rewire { loaded.program.path.clone().into_os_string() } else { v };
            let mut b = k.into_vec();
            b.push(b'=');
            b.extend(v.into_vec());
            CString::new(program_env::unshielded(&b)).expect("environment without NUL bytes")
        })
        .collect();
    // SAFETY: getauxval reads this process's auxiliary vector.
    let (hwcap2, vdso) = unsafe { (libc::getauxval(libc::AT_HWCAP2), libc::getauxval(libc::AT_SYSINFO_EHDR)) };
    let mut block = ContextBlock::new(arch::fs_base(), hwcap2 & 2 != 0)?;
    block.populate_lookup_table();
    signals::attach(block.ctx());

    let mut exec = ExecRegions::default();
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
    let brk = Brk::new(loaded.brk);
    let cache = CodeCache::default();
    let exe = CString::new(loaded.program.path.as_os_str().as_bytes()).expect("path without NUL bytes");
    let rewire_exe = CString::new(rewire_path.into_os_string().into_vec()).expect("path without NUL bytes");
    signals::inherit_dispositions();
    let mut engine = Engine::new(cache, exec, opts.engine, brk, exe, rewire_exe);
    engine.contexts.push(block.address());
    for image in std::iter::once(&loaded.program).chain(&loaded.interp) {
        engine.maps.mapped(image.span.clone());
    }
    engine.tool = tool;
    engine.modules = modules;
    let program = &loaded.program;
    engine.tool.on_program(&Program { path: &program.path, entry: program.entry, bias: program.bias });
    if let Some(fork_server) = engine.opts.fork_server.clone() {
        engine.fork_server_at = start_address(&fork_server, program.entry, program.bias);
        if let Some(p) = &fork_server.persistent {
            let loop_ = persistent_loop(p, program)?;
            engine.watched.extend(loop_.watched());
            engine.persistent = Some(loop_);
        }
        engine.fork_server = Some(fork_server);
    }
    // SAFETY: gettid has no effects.
    block.ctx().tid = unsafe { libc::gettid() } as u64;
    engine.tool.on_thread_start(block.ctx().tid as u32);
    let flush_interval = engine.opts.flush_interval;
    engine.install();
    if let Some(every) = flush_interval {
        start_flushing(every);
    }
    unregister_rseq();
    block.use_signal_stack();
    signals::install_handlers();
    set_process_name(&loaded.execfn);

    let top = (arch::stack_pointer() - STACK_GAP) & !0xfff;
    // SAFETY: below our own frames by STACK_GAP, in the main thread's stack, which grows
    // down into it; nothing else uses that memory.
    let st = unsafe { stack::build(top, &loaded, &envp) };
    set_mm_layout(st, loaded.program.layout);
    let ctx = block.ctx();
    ctx.regs.gpr[reg::RSP] = st.sp;
    let entry = loaded.interp.as_ref().map_or(loaded.program.entry, |i| i.entry);
    ctx.exit_record = ExitRecord::new(ExitKind::Start { entry }, 0).address();
    // The context lives as long as the thread: ContextBlock never unmaps it.
    let gs = block.address();
    // SAFETY: the context is complete, its runtime stack unused, the engine installed.
    unsafe { arch::start(gs) }
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

/// Points /proc/self/cmdline and /proc/self/environ at the program's strings, and the code,
/// data and stack start the kernel reports (`stat`, `VmExe`) at the program's. The whole
/// map of the process's memory layout is set at once (`PR_SET_MM_MAP`, which needs no
/// capability, unlike the single fields), the brk as the kernel has it now: the runtime's
/// libc allocates from it.
fn set_mm_layout(st: stack::InitialStack, program: loader::CodeAndData) {
    /// The kernel's `struct prctl_mm_map`.
    #[repr(C)]
    struct MmMap {
        start_code: u64,
        end_code: u64,
        start_data: u64,
        end_data: u64,
        start_brk: u64,
        brk: u64,
        start_stack: u64,
        arg_start: u64,
        arg_end: u64,
        env_start: u64,
        env_end: u64,
        auxv: u64,
        auxv_size: u32,
        exe_fd: u32,
    }
    const PR_SET_MM_MAP: libc::c_ulong = 14;
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else { return };
    // Fields after the parenthesised name, numbered as in proc(5) from 3.
    let fields: Vec<u64> =
        stat.rsplit_once(") ").map_or(vec![], |(_, rest)| rest.split(' ').map(|f| f.trim().parse().unwrap_or(0)).collect());
    let field = |n: usize| fields.get(n - 3).copied().unwrap_or(0);
    // SAFETY: brk(0) only reports the current break.
    let brk = unsafe { arch::syscall6(libc::SYS_brk as u64, [0; 6]) };
    let map = MmMap {
        start_code: program.start_code,
        end_code: program.end_code,
        start_data: program.start_data,
        end_data: program.end_data,
        start_brk: field(47),
        brk,
        start_stack: st.sp,
        arg_start: st.args.0,
        arg_end: st.args.1,
        env_start: st.env.0,
        env_end: st.env.1,
        auxv: 0,
        auxv_size: 0,
        exe_fd: u32::MAX,
    };
    // SAFETY: only changes what /proc reports for this process; the kernel validates the
    // map and copies it from a live local.
    unsafe { libc::prctl(libc::PR_SET_MM, PR_SET_MM_MAP, &raw const map, std::mem::size_of::<MmMap>(), 0) };
}

/// The persistent loop `opts` asks for in `program`: its function must be one the program's
/// symbols name (where it has any), in its code.
fn persistent_loop(opts: &PersistentOptions, program: &loader::Image) -> Result<Persistent, RunError> {
    let entry = run_time(opts.addr, program.bias);
    let bad = |why: String| RunError::ToolSettings(format!("persistent address {:#x}: {why}", opts.addr));
    if !program.code.iter().any(|r| r.contains(&entry)) {
        return Err(bad(format!("not in the code of {}", program.path.display())));
    }
    if let Some(starts) = symbols::function_starts(&program.path) {
        if !starts.contains(&(entry - program.bias)) {
            return Err(bad(format!("not the start of a function of {}", program.path.display())));
        }
    }
    Persistent::new(opts, entry, opts.ret.map(|r| run_time(r, program.bias))).map_err(RunError::ToolSettings)
}
