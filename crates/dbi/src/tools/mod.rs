//! The built-in tools, selected with `rewire run -t NAME`.

pub mod afl;
mod cmplog;
mod counts;
mod cov;
pub mod drcov;
mod syscall_log;

use crate::tool::{NullTool, Output, Tool, ToolOptions};
use crate::RunError;

/// Names of the built-in tools.
pub const NAMES: &[&str] = &["null", "cov", "inscount", "bbcount", "opcodes", "syscalls", "afl"];

/// The built-in tool `name`.
pub fn builtin(name: &str, opts: &ToolOptions, output: &Output) -> Result<Box<dyn Tool>, RunError> {
    Ok(match name {
        "null" => Box::new(NullTool),
        "cov" => Box::new(cov::Cov::new(opts.drcov_version, opts.hitcount)?),
        "inscount" => Box::new(counts::InsCount::new(opts.per_module)),
        "bbcount" => Box::new(counts::BbCount::new(opts.top)),
        "opcodes" => Box::new(counts::Opcodes::new(opts.top)),
        "syscalls" => Box::new(syscall_log::SyscallLog::new(output.clone())),
        "afl" => Box::new(afl::Afl::from_env()?),
        other => return Err(RunError::Unsupported(format!("no tool named {other:?} (built-in tools: {})", NAMES.join(", ")))),
    })
}
