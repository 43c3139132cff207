//! The tool API: what a tool sees of the program and how it instruments it.
//!
//! A tool is a [`Tool`]: the engine calls it when it builds a block (with the block's
//! decoded instructions and an [`Instrument`] handle to insert per-thread counters), on
//! system calls, module loads, thread starts and exits, in a forked child, and at the end of
//! the process (with the counters' totals and an [`Output`] for reports and files). Every
//! call happens under the engine's lock, one at a time.

use crate::arch::context::{ThreadCtx, COUNTER_BYTES};
use crate::error::RunError;
use crate::os::process_end::output_lost;
use crate::os::report::report;
use crate::translate::{CounterAdd, EdgeHit};

pub use crate::os::appmem::read as read_app;
pub use crate::os::appmem::read_cstr as read_app_string;
pub use crate::os::low_memory;
pub use crate::os::modules::Segment;
pub use crate::os::report::report as warn;
pub use crate::os::symbols::import_slots;
use iced_x86::Instruction;
use std::io::Write;
use std::path::{Path, PathBuf};

/// Options of the built-in tools.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToolOptions {
    /// drcov format version to write (3, or 2 for older readers).
    pub drcov_version: u8,
    /// `cov`: also record how many times each block ran.
    pub hitcount: bool,
    /// `inscount`: break the count down by module.
    pub per_module: bool,
    /// `bbcount`, `opcodes`: how many entries to list.
    pub top: usize,
}

impl Default for ToolOptions {
    fn default() -> ToolOptions {
        ToolOptions { drcov_version: 3, hitcount: false, per_module: false, top: 20 }
    }
}

/// A trace: blocks that ran one after the other, stitched into one fragment. The
/// instrumentation tools inserted into the blocks is part of it; tools do not see its blocks
/// again through `on_block`.
#[derive(Debug)]
pub struct TraceView<'a> {
    /// Its head (the first block's tag).
    pub head: u64,
    /// Tags of its blocks, in order (so far, while it is being recorded).
    pub blocks: &'a [u64],
}

/// A per-thread 8-byte counter in every thread's counter area; totals are summed over the
/// threads at exit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Counter(u32);

/// A block as it is built.
#[derive(Debug)]
pub struct BlockView<'a> {
    /// Application address of its first instruction.
    pub tag: u64,
    /// Its application instructions (the last one ends the block).
    pub insns: &'a [Instruction],
    /// The module segment holding it, if any.
    pub segment: Option<&'a Segment>,
}

impl BlockView<'_> {
    /// Application bytes the block covers.
    pub fn size(&self) -> u64 {
        self.insns.last().map_or(0, |i| i.next_ip() - self.tag)
    }
}

/// A value passed to a clean call, computed from the application state when it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arg {
    /// The application address of the instruction the call is placed before.
    AppPc,
    /// A constant.
    Const(u64),
    /// A general register's application value (sub-registers are zero-extended).
    Reg(iced_x86::Register),
    /// The effective address of memory operand `operand` of the instruction the call is
    /// placed before (segment bases included).
    MemAddress(u32),
}

/// A function a clean call runs, with its arguments' values.
pub type CleanCallFn = std::sync::Arc<dyn Fn(&[u64]) + Send + Sync>;

/// A clean call placed in a block.
#[derive(Clone)]
pub struct CallSite {
    /// The function.
    pub func: CleanCallFn,
    /// Its arguments.
    pub args: Vec<Arg>,
    /// The instruction it runs before.
    pub insn: Instruction,
}

impl std::fmt::Debug for CallSite {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CallSite").field("args", &self.args).field("at", &format_args!("{:#x}", self.insn.ip())).finish()
    }
}

