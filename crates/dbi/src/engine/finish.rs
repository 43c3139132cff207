//! The end of the process for the engine: the tool's output and the `--stats` report, run
//! once by [`crate::os::process_end`] however the process ends.

use crate::engine::state::{try_engine, Engine};
use crate::engine::stats_report;
use crate::tool;

/// Writes the tool's output and the `--stats` report (registered with
/// [`crate::os::process_end::on_end`], which runs it once).
pub(crate) fn flush_tool_output() {
    let Some(mut eng) = try_engine() else { return };
    let Engine { tool, contexts, exited_counters, modules, opts, exe, frags, .. } = &mut *eng;
    tool.on_exit(&tool::Finish {
        contexts,
        exited: exited_counters,
        frags,
        merged: std::cell::OnceCell::new(),
        segments: modules.segments(),
        output: &opts.output,
        program: &exe.to_string_lossy(),
    });
    if eng.opts.stats {
        eng.opts.output.report(&stats_report::report(&eng, stats_report::lookups(&eng)));
    }
}
