//! The engine, the top of the runtime: the shared engine state and the dispatcher that ties
//! the layers together (the only layer that sees all of them), the master signal handler,
//! the system call table, program threads, hot traces, `--stats`, start-up and the end of
//! the process. Every exit from the cache comes here through `arch::switch`.

pub mod dispatch;
pub mod finish;
pub mod fork_server;
pub mod options;
pub mod shared_child;
pub mod signal_handler;
pub mod start;
pub mod state;
pub mod stats;
pub mod stats_report;
pub mod syscalls;
pub mod threads;
pub mod trace_builder;
pub mod traces;

pub use fork_server::options::ForkServerOptions;
pub use options::{EngineOptions, Options};
pub use start::run_tool;
pub use traces::{TraceOptions, DEFAULT_MAX_BLOCKS, DEFAULT_THRESHOLD};
