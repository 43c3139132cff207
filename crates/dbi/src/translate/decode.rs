//! Decoding a block of application code: from a tag through the first control transfer,
//! `syscall`, an instruction the engine cannot run, or the size limits.

use iced_x86::{Code, Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind, Register};

/// Most application instructions in one block.
pub const MAX_BLOCK_INSNS: usize = 64;

/// Most application bytes in one block (keeps translation offsets within 16 bits).
const MAX_BLOCK_BYTES: usize = 1024;

/// The instructions the engine cannot run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unrunnable {
    /// `rdgsbase`, `wrgsbase`, `swapgs`.
    GsBase,
    /// `sysenter`, `sysexit`.
    Sysenter,
    /// `int 0x80`.
    Int80,
    /// `xbegin`.
    Xbegin,
    /// `iret`.
    Iret,
    /// `retf`.
    FarReturn,
    /// `jmp far`, `call far`.
    FarBranch,
    /// `mov gs, r/m` and `pop gs`.
    GsSelector,
    /// String instructions with a GS override.
    GsString,
    /// `jmp`/`call` through GS-relative memory.
    GsIndirectBranch,
}

impl std::fmt::Display for Unrunnable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Unrunnable::GsBase => "GS base instructions (the engine owns GS)",
            Unrunnable::Sysenter => "sysenter",
            Unrunnable::Int80 => "32-bit system calls (int 0x80)",
            Unrunnable::Xbegin => "transactional memory (xbegin)",
            Unrunnable::Iret => "iret",
            Unrunnable::FarReturn => "far returns",
            Unrunnable::FarBranch => "far jumps and calls",
            Unrunnable::GsSelector => "loading the GS selector",
            Unrunnable::GsString => "GS-relative string instructions",
            Unrunnable::GsIndirectBranch => "GS-relative indirect branches",
        })
    }
}

/// The application instructions of one block, decoded.
#[derive(Debug, Clone, Default)]
pub struct Decoded {
    /// Address of the first instruction.
    pub tag: u64,
    /// The instructions, the last one ending the block (a control transfer, `syscall`, an
    /// instruction the engine must stop at, or the size limit).
    pub insns: Vec<Instruction>,
    /// The block stops at bytes that do not decode (the CPU would fault there).
    pub ends_invalid: bool,
}

impl Decoded {
    /// Application bytes covered.
    pub fn app_len(&self) -> u64 {
        self.insns.last().map_or(0, |i| i.next_ip() - self.tag)
    }

    /// Decodes the block at `tag` from `code` (its bytes, up to the end of executable
    /// memory) into this one, whose instruction buffer is reused: the engine keeps a few
    /// `Decoded` for all its builds, so decoding allocates nothing once they have grown.
    pub fn decode(&mut self, tag: u64, code: &[u8]) {
        let limit = code.len().min(MAX_BLOCK_BYTES + 16);
        let mut decoder = Decoder::with_ip(64, &code[..limit], tag, DecoderOptions::NONE);
        let mut insn = Instruction::default();
        let mut len = 0;
        self.tag = tag;
        self.insns.clear();
        self.ends_invalid = false;
        while self.insns.len() < MAX_BLOCK_INSNS && len < MAX_BLOCK_BYTES {
            decoder.decode_out(&mut insn);
            if insn.is_invalid() {
                self.ends_invalid = true;
                return;
            }
            len += insn.len();
            self.insns.push(insn);
            if insn.flow_control() != FlowControl::Next || unsupported(&insn).is_some() {
                return;
            }
        }
    }
}

/// Why the engine cannot run `insn` yet, if it cannot.
pub(crate) fn unsupported(insn: &Instruction) -> Option<Unrunnable> {
    match insn.mnemonic() {
        Mnemonic::Rdgsbase | Mnemonic::Wrgsbase | Mnemonic::Swapgs => return Some(Unrunnable::GsBase),
        Mnemonic::Sysenter | Mnemonic::Sysexit => return Some(Unrunnable::Sysenter),
        Mnemonic::Int if insn.immediate8() == 0x80 => return Some(Unrunnable::Int80),
        Mnemonic::Xbegin => return Some(Unrunnable::Xbegin),
        Mnemonic::Iret | Mnemonic::Iretd | Mnemonic::Iretq => return Some(Unrunnable::Iret),
        _ => {}
    }
    if insn.flow_control() == FlowControl::Return && insn.mnemonic() != Mnemonic::Ret {
        return Some(Unrunnable::FarReturn);
    }
    if matches!(insn.code(), Code::Jmp_m1664 | Code::Jmp_m1632 | Code::Jmp_m1616 | Code::Call_m1664 | Code::Call_m1632 | Code::Call_m1616) {
        return Some(Unrunnable::FarBranch);
    }
    if insn.op0_kind() == OpKind::Register && insn.op0_register() == Register::GS {
        return Some(Unrunnable::GsSelector);
    }
    if insn.segment_prefix() != Register::GS {
        return None;
    }
    let implicit_mem = (0..insn.op_count()).any(|i| {
        matches!(
            insn.op_kind(i),
            OpKind::MemorySegRSI
                | OpKind::MemorySegESI
                | OpKind::MemorySegSI
                | OpKind::MemorySegRDI
                | OpKind::MemorySegEDI
                | OpKind::MemorySegDI
        )
    });
    if implicit_mem {
        return Some(Unrunnable::GsString);
    }
    if matches!(insn.flow_control(), FlowControl::IndirectBranch | FlowControl::IndirectCall)
        && insn.op0_kind() == OpKind::Memory
        && insn.memory_segment() == Register::GS
    {
        return Some(Unrunnable::GsIndirectBranch);
    }
    None
}
