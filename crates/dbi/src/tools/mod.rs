//! The built-in tools, selected with `rewire run -t NAME`.

mod counts;
mod cov;
pub mod drcov;
mod syscall_log;

use crate::tool::{NullTool, Output, Tool};
use crate::RunError;

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

/// Names of the built-in tools.
pub const NAMES: &[&str] = &["null", "cov", "inscount", "bbcount", "opcodes", "syscalls"];

/// The built-in tool `name`.
pub fn builtin(name: &str, opts: &ToolOptions, output: &Output) -> Result<Box<dyn Tool>, RunError> {
    Ok(match name {
        "null" => Box::new(NullTool),
        "cov" => Box::new(cov::Cov::new(opts.drcov_version, opts.hitcount)?),
        "inscount" => Box::new(counts::InsCount::new(opts.per_module)),
        "bbcount" => Box::new(counts::BbCount::new(opts.top)),
        "opcodes" => Box::new(counts::Opcodes::new(opts.top)),
        "syscalls" => Box::new(syscall_log::SyscallLog::new(output.clone())),
        other => return Err(RunError::Unsupported(format!("no tool named {other:?} (built-in tools: {})", NAMES.join(", ")))),
    })
}
