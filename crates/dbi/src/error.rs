//! Errors of the engine.

use std::path::PathBuf;

impl RunError {
    /// The errno behind a failed system call, if that is what happened.
    pub fn errno(&self) -> Option<i32> {
        match self {
            RunError::Sys(_, e) | RunError::Io(_, e) | RunError::Output(_, e) => e.raw_os_error(),
            _ => None,
        }
    }
}

/// Why a program cannot be run under the engine.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// No such file (or not found on `PATH`).
    #[error("{0}: no such file or directory")]
    NotFound(String),
    /// The file exists but may not be executed.
    #[error("{}: permission denied (not executable)", .0.display())]
    NotExecutable(PathBuf),
    /// Not an ELF file (and not a `#!` script).
    #[error("{}: not an ELF executable", .0.display())]
    NotElf(PathBuf),
    /// A 32-bit ELF file.
    #[error("{}: 32-bit programs are not supported (x86-64 only)", .0.display())]
    Elf32(PathBuf),
    /// An ELF file whose headers or segments end past the end of the file.
    #[error("{}: truncated ELF file", .0.display())]
    Truncated(PathBuf),
    /// An ELF file whose headers make no sense (a segment the kernel would refuse to map).
    #[error("{}: invalid ELF file: {}", .0.display(), .1)]
    InvalidElf(PathBuf, String),
    /// An ELF file for another machine or of another type.
    #[error("{}: {}", .0.display(), .1)]
    WrongKind(PathBuf, String),
    /// The program's ELF interpreter does not exist.
    #[error("{}: its interpreter {} is missing", .0.display(), .1.display())]
    MissingInterpreter(PathBuf, PathBuf),
    /// Reading or mapping a file failed.
    #[error("{}: {}", .0.display(), .1)]
    Io(PathBuf, std::io::Error),
    /// The output directory (`-o`) or log file (`--log`) cannot be written.
    #[error("{}: cannot write output there: {}", .0.display(), .1)]
    Output(PathBuf, std::io::Error),
    /// A system call of the engine failed.
    #[error("{0} failed: {1}")]
    Sys(&'static str, std::io::Error),
    /// Code cache memory could not be had.
    #[error("code cache: {0}")]
    Cache(rewire_mem::MemError),
    /// A tool's settings (its options or environment variables) cannot be used.
    #[error("{0}")]
    ToolSettings(String),
    /// The program would gain privileges at exec, which the engine cannot give it.
    #[error("{}: the program is {} and rewire cannot give it those privileges (it would run as you); run it without rewire, or with --unprivileged to run it without them", .0.display(), .1)]
    Privileged(PathBuf, String),
    /// Something this machine or program needs that the engine does not do.
    #[error("not supported: {0}")]
    Unsupported(String),
}
