//! The end of the process for the engine: the tool's output and the `--stats` report, run
//! once by [`crate::os::process_end`] however the process ends; and, with `--flush-interval`,
//! the tool's files rewritten every N seconds while the program runs (what a `SIGKILL`, which
//! nothing can catch, loses is bounded by that).

use crate::engine::state::{engine, held_here, installed_engine, Engine};
use crate::engine::stats_report;
use crate::os::process_end::output_lost;
use crate::os::report::report;
use crate::os::sigmask::sigprocmask;
use crate::tool;
use std::time::Duration;

/// Writes the tool's output and the `--stats` report (registered with
/// [`crate::os::process_end::on_end`], which runs it once). Waits for the engine's lock
/// unless this very thread holds it (it stopped in the middle of a change): the output is
/// then lost, and said to be.
pub(crate) fn flush_tool_output() {
    if held_here() {
        report("the tool's output was not written: rewire stopped in the middle of a change to its state");
        output_lost();
        return;
    }
    let Some(mut eng) = installed_engine() else { return };
    tool_call(&mut eng, Tool::Exit);
    if eng.opts.stats {
        eng.opts.output.report(&stats_report::report(&eng, stats_report::lookups(&eng)));
    }
}

/// Which tool call [`tool_call`] makes.
enum Tool {
    Exit,
    Checkpoint,
}

fn tool_call(eng: &mut Engine, call: Tool) {
    let Engine { tool, contexts, exited_counters, modules, opts, exe, frags, .. } = eng;
    let finish = tool::Finish {
        contexts,
        exited: exited_counters,
        frags,
        merged: std::cell::OnceCell::new(),
        segments: modules.segments(),
        output: &opts.output,
        program: &exe.to_string_lossy(),
    };
    match call {
        Tool::Exit => tool.on_exit(&finish),
        Tool::Checkpoint => tool.on_checkpoint(&finish),
    }
}

/// Starts the thread that gives the tool a checkpoint every `interval` (in this process;
/// a forked child starts its own). It blocks every signal, so that signals for the program
/// go to the program's threads.
pub(crate) fn start_flushing(interval: Duration) {
    let all = sigprocmask(libc::SIG_SETMASK, Some(!0));
    let _ = std::thread::Builder::new().name("rewire-flush".into()).stack_size(256 << 10).spawn(move || loop {
        std::thread::sleep(interval);
        tool_call(&mut engine(), Tool::Checkpoint);
    });
    sigprocmask(libc::SIG_SETMASK, Some(all));
}
