//! What a tool counts in a block and where a counter costs least: the per-thread counter
//! increments a tool asks for, the merged counts of traces, and the places in a block where
//! the arithmetic flags are dead or a register is free.

use iced_x86::{FlowControl, Instruction, InstructionInfoFactory, Mnemonic, OpKind, Register};

/// The tool's once-per-execution counts of a trace's blocks, merged: one count of the
/// trace's executions where its first block counts, and on every way out before the last
/// block a count of leaving there (the blocks after it did not run). A loop trace of ten
/// blocks then adds once a turn instead of ten times; the tool's totals are rebuilt from
/// these counters when it asks for them ([`crate::fragments::Fragments::merged_totals`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MergedCounts {
    /// Engine counter of the trace's executions.
    pub entry: u32,
    /// Cache offset of the code that counts an execution: a thread that leaves the trace
    /// before it has not counted.
    pub entry_offset: u16,
    /// For every part but the last: the engine counter of leaving right after it, if the
    /// parts after it count anything.
    pub corrections: Box<[Option<u32>]>,
    /// For every part: the tool's counts it stands for.
    pub adds: Box<[PartCounts]>,
}

/// The tool's once-per-execution counts of one block, as (counter offset, amount).
pub type PartCounts = Box<[(u32, u32)]>;

impl MergedCounts {
    /// The counter a thread leaving the trace at cache offset `offset` must count, so that
    /// the parts it did not run are not counted: `part` is the part `offset` lies in and
    /// `at_part_start` says that none of that part ran yet.
    pub fn correction_for(&self, offset: u16, part: usize, at_part_start: bool) -> Option<u32> {
        if offset <= self.entry_offset {
            return None;
        }
        let left_after = if at_part_start { part.checked_sub(1)? } else { part };
        self.corrections.get(left_after).copied().flatten()
    }
}

/// A per-thread counter increment a tool asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CounterAdd {
    /// Before which instruction of the block (index); `None`: anywhere in the block, once
    /// per execution (the builder picks the place where it costs least).
    pub before: Option<usize>,
    /// Byte offset of the counter in the thread's counter area.
    pub offset: u32,
    /// What to add.
    pub amount: u32,
}

/// An edge-coverage hit in the classic AFL form, once per execution of the block:
/// `map[cur ^ prev]` is incremented (never wrapping to zero) and `prev` becomes `cur >> 1`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EdgeHit {
    /// The block's id, below the map size.
    pub cur: u32,
    /// Byte offset of the thread's `prev` slot in its counter area.
    pub prev: u32,
    /// Address of the coverage map (below 2 GiB, so that it is a sign-extended displacement).
    pub map: u32,
}

/// What a tool inserts into a block: counter increments, clean calls (before instruction
/// index, call site number) and an edge-coverage hit.
#[derive(Debug, Clone, Default)]
pub struct Insertions {
    /// Counter increments.
    pub adds: Vec<CounterAdd>,
    /// Clean calls: (before which instruction, site).
    pub calls: Vec<(usize, u32)>,
    /// Edge coverage, per execution of the block (never merged in traces).
    pub edge: Option<EdgeHit>,
}

impl Insertions {
    /// True when the tool inserts nothing.
    pub fn is_empty(&self) -> bool {
        self.adds.is_empty() && self.calls.is_empty() && self.edge.is_none()
    }
}

/// True when no instruction can observe the arithmetic flags before the first of `insns`
/// runs: the first instruction touching them writes all six without reading any.
fn flags_dead_before(insns: &[Instruction]) -> bool {
    const ALL: u32 = iced_x86::RflagsBits::OF
        | iced_x86::RflagsBits::SF
        | iced_x86::RflagsBits::ZF
        | iced_x86::RflagsBits::AF
        | iced_x86::RflagsBits::CF
        | iced_x86::RflagsBits::PF;
    for insn in insns {
        if insn.rflags_read() & ALL != 0 || insn.flow_control() != FlowControl::Next {
            return false;
        }
        if insn.rflags_modified() & ALL == ALL {
            return true;
        }
    }
    false
}

