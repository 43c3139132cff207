use rewire_mem::MemError;
use rewire_x86::X86Error;
use std::fmt;

/// Why the code at an address cannot be patched safely.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The function ends before the patch does and what follows is not padding.
    TooShort {
        /// Bytes available before other code begins.
        available: u64,
        /// Bytes the patch needs.
        needed: usize,
    },
    /// A branch elsewhere in the function lands inside the bytes the patch overwrites.
    BranchIntoWindow {
        /// Address of that branch.
        from: u64,
        /// Where it lands.
        to: u64,
    },
    /// A `syscall` inside the patched bytes: a thread blocked in it returns (or restarts)
    /// into the middle of the patch.
    SyscallInWindow,
    /// The instruction cannot be relocated.
    Relocation(rewire_x86::RelocReason),
    /// The bytes do not decode.
    InvalidInstruction,
    /// The relocated copy could not be proven equivalent by decoding (a relocator defect).
    Unverified(String),
}

impl fmt::Display for Refusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Refusal::TooShort { available, needed } => {
                write!(f, "function has {available} bytes before other code and is not followed by padding; the patch needs {needed}")
            }
            Refusal::BranchIntoWindow { from, to } => {
                write!(f, "the branch at {from:#x} lands at {to:#x}, inside the bytes the patch overwrites")
            }
            Refusal::SyscallInWindow => f.write_str("a thread blocked in this syscall would return or restart inside the patched bytes"),
            Refusal::Relocation(r) => write!(f, "{r}"),
            Refusal::InvalidInstruction => f.write_str("the bytes do not decode as an instruction"),
            Refusal::Unverified(why) => write!(f, "relocation not proven equivalent: {why}"),
        }
    }
}

/// Errors of the hook engine. Every error leaves the target's bytes unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HookError {
    /// The target address is null.
    #[error("the target address is null")]
    NullTarget,
    /// The target is not mapped.
    #[error("the target {0:#x} is not mapped")]
    Unmapped(u64),
    /// The target is mapped but not executable.
    #[error("the target {0:#x} is not executable memory")]
    NotExecutable(u64),
    /// This detour is already hooked on this target.
    #[error("{target:#x} is already hooked with the detour {detour:#x}")]
    AlreadyHooked {
        /// The target.
        target: u64,
        /// The detour.
        detour: u64,
    },
    /// The code at the target cannot be patched safely.
    #[error("cannot hook {address:#x}: `{instruction}` at {at:#x}: {reason}")]
    Unhookable {
        /// The target.
        address: u64,
        /// Address of the instruction at fault.
        at: u64,
        /// The instruction at fault, Intel syntax.
        instruction: String,
        /// Why.
        reason: Refusal,
    },
    /// No such module is loaded.
    #[error("no module {0:?} is loaded")]
    ModuleNotFound(String),
    /// The module has no such symbol.
    #[error("{module} has no symbol {symbol:?}{}", close_matches(.similar))]
    SymbolNotFound {
        /// Module searched.
        module: String,
        /// Symbol wanted.
        symbol: String,
        /// Symbols with close names.
        similar: Vec<String>,
    },
    /// A thread of the process could not be stopped to patch safely.
    #[error("thread {tid} did not stop for patching (it blocks the stop signal {signal} while running)")]
    ThreadDidNotStop {
        /// The thread.
        tid: i32,
        /// The signal used.
        signal: i32,
    },
    /// The stop signal already has a handler installed by the program.
    #[error("signal {0} (used to stop threads while patching) has a handler of the program's")]
    StopSignalTaken(i32),
    /// The hook was removed already.
    #[error("the hook was removed")]
    Removed,
    /// A module file that cannot be read as a 64-bit x86 ELF file.
    #[error("cannot use {path}: {reason}")]
    BadModule {
        /// The file.
        path: String,
        /// Why.
        reason: String,
    },
    /// No process with this id.
    #[error("no process {0}")]
    NoSuchProcess(i32),
    /// The kernel refused to let rewire trace the process.
    #[error("not permitted to trace process {pid}: {why}")]
    NotPermitted {
        /// The process.
        pid: i32,
        /// The rule that refused, and what to do.
        why: String,
    },
    /// Another debugger or tracer is attached.
    #[error("process {pid} is already traced by process {tracer}; detach that tracer first")]
    AlreadyTraced {
        /// The process.
        pid: i32,
        /// Its tracer.
        tracer: i32,
    },
    /// The process exited while rewire was working on it.
    #[error("process {0} exited during the operation")]
    TargetExited(i32),
    /// A function called in the target faulted.
    #[error("the function at {function:#x} called in process {pid} faulted at {at:#x}")]
    RemoteCallFaulted {
        /// The process.
        pid: i32,
        /// The function called.
        function: u64,
        /// Where it faulted.
        at: u64,
    },
    /// A signal arrived while a function was called in the target.
    #[error("signal {signal} arrived in process {pid} while rewire called a function in it; try again")]
    RemoteCallInterrupted {
        /// The process.
        pid: i32,
        /// The signal.
        signal: i32,
    },
    /// A library could not be loaded into the target.
    #[error("cannot load {lib}: {reason}")]
    LoadFailed {
        /// The library.
        lib: String,
        /// The `dlerror()` text, or why the file is unusable.
        reason: String,
    },
    /// A program could not be started.
    #[error("cannot launch {program}: {reason}")]
    CannotLaunch {
        /// The program.
        program: String,
        /// Why.
        reason: String,
    },
    /// Memory could not be read, written or allocated.
    #[error(transparent)]
    Memory(#[from] MemError),
}

fn close_matches(similar: &[String]) -> String {
    if similar.is_empty() {
        String::new()
    } else {
        format!("; close matches: {}", similar.join(", "))
    }
}

impl HookError {
    pub(crate) fn unhookable(address: u64, insn: Option<&rewire_x86::Instruction>, at: u64, reason: Refusal) -> HookError {
        let instruction = insn.map_or_else(|| "??".to_string(), rewire_x86::format_instruction);
        HookError::Unhookable { address, at, instruction, reason }
    }

    pub(crate) fn from_x86(address: u64, e: X86Error) -> HookError {
        match e {
            X86Error::Invalid { address: at } => {
                HookError::Unhookable { address, at, instruction: "(bad)".into(), reason: Refusal::InvalidInstruction }
            }
            X86Error::Truncated { address: at, needed } => HookError::Unhookable {
                address,
                at,
                instruction: "(end of mapping)".into(),
                reason: Refusal::TooShort { available: at - address, needed },
            },
            X86Error::Unrelocatable { address: at, instruction, reason } => {
                HookError::Unhookable { address, at, instruction, reason: Refusal::Relocation(reason) }
            }
        }
    }
}
