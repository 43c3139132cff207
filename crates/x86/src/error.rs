use std::fmt;

/// Why an instruction cannot be moved to another address without changing what it does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RelocReason {
    /// A RIP-relative memory operand whose address is more than ±2 GiB from the new location.
    MemoryOutOfReach,
    /// A `call` whose target lies inside the relocated window (the get-PC idiom): the pushed
    /// return address would change.
    CallIntoWindow,
    /// A branch into the middle of an instruction of the window.
    BranchIntoInstruction,
    /// A transactional-memory `xbegin`, whose abort address is relative.
    Xbegin,
    /// A RIP-relative form this relocator has no rewrite for (e.g. a 32-bit `lea` far away).
    UnsupportedRipUse,
}

impl fmt::Display for RelocReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::MemoryOutOfReach => "its RIP-relative memory operand is out of ±2 GiB reach of the new location",
            Self::CallIntoWindow => "it calls into the relocated window (get-PC idiom): the pushed return address would change",
            Self::BranchIntoInstruction => "it branches into the middle of an instruction of the window",
            Self::Xbegin => "xbegin's abort address cannot be relocated",
            Self::UnsupportedRipUse => "it reads RIP in a form that cannot be rewritten",
        })
    }
}

/// Errors of the instruction core; each names the instruction and its address.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum X86Error {
    /// The bytes at `address` do not decode as an x86-64 instruction.
    #[error("invalid instruction at {address:#x}")]
    Invalid {
        /// Address of the undecodable bytes.
        address: u64,
    },
    /// The code buffer ended before the requested number of bytes was covered.
    #[error("code ends at {address:#x} before {needed} bytes are covered")]
    Truncated {
        /// Address where the readable bytes end.
        address: u64,
        /// Bytes that had to be covered.
        needed: usize,
    },
    /// An instruction that cannot be relocated safely.
    #[error("`{instruction}` at {address:#x} cannot be relocated: {reason}")]
    Unrelocatable {
        /// Address of the instruction.
        address: u64,
        /// The instruction in Intel syntax.
        instruction: String,
        /// Why.
        reason: RelocReason,
    },
}