/// The general register `insn` overwrites whole without reading it, if it is one that
/// cannot fault (no memory access, no exception): a counter placed right before it may use
/// that register, since nothing, a signal handler included, can see its old value again.
pub(crate) fn overwrites_register(insn: &Instruction, info: &mut InstructionInfoFactory) -> Option<u8> {
    use iced_x86::OpAccess;
    let simple = matches!(
        insn.mnemonic(),
        Mnemonic::Mov | Mnemonic::Movzx | Mnemonic::Movsx | Mnemonic::Movsxd | Mnemonic::Lea | Mnemonic::Xor | Mnemonic::Sub
    );
    if !simple || insn.op0_kind() != OpKind::Register || !insn.op0_register().is_gpr() || insn.op0_register().size() < 4 {
        return None;
    }
    let dest = insn.op0_register().full_register();
    // `xor r, r` and `sub r, r` read nothing: the result is zero.
    let zeroing = matches!(insn.mnemonic(), Mnemonic::Xor | Mnemonic::Sub)
        && insn.op1_kind() == OpKind::Register
        && insn.op1_register() == insn.op0_register();
    let info = info.info(insn);
    let touches_memory = info.used_memory().iter().any(|m| m.access() != OpAccess::NoMemAccess);
    let reads_dest = info.used_registers().iter().any(|u| u.register().full_register() == dest && u.access() != OpAccess::Write);
    (!touches_memory && dest != Register::RSP && (zeroing || !reads_dest)).then(|| gpr_number(dest))
}

/// How a counter increment keeps the program's state intact.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scratch {
    /// The flags are dead: `add` to memory.
    Flags,
    /// This register is about to be overwritten: `mov`/`lea`/`mov` through it.
    Register(u8),
    /// Neither: `mov`/`lea`/`mov` through rax, saved and restored around it.
    SpillRax,
}

/// What a counter placed before the first of `insns` may use.
pub(crate) fn scratch_before(insns: &[Instruction], info: &mut InstructionInfoFactory) -> Scratch {
    if flags_dead_before(insns) {
        Scratch::Flags
    } else if let Some(r) = insns.first().and_then(|i| overwrites_register(i, info)) {
        Scratch::Register(r)
    } else {
        Scratch::SpillRax
    }
}

/// Where a once-per-execution counter costs least, and what it may use there (what
/// [`scratch_before`] gives for that place): before the first instruction whose flags are
/// dead, else before one that overwrites a register, else at the top with rax spilled.
pub(crate) fn cheapest_place(insns: &[Instruction], info: &mut InstructionInfoFactory) -> (usize, Scratch) {
    if let Some(i) = (0..insns.len()).find(|&i| flags_dead_before(&insns[i..])) {
        return (i, Scratch::Flags);
    }
    (0..insns.len()).find_map(|i| overwrites_register(&insns[i], info).map(|r| (i, Scratch::Register(r)))).unwrap_or((0, Scratch::SpillRax))
}

/// Where an edge hit costs least: before the first instruction whose flags are dead, with
/// the register that instruction overwrites if it has one (else rax spilled); `None` when
/// the flags are live all through the block (the hit then saves them itself).
pub(crate) fn edge_place(insns: &[Instruction], info: &mut InstructionInfoFactory) -> Option<(usize, Option<u8>)> {
    let i = (0..insns.len()).find(|&i| flags_dead_before(&insns[i..]))?;
    Some((i, overwrites_register(&insns[i], info)))
}

/// The x86 number of a 64-bit general register (rax=0 … r15=15).
pub(crate) fn gpr_number(r: Register) -> u8 {
    let full = r.full_register();
    (full as u32 - Register::RAX as u32) as u8
}
