//! rewire's dynamic binary instrumentation engine, in the style of DynamoRIO: it loads a
//! program into this process and runs it entirely from a code cache of translated basic
//! blocks, from the first instruction of its ELF interpreter to its last `exit_group`.
//!
//! The crate is built in layers, each a module tree that imports only from the layers below
//! it (a test, `tests/layers.rs`, checks that and that no files form an import cycle):
//!
//! | layer | owns |
//! | --- | --- |
//! | [`arch`] | the machine level: thread context layout, context switch, lookup template, signal entry, fault-resumed copy, raw system calls, SIMD state, the runtime's heap |
//! | [`translate`] | from application bytes to cache code: decoding, the block builder and emitter, trace stitching, tool counters, exit records |
//! | [`cache`] | code cache memory, the fragment registry, links, translation back, invalidation |
//! | [`os`] | the program's Linux process model: loader, initial stack, program memory, executable regions, written code pages, modules, brk, signals, the end of the process |
//! | [`tool`] | the tool API the engine calls |
//! | [`engine`] | the shared engine state and the dispatcher, system call table, signal handler, threads, traces, stats, start-up |
//! | [`tools`] | the built-in tools, on the tool API only |
//!
//! [`error`](RunError) is a leaf every layer may use.

#![warn(missing_docs)]

pub mod arch;
pub mod cache;
pub mod engine;
mod error;
pub mod os;
pub mod tool;
pub mod tools;
pub mod translate;

pub use engine::{run_tool, EngineOptions, Options};
pub use error::RunError;

use std::convert::Infallible;

/// Runs the program under the engine with the built-in tool the options name. Returns only
/// with an error from before the program's first instruction; afterwards the process ends
/// when and how the program ends.
pub fn run(mut opts: Options) -> Result<Infallible, RunError> {
    os::program_env::restart_shielded().map_err(|e| RunError::Sys("execve(/proc/self/exe)", e))?;
    let tool: Box<dyn tool::Tool> = match opts.engine.tool.as_deref().unwrap_or("null") {
        // AFL++ coverage comes with the engine's fork server, which tells the fuzzer the map size.
        "afl" => {
            let afl = tools::afl::Afl::from_env()?;
            opts.engine.fork_server = Some(engine::ForkServerOptions::from_env(afl.map_size()).map_err(RunError::ToolSettings)?);
            Box::new(afl)
        }
        name => tools::builtin(name, &opts.engine.tool_options, &opts.engine.output)?,
    };
    run_tool(tool, opts)
}
