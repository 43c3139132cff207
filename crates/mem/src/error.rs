/// Errors of the memory policies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MemError {
    /// `len` bytes at `addr` are not (all) mapped and readable.
    #[error("{len} bytes at {addr:#x} are not mapped and readable")]
    Unreadable {
        /// First address.
        addr: u64,
        /// Length.
        len: usize,
    },
    /// Writing at `addr` failed.
    #[error("cannot write {len} bytes at {addr:#x}: {errno}")]
    Unwritable {
        /// First address.
        addr: u64,
        /// Length.
        len: usize,
        /// What the kernel said.
        errno: String,
    },
    /// A system call failed.
    #[error("{call} failed: {errno}")]
    Sys {
        /// The call, with its main argument.
        call: String,
        /// What the kernel said.
        errno: String,
    },
    /// No free address space of `len` bytes within ±2 GiB of `near`.
    #[error("no free {len}-byte range within ±2 GiB of {near:#x}")]
    NoNearSpace {
        /// The address the space had to be near.
        near: u64,
        /// Size wanted.
        len: usize,
    },
    /// A slot of `size` bytes is larger than any slot class.
    #[error("no slot class holds {size} bytes")]
    SlotTooLarge {
        /// Size asked for.
        size: usize,
    },
    /// The address-space map could not be read or parsed.
    #[error("cannot read the address-space map {path}: {reason}")]
    Maps {
        /// The maps file.
        path: String,
        /// Why.
        reason: String,
    },
}

impl MemError {
    pub(crate) fn sys(call: impl Into<String>, errno: rustix::io::Errno) -> Self {
        MemError::Sys { call: call.into(), errno: errno.to_string() }
    }
}