/// Instrumentation requests for the block being built.
#[derive(Debug)]
pub struct Instrument<'a> {
    pub(crate) adds: &'a mut Vec<CounterAdd>,
    pub(crate) edge: &'a mut Option<EdgeHit>,
    pub(crate) calls: &'a mut Vec<(usize, CallSite)>,
    pub(crate) insns: &'a [Instruction],
    pub(crate) next_counter: &'a mut u32,
}

impl Instrument<'_> {
    /// A fresh counter (zero in every thread); `None` once the counter area is full.
    pub fn new_counter(&mut self) -> Option<Counter> {
        let offset = *self.next_counter;
        if offset as usize + 8 > COUNTER_BYTES {
            return None;
        }
        *self.next_counter += 8;
        Some(Counter(offset))
    }

    /// Adds `amount` to `counter` once every time the block runs (placed where the flags
    /// are dead if there is such a place, so it usually costs one instruction).
    pub fn count_block(&mut self, counter: Counter, amount: u32) {
        self.adds.push(CounterAdd { before: None, offset: counter.0, amount });
    }

    /// Adds `amount` to `counter` every time instruction `index` of the block is about to run.
    pub fn count_before(&mut self, index: usize, counter: Counter, amount: u32) {
        self.adds.push(CounterAdd { before: Some(index), offset: counter.0, amount });
    }

    /// AFL-style edge coverage every time the block runs: `map[cur ^ prev]` is incremented
    /// (a counter that wraps from 255 goes to 1, AFL's NeverZero) and `prev` becomes
    /// `cur >> 1`, inline (the flags are saved only where they are live). `prev` is a counter
    /// of the tool's (each thread's own); `map` must lie below 2 GiB and hold more than
    /// `cur | (cur >> 1)` bytes.
    pub fn edge_hit(&mut self, prev: Counter, cur: u32, map: u32) {
        *self.edge = Some(EdgeHit { cur, prev: prev.0, map });
    }

    /// Calls `func` with the values of `args` every time instruction `index` is about to run.
    /// The whole application state is saved around it (a context switch: use counters for
    /// anything hot).
    pub fn clean_call(&mut self, index: usize, func: CleanCallFn, args: Vec<Arg>) {
        let insn = self.insns[index];
        self.calls.push((index, CallSite { func, args, insn }));
    }
}

/// The program a run starts with.
#[derive(Debug, Clone, Copy)]
pub struct Program<'a> {
    /// Its file, as the loader found it.
    pub path: &'a std::path::Path,
    /// Its entry point (where the dynamic loader hands over).
    pub entry: u64,
    /// Its load bias (0 unless it is position-independent).
    pub bias: u64,
}

/// The values of a clean call's arguments, from the saved application state.
pub(crate) fn evaluate(site: &CallSite, ctx: &ThreadCtx) -> Vec<u64> {
    use iced_x86::Register as R;
    let reg = |r: R| -> u64 {
        if r == R::None {
            return 0;
        }
        if r == R::RIP {
            return site.insn.next_ip();
        }
        let n = (r.full_register() as u32).wrapping_sub(R::RAX as u32) as usize;
        let v = if n < 16 { ctx.regs.gpr[n] } else { 0 };
        match r.size() {
            1 if matches!(r, R::AH | R::CH | R::DH | R::BH) => (v >> 8) & 0xff,
            1 => v & 0xff,
            2 => v & 0xffff,
            4 => v & 0xffff_ffff,
            _ => v,
        }
    };
    site.args
        .iter()
        .map(|a| match *a {
            Arg::AppPc => site.insn.ip(),
            Arg::Const(c) => c,
            Arg::Reg(r) => reg(r),
            Arg::MemAddress(op) => site
                .insn
                .virtual_address(op, 0, |r, _, _| match r {
                    R::FS => Some(ctx.app_fs),
                    R::GS => Some(ctx.app_gs),
                    R::ES | R::CS | R::SS | R::DS => Some(0),
                    other => Some(reg(other)),
                })
                .unwrap_or(0),
        })
        .collect()
}

