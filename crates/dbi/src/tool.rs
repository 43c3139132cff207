//! The tool API: what a tool sees of the program and how it instruments it.
//!
//! A tool is a [`Tool`]: the engine calls it when it builds a block (with the block's
//! decoded instructions and an [`Instrument`] handle to insert per-thread counters), on
//! system calls, module loads, thread starts and exits, in a forked child, and at the end of
//! the process (with the counters' totals and an [`Output`] for reports and files). Every
//! call happens under the engine's lock, one at a time.

use crate::block::CounterAdd;
use crate::context::{ThreadCtx, COUNTER_BYTES};
use crate::modules::Segment;
use iced_x86::Instruction;
use std::io::Write;
use std::path::PathBuf;

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

/// Instrumentation requests for the block being built.
#[derive(Debug)]
pub struct Instrument<'a> {
    pub(crate) adds: &'a mut Vec<CounterAdd>,
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
                    crate::report(&format!("cannot write {}: {e}", path.display()));
                }
            }
            None => lines.iter().for_each(|l| crate::report(l)),
        }
    }

    /// The path for a file named `name` in the output directory (default: current directory).
    pub fn file(&self, name: &str) -> PathBuf {
        self.dir.clone().unwrap_or_else(|| PathBuf::from(".")).join(name)
    }
}

/// What a tool sees at the end of the process.
#[derive(Debug)]
pub struct Finish<'a> {
    pub(crate) contexts: &'a [u64],
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
        self.contexts
            .iter()
            .map(|&c| {
                // SAFETY: registered contexts are live ThreadCtx headers (never unmapped).
                unsafe { &*(c as *const ThreadCtx) }.counter(counter.0)
            })
            .sum()
    }
}

/// A tool: every event has a default that does nothing. Tools are `Debug` so that the
/// engine state can be printed.
pub trait Tool: Send + std::fmt::Debug {
    /// A block is being built: look at it, ask for counters.
    fn on_block(&mut self, _block: &BlockView<'_>, _instrument: &mut Instrument<'_>) {}
    /// A system call is about to run.
    fn on_syscall(&mut self, _call: &Syscall) {}
    /// It ran, with `result` (`-errno` on failure).
    fn on_syscall_result(&mut self, _call: &Syscall, _result: u64) {}
    /// A thread started (`tid`).
    fn on_thread_start(&mut self, _tid: u32) {}
    /// A thread ended.
    fn on_thread_exit(&mut self, _tid: u32) {}
    /// In the child of a fork, before it runs on.
    fn on_fork_child(&mut self) {}
    /// The process ends (or execs another program): write results.
    fn on_exit(&mut self, _finish: &Finish<'_>) {}
}

/// The tool that does nothing (what `rewire run` uses without `-t`).
#[derive(Debug, Default)]
pub struct NullTool;

impl Tool for NullTool {}