/// A system call of the program, before it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Syscall {
    /// Thread id.
    pub tid: u32,
    /// System call number.
    pub nr: u64,
    /// Arguments.
    pub args: [u64; 6],
}

/// Where tools write: reports (lines prefixed `rewire:` on stderr, or the `--log` file) and
/// files (in the `-o` directory).
#[derive(Debug, Clone, Default)]
pub struct Output {
    /// Directory for files (`-o`).
    pub dir: Option<PathBuf>,
    /// File for reports (`--log`); stderr when `None`.
    pub log: Option<PathBuf>,
}

impl Output {
    /// Writes report lines.
    pub fn report(&self, lines: &[String]) {
        match &self.log {
            Some(path) => {
                let text: String = lines.iter().map(|l| format!("{l}\n")).collect();
                let written =
                    std::fs::OpenOptions::new().create(true).append(true).open(path).and_then(|mut f| f.write_all(text.as_bytes()));
                if let Err(e) = written {
                    report(&format!("cannot write {}: {e}", path.display()));
                    output_lost();
                }
            }
            None => lines.iter().for_each(|l| report(l)),
        }
    }

    /// The path for a file named `name` in the output directory (default: current directory).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| PathBuf::from(".")).join(name)
    }

    /// Makes sure the output can be written before the program starts: creates the `-o`
    /// directory (and its parents) if missing, and checks that a file can be created in it
    /// and that the `--log` file can be appended to. Both paths become absolute, so that a
    /// program that changes directory still writes where the user asked.
    pub fn prepare(&mut self) -> Result<(), RunError> {
        let unusable = |path: &Path, e: std::io::Error| RunError::Output(path.to_path_buf(), e);
        for path in [&mut self.dir, &mut self.log].into_iter().flatten() {
            *path = std::path::absolute(&*path).map_err(|e| unusable(path, e))?;
        }
        if let Some(dir) = &self.dir {
            if dir.exists() && !dir.is_dir() {
                return Err(unusable(dir, std::io::Error::from_raw_os_error(libc::ENOTDIR)));
            }
            std::fs::create_dir_all(dir).map_err(|e| unusable(dir, e))?;
            let probe = dir.join(format!(".rewire-probe.{}", std::process::id()));
            std::fs::File::create(&probe).map_err(|e| unusable(dir, e))?;
            let _ = std::fs::remove_file(&probe);
        }
        if let Some(log) = &self.log {
            std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(|e| unusable(log, e))?;
        }
        Ok(())
    }

    /// Reports that output was lost (`line` says what and where); the process then exits
    /// with a failure status where the program's own would be success.
    pub fn lost(&self, line: String) {
        report(&line);
        output_lost();
    }
}

/// Writes `data` to `path` atomically: into a hidden file beside it, renamed over it once
/// complete, so that no reader (and no process killed in the middle) sees a partial file.
pub fn write_atomically(path: &Path, data: &[u8]) -> std::io::Result<()> {
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let temp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = std::fs::write(&temp, data).and_then(|()| std::fs::rename(&temp, path));
    if written.is_err() {
        let _ = std::fs::remove_file(&temp);
    }
    written
}

/// What a tool sees at the end of the process.
#[derive(Debug)]
pub struct Finish<'a> {
    pub(crate) contexts: &'a [u64],
    pub(crate) exited: &'a [u64],
    pub(crate) frags: &'a crate::cache::fragments::Fragments,
    /// What counters gained through the merged counts of traces, worked out at the first
    /// [`Finish::total`] (a tool that reads no counter, like `afl` in each fork-server
    /// child, does not pay for a walk over every fragment).
    pub(crate) merged: std::cell::OnceCell<rustc_hash::FxHashMap<u32, u64>>,
    /// Every module segment seen.
    pub segments: &'a [Segment],
    /// Where to write.
    pub output: &'a Output,
    /// The program's path.
    pub program: &'a str,
}

impl Finish<'_> {
    /// The total of `counter` over all threads.
    pub fn total(&self, counter: Counter) -> u64 {
        let merged = self.merged.get_or_init(|| self.frags.merged_totals(|offset| raw_total(self.contexts, self.exited, offset)));
        raw_total(self.contexts, self.exited, counter.0).wrapping_add(merged.get(&counter.0).copied().unwrap_or(0))
    }
}

/// The total of the counter at byte `offset` over the live threads' counter areas and the
/// threads that exited (`exited`, by counter index).
pub(crate) fn raw_total(contexts: &[u64], exited: &[u64], offset: u32) -> u64 {
    let exited = exited.get(offset as usize / 8).copied().unwrap_or(0);
    contexts
        .iter()
        .map(|&c| {
            // SAFETY: registered contexts are live ThreadCtx headers (a thread leaves the list
            // before its context is unmapped).
            unsafe { &*(c as *const ThreadCtx) }.counter(offset)
        })
        .fold(exited, u64::wrapping_add)
}

/// Where a persistent loop is (see [`Tool::on_persistent_loop`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LoopEvent {
    /// The first iteration starts.
    Start,
    /// The last iteration has returned; the program runs on to its end.
    End,
}

/// A tool: every event has a default that does nothing. Tools are `Debug` so that the
/// engine state can be printed.
pub trait Tool: Send + std::fmt::Debug {
    /// Whether the tool wants module information (block segments, module events); the
    /// engine skips looking modules up for tools that do not.
    fn wants_modules(&self) -> bool {
        true
    }
    /// A block is being built: look at it, ask for counters.
    fn on_block(&mut self, _block: &BlockView<'_>, _instrument: &mut Instrument<'_>) {}
    /// A trace is being recorded and the thread goes to `next`: return true to end the
    /// trace before it.
    fn end_trace_before(&mut self, _trace: &TraceView<'_>, _next: u64) -> bool {
        false
    }
    /// A trace was built (with its component blocks).
    fn on_trace(&mut self, _trace: &TraceView<'_>) {}
    /// A system call is about to run. The tool may change its arguments, or skip it by
    /// returning the result the program gets instead.
    fn on_syscall(&mut self, _call: &mut Syscall) -> Option<u64> {
        None
    }
    /// It ran with `result` (`-errno` on failure), which the tool may change.
    fn on_syscall_result(&mut self, _call: &Syscall, _result: &mut u64) {}
    /// A module segment appeared (first seen when code in the program was about to run).
    fn on_module_load(&mut self, _segment: &Segment) {}
    /// The program is about to run (before its interpreter's first instruction).
    fn on_program(&mut self, _program: &Program<'_>) {}
    /// A module segment went away (unmapped).
    fn on_module_unload(&mut self, _segment: &Segment) {}
    /// A thread started (`tid`).
    fn on_thread_start(&mut self, _tid: u32) {}
    /// A thread ended.
    fn on_thread_exit(&mut self, _tid: u32) {}
    /// In the child of a fork, before it runs on.
    fn on_fork_child(&mut self) {}
    /// A persistent loop (`-t afl`'s persistent mode) starts its first iteration, or its
    /// last iteration has returned: what runs before the first and after the last is not a
    /// test case's.
    fn on_persistent_loop(&mut self, _event: LoopEvent) {}
    /// The process ends (or execs another program): write results.
    fn on_exit(&mut self, _finish: &Finish<'_>) {}
    /// The program runs on, and `--flush-interval` asks for the output so far: rewrite the
    /// tool's files (atomically, see [`write_atomically`]), report nothing.
    fn on_checkpoint(&mut self, _finish: &Finish<'_>) {}
}

/// The tool that does nothing (what `rewire run` uses without `-t`).
#[derive(Debug, Default)]
pub struct NullTool;

impl Tool for NullTool {
    fn wants_modules(&self) -> bool {
        false
    }
}
