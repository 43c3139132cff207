//! Building a basic block: decode application code from a tag through the first control
//! transfer and translate it into cache code. Instructions that need no change are copied
//! byte for byte; control transfers, `syscall`, RIP-relative operands the cache cannot reach
//! and GS-relative operands are mangled, and every way out of the block gets an exit.

use crate::arch;
use crate::context::off;
use crate::emitter::{Emitter, Label};
use iced_x86::{
    Code, ConditionCode, Decoder, DecoderOptions, FlowControl, Instruction, InstructionInfoFactory, Mnemonic, OpKind, Register,
};
use smallvec::SmallVec;
use std::cell::Cell;
use std::mem::MaybeUninit;

/// Bytes before a fragment's body: its entry for indirect branches, which restores rcx (the
/// lookup used it to jump through the table). Direct links enter after it.
pub const LOOKUP_PREFIX: usize = 9;
/// Most application instructions in one block.
pub const MAX_BLOCK_INSNS: usize = 64;
/// Most application bytes in one block (keeps translation offsets within 16 bits).
const MAX_BLOCK_BYTES: usize = 1024;

/// The kind of indirect branch an indirect exit comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Branch {
    /// `ret`
    Return,
    /// `call reg|mem`
    Call,
    /// `jmp reg|mem`
    Jump,
}

/// What an exit from the cache asks the dispatcher to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitKind {
    /// Continue at a known application address; the exit can be linked.
    Direct {
        /// The application address.
        target: u64,
    },
    /// Run the system call the block stopped at, then continue at `next`.
    Syscall {
        /// Address of the instruction after `syscall`.
        next: u64,
    },
    /// An indirect branch whose target missed in the lookup table.
    Indirect(Branch),
    /// An instruction the engine cannot run.
    Unsupported {
        /// Its application address.
        at: u64,
        /// What it is.
        what: Unrunnable,
    },
    /// A tool's clean call: run it, then resume at the record's `stub` address (the code
    /// right after the call sequence).
    CleanCall {
        /// Index of the call site in the engine's table.
        site: u32,
    },
    /// Entry check of a block from a page written too often: the dispatcher compares the
    /// application's bytes with those the block was built from, and resumes at `stub`.
    Verify,
    /// The thread was sent into the dispatcher from a signal handler; it continues at
    /// the application address in the context's `ibl_target`.
    Redirect,
    /// The execution counter of a trace head reached the threshold: the thread continues
    /// at `target`, and the dispatcher records a trace from there.
    TraceHead {
        /// The head.
        target: u64,
    },
    /// The first entry of a thread.
    Start {
        /// Where the thread starts.
        entry: u64,
    },
}

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

/// One exit of a fragment. Cache code refers to it by address, and a thread may read it
/// after its fragment was reclaimed, so records are never freed: they come from chunks
/// that live as long as the process (48 bytes each, no allocator header).
#[derive(Debug)]
pub struct ExitRecord {
    /// What the exit does.
    pub kind: ExitKind,
    /// Cache address of the start of the fragment's code; the offsets below count from it
    /// (0: none, the start being the lookup prefix, never a field or a stub).
    base: u64,
    /// The fragment it belongs to.
    pub fragment: u32,
    /// Its index among the fragment's exits.
    pub index: u16,
    /// The patchable rel32 field of the jump that leaves through this exit (none when the
    /// exit cannot be linked).
    field: u16,
    /// The exit stub (where the field points while unlinked; for exits that resume, where
    /// the code resumes).
    stub: u16,
    /// For exits to trace heads, which count their executions on the way: the body's rel32
    /// field aimed at the counting stub. Once the head has a trace, this field is aimed at
    /// the trace and the count skipped.
    bypass: u16,
    /// The counting stub (where `bypass` points while the head has no trace).
    count_stub: u16,
    /// The fragment this exit is linked to.
    pub linked: Option<u32>,
}

/// Records per chunk.
const RECORDS_PER_CHUNK: usize = 1024;

const _: () = assert!(std::mem::size_of::<ExitRecord>() == 48);

impl ExitRecord {
    /// A record for the fragment whose code starts at cache address `base`, not yet
    /// attached to it.
    pub fn new(kind: ExitKind, base: u64) -> &'static mut ExitRecord {
        thread_local! {
            static FREE: Cell<&'static mut [MaybeUninit<ExitRecord>]> = const { Cell::new(&mut []) };
        }
        let record = ExitRecord::unattached(kind, base);
        FREE.with(|free| {
            let mut slots = free.take();
            if slots.is_empty() {
                slots = Box::leak(Box::new_uninit_slice(RECORDS_PER_CHUNK));
            }
            let (slot, rest) = slots.split_first_mut().expect("a chunk has room");
            free.set(rest);
            slot.write(record)
        })
    }

    /// A record of no fragment (for the exit a thread starts with or is redirected by).
    pub const fn unattached(kind: ExitKind, base: u64) -> ExitRecord {
        ExitRecord { kind, base, fragment: u32::MAX, index: 0, field: 0, stub: 0, bypass: 0, count_stub: 0, linked: None }
    }

    /// Address of the record, as cache code loads it.
    pub fn address(&self) -> u64 {
        self as *const ExitRecord as u64
    }

    /// Cache address of the patchable rel32 field of the jump leaving through this exit, if
    /// it can be linked.
    pub fn field(&self) -> Option<u64> {
        (self.field != 0).then(|| self.base + self.field as u64)
    }

    /// Cache address of the exit stub (of the code an exit that resumes continues at).
    pub fn stub(&self) -> u64 {
        self.base + self.stub as u64
    }

    /// For an exit that counts the executions of a trace head: the cache addresses of the
    /// body's field aimed at the counting stub and of the counting stub.
    pub fn bypass(&self) -> Option<(u64, u64)> {
        (self.bypass != 0).then(|| (self.base + self.bypass as u64, self.base + self.count_stub as u64))
    }
}

/// An offset into fragment code (fragments are at most 64 KiB: `dispatch` rejects larger).
fn offset16(offset: usize) -> u16 {
    offset as u16
}

/// What translations reuse from one to the next (the instruction-information decoder, the
/// emitter's buffers, the builder's lists), so that building a block allocates only what its
/// fragment keeps.
pub struct Workspace {
    info: InstructionInfoFactory,
    emitter: Emitter,
    stubs: Vec<Option<(Label, usize)>>,
    counting: Vec<(usize, u32)>,
    corrections: Vec<(usize, u32)>,
    mismatches: Vec<(Label, Branch, Option<u32>)>,
    map: Vec<(u16, u16)>,
}

impl std::fmt::Debug for Workspace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Workspace").field("code_bytes", &self.emitter.code().len()).finish_non_exhaustive()
    }
}

impl Default for Workspace {
    fn default() -> Workspace {
        Workspace {
            info: InstructionInfoFactory::new(),
            emitter: Emitter::default(),
            stubs: Vec::new(),
            counting: Vec::new(),
            corrections: Vec::new(),
            mismatches: Vec::new(),
            map: Vec::new(),
        }
    }
}

impl Workspace {
    /// The cache code of the last translation, ready to be copied to the address it was
    /// built for. It starts with the [`LOOKUP_PREFIX`].
    pub fn code(&self) -> &[u8] {
        self.emitter.code()
    }

    /// The map of the last translation: `(cache offset, application offset)` of every
    /// application instruction, ascending; application offsets are relative to the tag of
    /// the part the entry belongs to.
    pub fn map(&self) -> &[(u16, u16)] {
        &self.map
    }
}

/// A translated block (its code is in the [`Workspace`] until the next translation).
#[derive(Debug)]
pub struct Translated {
    /// Bytes of cache code.
    pub code_len: usize,
    /// Its exits.
    pub exits: Exits,
    /// The application blocks it was built from, in order (one for a basic block).
    pub parts: Parts,
    /// Application bytes covered (of the first part).
    pub app_len: u32,
    /// Application instructions covered.
    pub insns: u32,
    /// Engine counters it uses (8 bytes each, from `BuildOptions::counters`): trace heads
    /// and merged counts.
    pub counters: u32,
    /// A trace's merged tool counts.
    pub merged: Option<Box<MergedCounts>>,
}

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

/// The exit records of a fragment (most have at most three).
pub type Exits = SmallVec<[&'static mut ExitRecord; 3]>;
/// The application blocks of a fragment (one, but for traces).
pub type Parts = SmallVec<[Part; 1]>;

/// One application block inside a fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Part {
    /// Its first application address.
    pub tag: u64,
    /// Application bytes.
    pub app_len: u32,
    /// Index of its first entry in the fragment's map.
    pub map_start: u16,
}

/// Options that change the code blocks get.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuildOptions {
    /// Count indirect-branch lookups in the thread context (for `--stats`).
    pub count_ibl: bool,
    /// Start with a verification exit (the block's page is written often).
    pub verify: bool,
    /// Executions after which a trace head's counter fires (0: no trace heads).
    pub trace_threshold: u32,
    /// Byte offset in the counter area of the first free counter, and the end of the area:
    /// trace-head counters are taken from there.
    pub counters: (u32, u32),
    /// A recording copy for trace building: no exit is ever linked and indirect branches
    /// always leave through the dispatcher, so every block boundary is seen.
    pub record: bool,
    /// A trace: every direct exit counts (exits of traces are trace heads).
    pub trace: bool,
}

/// The decoded application code of one block and what a tool inserts into it.
#[derive(Debug, Clone, Copy)]
pub struct Source<'a> {
    /// The decoded instructions.
    pub decoded: &'a Decoded,
    /// Its bytes from the tag on.
    pub code: &'a [u8],
    /// The tool's insertions.
    pub insertions: &'a Insertions,
}

struct Builder<'a> {
    e: &'a mut Emitter,
    exits: Exits,
    /// For every exit, the label of its stub and the offset of the jump field aimed at it
    /// (`None` for exits whose stub sequence sits in the body).
    stubs: &'a mut Vec<Option<(Label, usize)>>,
    /// Direct exits that count executions of a trace head: (exit index, counter offset).
    counting: &'a mut Vec<(usize, u32)>,
    /// Direct exits that leave a trace with merged counts early: (exit index, correction
    /// counter).
    corrections: &'a mut Vec<(usize, u32)>,
    /// Inlined indirect-branch checks of traces whose recorded target did not match: the
    /// label of their out-of-line lookup, the kind of branch and the correction counter.
    mismatches: &'a mut Vec<(Label, Branch, Option<u32>)>,
    map: &'a mut Vec<(u16, u16)>,
    parts: Parts,
    /// Tag of the part being translated.
    tag: u64,
    /// Address of the application instruction being translated.
    ip: u64,
    /// Where the part being translated goes next in a trace (its successor's tag) and the
    /// label its code starts at.
    follow: Option<(u64, Label)>,
    opts: BuildOptions,
    info: &'a mut InstructionInfoFactory,
    /// Engine counters taken so far (from `opts.counters`).
    taken: u32,
    /// The trace's merged counts, if they are merged.
    merged: Option<Box<MergedCounts>>,
    /// Index of the part being translated.
    part_index: usize,
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

/// What a tool inserts into a block: counter increments and clean calls (before instruction
/// index, call site number).
#[derive(Debug, Clone, Default)]
pub struct Insertions {
    /// Counter increments.
    pub adds: Vec<CounterAdd>,
    /// Clean calls: (before which instruction, site).
    pub calls: Vec<(usize, u32)>,
}

/// Translates the blocks of a trace, in the order they ran, into one fragment for `at`:
/// each block's way to the next is laid out to fall through, indirect branches check
/// the recorded target inline before looking up another.
pub fn translate_parts(parts: &[Source<'_>], at: u64, opts: BuildOptions, ws: &mut Workspace) -> Translated {
    ws.emitter.reset(at);
    ws.stubs.clear();
    ws.counting.clear();
    ws.corrections.clear();
    ws.mismatches.clear();
    ws.map.clear();
    let mut b = Builder {
        e: &mut ws.emitter,
        exits: Exits::new(),
        stubs: &mut ws.stubs,
        counting: &mut ws.counting,
        corrections: &mut ws.corrections,
        mismatches: &mut ws.mismatches,
        map: &mut ws.map,
        parts: Parts::with_capacity(parts.len()),
        tag: parts[0].decoded.tag,
        ip: parts[0].decoded.tag,
        follow: None,
        opts,
        info: &mut ws.info,
        taken: 0,
        merged: None,
        part_index: 0,
    };
    b.merged = b.merge_counts(parts);
    b.e.load_gs(1, off::S_RCX);
    debug_assert_eq!(b.e.offset(), LOOKUP_PREFIX);
    if opts.verify {
        b.mark(b.tag);
        b.resume_exit(ExitKind::Verify);
    }
    let mut next_label = None;
    let mut insns = 0;
    for (i, part) in parts.iter().enumerate() {
        if let Some(l) = next_label.take() {
            b.e.bind(l);
        }
        b.part_index = i;
        b.follow = parts.get(i + 1).map(|n| (n.decoded.tag, b.e.label()));
        next_label = b.follow.map(|(_, l)| l);
        b.part(part);
        insns += part.decoded.insns.len().max(1) as u32;
    }
    let app_len = parts[0].decoded.app_len().max(1) as u32;
    b.finish(app_len, insns)
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
fn overwrites_register(insn: &Instruction, info: &mut InstructionInfoFactory) -> Option<u8> {
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
enum Scratch {
    /// The flags are dead: `add` to memory.
    Flags,
    /// This register is about to be overwritten: `mov`/`lea`/`mov` through it.
    Register(u8),
    /// Neither: `mov`/`lea`/`mov` through rax, saved and restored around it.
    SpillRax,
}

/// What a counter placed before the first of `insns` may use.
fn scratch_before(insns: &[Instruction], info: &mut InstructionInfoFactory) -> Scratch {
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
fn cheapest_place(insns: &[Instruction], info: &mut InstructionInfoFactory) -> (usize, Scratch) {
    if let Some(i) = (0..insns.len()).find(|&i| flags_dead_before(&insns[i..])) {
        return (i, Scratch::Flags);
    }
    (0..insns.len()).find_map(|i| overwrites_register(&insns[i], info).map(|r| (i, Scratch::Register(r)))).unwrap_or((0, Scratch::SpillRax))
}

impl Builder<'_> {
    /// Translates one application block (the last of the fragment when `follow` is None).
    fn part(&mut self, src: &Source<'_>) {
        let d = src.decoded;
        self.tag = d.tag;
        self.parts.push(Part { tag: d.tag, app_len: d.app_len().max(1) as u32, map_start: self.map.len() as u16 });
        // With merged counts, the part's once-per-execution counts are the trace's: the
        // first part counts the trace's execution instead.
        let entry = self.merged.as_ref().filter(|_| self.part_index == 0).map(|m| CounterAdd { before: None, offset: m.entry, amount: 1 });
        let merged = self.merged.is_some();
        let adds = src.insertions.adds.iter().filter(|a| !merged || a.before.is_some()).chain(entry.iter());
        let cheapest = adds.clone().any(|a| a.before.is_none()).then(|| cheapest_place(&d.insns, self.info));
        let cheapest_at = cheapest.map_or(0, |(at, _)| at);
        let placed: SmallVec<[(usize, CounterAdd); 2]> = adds.map(|a| (a.before.unwrap_or(cheapest_at), *a)).collect();
        let mut open = true;
        for (i, insn) in d.insns.iter().enumerate() {
            self.mark(insn.ip());
            for &(_, site) in src.insertions.calls.iter().filter(|(at, _)| *at == i) {
                self.clean_call(site);
            }
            if placed.iter().any(|(at, _)| *at == i) {
                let scratch = match cheapest {
                    Some((at, scratch)) if at == i => scratch,
                    _ => scratch_before(&d.insns[i..], self.info),
                };
                for (_, add) in placed.iter().filter(|(at, _)| *at == i) {
                    if Some(add) == entry.as_ref() {
                        let at = offset16(self.e.offset());
                        self.merged.as_mut().expect("an entry count comes with merged counts").entry_offset = at;
                    }
                    self.counter(add, scratch);
                }
            }
            let bytes = &src.code[(insn.ip() - d.tag) as usize..(insn.next_ip() - d.tag) as usize];
            self.ip = insn.ip();
            open = self.instruction(insn, bytes);
        }
        let end = d.tag + d.app_len();
        if d.ends_invalid {
            self.mark(end);
            self.e.bytes(&[0x0f, 0x0b]);
        } else if open {
            self.goto(end);
        }
    }

    /// Continues at application address `target` as the part's last code: falls through
    /// into the next part of a trace when that is where it goes, else leaves through a
    /// direct exit.
    fn goto(&mut self, target: u64) {
        if !matches!(self.follow, Some((next, _)) if next == target) {
            self.direct_exit_jump(target);
        }
    }

    /// Like `goto`, with more code of the part after it.
    fn goto_inner(&mut self, target: u64) {
        match self.follow {
            Some((next, label)) if next == target => {
                let _ = self.e.jmp_rel32_unaligned(label);
            }
            _ => self.direct_exit_jump(target),
        }
    }

    /// `add qword gs:[counters + offset], amount` where the flags are dead, else the same
    /// through a register and `lea`, which leaves the flags alone.
    fn counter(&mut self, add: &CounterAdd, scratch: Scratch) {
        let at = off::COUNTERS + add.offset as usize;
        let through = |e: &mut Emitter, r: u8| {
            e.load_gs(r, at);
            e.lea_add(r, add.amount);
            e.store_gs(at, r);
        };
        match scratch {
            Scratch::Flags => {
                self.e.bytes(&[0x65, 0x48, 0x81, 0x04, 0x25]);
                self.e.bytes(&(at as u32).to_le_bytes());
                self.e.bytes(&add.amount.to_le_bytes());
            }
            Scratch::Register(r) => through(self.e, r),
            Scratch::SpillRax => {
                self.e.store_gs(off::SPILL0, 0);
                through(self.e, 0);
                self.e.load_gs(0, off::SPILL0);
            }
        }
    }

    /// Leaves the cache through the dispatcher, which runs the call and comes back right
    /// after this sequence with the application state intact.
    fn clean_call(&mut self, site: u32) {
        self.resume_exit(ExitKind::CleanCall { site });
    }

    /// An exit to the dispatcher that comes back right after itself (the record's `stub`).
    fn resume_exit(&mut self, kind: ExitKind) {
        self.inline_exit(kind);
        let resume = self.e.offset();
        self.exits.last_mut().expect("just pushed").stub = offset16(resume);
    }

    fn mark(&mut self, app: u64) {
        self.map.push((self.e.offset() as u16, (app - self.tag) as u16));
    }

    /// A record for an exit of the fragment being built.
    fn new_record(&self, kind: ExitKind) -> &'static mut ExitRecord {
        ExitRecord::new(kind, self.e.ip() - self.e.offset() as u64)
    }

    fn record(&mut self, kind: ExitKind) -> u64 {
        let rec = self.new_record(kind);
        let addr = rec.address();
        self.exits.push(rec);
        addr
    }

    /// An exit the body reaches through a patchable `jmp rel32` to its stub.
    fn direct_exit_jump(&mut self, target: u64) {
        let stub = self.e.label();
        let field = self.e.jmp_rel32(stub);
        self.linkable(target, stub, field);
    }

    fn linkable(&mut self, target: u64, stub: Label, field: usize) {
        let rec = self.new_record(ExitKind::Direct { target });
        self.exits.push(rec);
        self.stubs.push(Some((stub, field)));
        let exit = self.exits.len() - 1;
        if let Some(counter) = self.correction() {
            self.corrections.push((exit, counter));
        }
        // Trace heads: targets of backward branches, and every exit of a trace.
        let head = self.opts.trace || target <= self.ip;
        if self.opts.trace_threshold > 0 && !self.opts.record && head {
            if let Some(counter) = self.take_counter() {
                self.counting.push((exit, counter));
            }
        }
    }

    /// A fresh engine counter, if the counter area has room.
    fn take_counter(&mut self) -> Option<u32> {
        let (next, end) = self.opts.counters;
        let at = next + 8 * self.taken;
        (at + 8 <= end).then(|| {
            self.taken += 1;
            at
        })
    }

    /// Merges the once-per-execution counts of a trace's parts (see [`MergedCounts`]) when
    /// that saves adds: with at least two parts and two counts, and room for the counters.
    fn merge_counts(&mut self, parts: &[Source<'_>]) -> Option<Box<MergedCounts>> {
        fn movable<'a>(p: &'a Source<'_>) -> impl Iterator<Item = &'a CounterAdd> {
            p.insertions.adds.iter().filter(|a| a.before.is_none())
        }
        if parts.len() < 2 || parts.iter().map(|p| movable(p).count()).sum::<usize>() < 2 {
            return None;
        }
        let adds: Box<[PartCounts]> = parts.iter().map(|p| movable(p).map(|a| (a.offset, a.amount)).collect()).collect();
        let taken = self.taken;
        let mut take = || self.take_counter();
        let entry = take();
        let corrections: Option<Box<[Option<u32>]>> =
            (0..parts.len() - 1).map(|i| if adds[i + 1..].iter().all(|a| a.is_empty()) { Some(None) } else { take().map(Some) }).collect();
        match (entry, corrections) {
            (Some(entry), Some(corrections)) => Some(Box::new(MergedCounts { entry, entry_offset: 0, corrections, adds })),
            _ => {
                self.taken = taken;
                None
            }
        }
    }

    /// The counter that ways out of the part being translated count, when the trace's
    /// counts are merged and later parts count something.
    fn correction(&self) -> Option<u32> {
        self.merged.as_ref()?.corrections.get(self.part_index).copied().flatten()
    }

    /// An exit whose stub sequence is placed right here in the body.
    fn inline_exit(&mut self, kind: ExitKind) {
        let rec = self.record(kind);
        self.stubs.push(None);
        self.e.exit_to_dispatcher(rec);
    }

    /// Translates one instruction; false when the block ends with it.
    fn instruction(&mut self, insn: &Instruction, bytes: &[u8]) -> bool {
        if let Some(what) = unsupported(insn) {
            // Replace the last mark: the exit stands for this instruction.
            self.inline_exit(ExitKind::Unsupported { at: insn.ip(), what });
            return false;
        }
        match insn.flow_control() {
            FlowControl::Next => {
                self.copy(insn, bytes);
                true
            }
            FlowControl::UnconditionalBranch => {
                self.goto(insn.near_branch_target());
                false
            }
            FlowControl::ConditionalBranch => {
                self.conditional(insn, bytes);
                false
            }
            FlowControl::Call if insn.code() == Code::Syscall => {
                self.inline_exit(ExitKind::Syscall { next: insn.next_ip() });
                false
            }
            FlowControl::Call if insn.is_call_near() => {
                self.e.push_imm64(insn.next_ip());
                self.goto(insn.near_branch_target());
                false
            }
            FlowControl::Return => {
                self.e.store_gs(off::S_RAX, 0);
                self.e.pop(0);
                if insn.op_count() == 1 {
                    self.e.lea_rsp(insn.immediate16() as i32);
                }
                self.lookup(Branch::Return);
                false
            }
            FlowControl::IndirectBranch | FlowControl::IndirectCall => {
                self.e.store_gs(off::S_RAX, 0);
                self.target_into_rax(insn, bytes);
                let branch = if insn.flow_control() == FlowControl::IndirectCall {
                    self.e.push_imm64(insn.next_ip());
                    Branch::Call
                } else {
                    Branch::Jump
                };
                self.lookup(branch);
                false
            }
            FlowControl::Interrupt => {
                // int3 and friends trap in the cache; the signal path translates the pc.
                self.e.bytes(bytes);
                self.mark(insn.next_ip());
                self.goto(insn.next_ip());
                false
            }
            FlowControl::Exception | FlowControl::Call | FlowControl::XbeginXabortXend => {
                // ud2 and instructions that fault in user mode: run them where they fault.
                self.e.bytes(bytes);
                false
            }
        }
    }

    fn copy(&mut self, insn: &Instruction, bytes: &[u8]) {
        let has_mem = (0..insn.op_count()).any(|i| insn.op_kind(i) == OpKind::Memory);
        if has_mem && insn.memory_segment() == Register::GS {
            self.gs_operand(insn);
        } else if insn.is_ip_rel_memory_operand() {
            if self.e.copy_rip_relative(insn, bytes).is_err() {
                self.far_rip_operand(insn, bytes);
            }
        } else {
            self.e.bytes(bytes);
        }
    }

    /// A RIP-relative operand out of rel32 reach of the cache: address it through a
    /// borrowed register holding the absolute address.
    fn far_rip_operand(&mut self, insn: &Instruction, bytes: &[u8]) {
        let addr = insn.ip_rel_memory_address();
        if insn.mnemonic() == Mnemonic::Lea && insn.op0_register().is_gpr64() {
            self.e.mov_imm64(gpr_number(insn.op0_register()), addr);
            return;
        }
        let [r] = self.scratch::<1>(insn);
        let moved = addressed_by(insn, r);
        let n = gpr_number(r);
        self.e.store_gs(off::SPILL0, n);
        self.e.mov_imm64(n, addr);
        if self.e.copy_addressed_by(insn, bytes, n).is_err() {
            self.e.encode(&moved).expect("register-based operand encodes anywhere");
        }
        self.e.load_gs(n, off::SPILL0);
    }

    /// A GS-relative operand: the application's GS base is emulated, so add it to the
    /// effective address in a borrowed register.
    fn gs_operand(&mut self, insn: &Instruction) {
        let [r1, r2] = self.scratch::<2>(insn);
        let (n1, n2) = (gpr_number(r1), gpr_number(r2));
        self.e.store_gs(off::SPILL0, n1);
        self.e.store_gs(off::SPILL1, n2);
        let lea = Instruction::with2(Code::Lea_r64_m, r1, memory_operand(insn, Register::None)).expect("lea of a memory operand");
        self.e.encode(&lea).expect("lea encodes anywhere");
        self.e.load_gs(n2, off::APP_GS);
        let sum = Instruction::with2(Code::Lea_r64_m, r1, iced_x86::MemoryOperand::with_base_index(r1, r2)).expect("lea");
        self.e.encode(&sum).expect("lea encodes anywhere");
        let mut moved = addressed_by(insn, r1);
        moved.set_segment_prefix(Register::None);
        self.e.encode(&moved).expect("register-based operand encodes anywhere");
        self.e.load_gs(n2, off::SPILL1);
        self.e.load_gs(n1, off::SPILL0);
    }

    /// `N` general registers the instruction does not use.
    fn scratch<const N: usize>(&mut self, insn: &Instruction) -> [Register; N] {
        let used: Vec<Register> = self.info.info(insn).used_registers().iter().map(|u| u.register().full_register()).collect();
        let mut out = [Register::None; N];
        let mut it = [Register::RBX, Register::RSI, Register::RDI, Register::R8, Register::R9, Register::R10, Register::R11, Register::RDX]
            .into_iter()
            .filter(|r| !used.contains(r));
        for o in &mut out {
            *o = it.next().expect("an instruction uses at most a few registers");
        }
        out
    }

    fn conditional(&mut self, insn: &Instruction, bytes: &[u8]) {
        let taken = insn.near_branch_target();
        let fall = insn.next_ip();
        if insn.condition_code() != ConditionCode::None && !insn.is_loopcc() && !insn.is_loop() {
            let cc = insn.condition_code() as u8 - 1;
            // In a trace whose recorded path takes the branch, the inverse condition leaves
            // and the taken path falls through (x86 condition codes pair up as n, n^1).
            let (cc, leave, stay) = match self.follow {
                Some((next, _)) if next == taken && taken != fall => (cc ^ 1, fall, taken),
                _ => (cc, taken, fall),
            };
            let stub = self.e.label();
            let field = self.e.jcc_rel32(cc, stub);
            self.linkable(leave, stub, field);
            self.goto(stay);
        } else {
            // loop/loopcc/jrcxz exist only as rel8: branch over the fall-through jump.
            let over = self.e.label();
            self.e.short(&bytes[..bytes.len() - 1], over);
            self.goto_inner(fall);
            self.e.bind(over);
            self.goto(taken);
        }
    }

    /// Loads the target of `jmp/call reg|mem` (`bytes`) into rax (the application's rax is in
    /// its scratch slot, and still live in rax for the operand's address).
    fn target_into_rax(&mut self, insn: &Instruction, bytes: &[u8]) {
        if insn.op0_kind() == OpKind::Register {
            let src = gpr_number(insn.op0_register());
            if src != 0 {
                self.e.bytes(&[0x48 | ((src >> 3) << 2), 0x89, 0xc0 | ((src & 7) << 3)]);
            }
            return;
        }
        if self.e.load_rax_from_branch_operand(insn, bytes).is_ok() {
            return;
        }
        let load =
            Instruction::with2(Code::Mov_r64_rm64, Register::RAX, memory_operand(insn, insn.segment_prefix())).expect("mov rax, m64");
        if self.e.encode(&load).is_err() {
            self.e.mov_imm64(0, insn.ip_rel_memory_address());
            self.e.bytes(&[0x48, 0x8b, 0x00]);
        }
    }

    /// Goes to the target in rax (the application's rax in `scratch_rax`): in a trace,
    /// first compare it with the recorded one and fall through on a match; else (or on a
    /// mismatch) look it up in the table.
    fn lookup(&mut self, branch: Branch) {
        if self.opts.record {
            // Every target of a recording copy is seen by the dispatcher.
            self.e.store_gs(off::IBL_TARGET, 0);
            return self.indirect_exit(branch);
        }
        let Some((next, _)) = self.follow else { return self.table_lookup(branch) };
        // rcx = target - recorded, without touching the flags.
        self.e.store_gs(off::S_RCX, 1);
        self.e.mov_imm64(1, next.wrapping_neg());
        self.e.bytes(&[0x48, 0x8d, 0x0c, 0x01]); // lea rcx, [rcx + rax]
        self.e.bytes(&[0xe3, 0x05]); // jrcxz over the jump to the mismatch path
        let mismatch = self.e.label();
        let _ = self.e.jmp_rel32_unaligned(mismatch);
        let correction = self.correction();
        self.mismatches.push((mismatch, branch, correction));
        self.e.load_gs(1, off::S_RCX);
        self.e.load_gs(0, off::S_RAX);
    }

    /// The in-cache lookup of the target in rax, with this fragment's exit on a miss.
    fn table_lookup(&mut self, branch: Branch) {
        if self.opts.count_ibl {
            self.e.store_gs(off::S_RCX, 1);
            self.e.load_gs(1, off::IBL_LOOKUPS);
            self.e.bytes(&[0x48, 0x8d, 0x49, 0x01]);
            self.e.store_gs(off::IBL_LOOKUPS, 1);
            self.e.load_gs(1, off::S_RCX);
        }
        self.e.bytes(arch::ibl_template());
        self.indirect_exit(branch);
    }

    /// Leaves for the dispatcher with the target in `ibl_target` and the application's rax
    /// in `scratch_rax` (the state a lookup miss leaves).
    fn indirect_exit(&mut self, branch: Branch) {
        let rec = self.record(ExitKind::Indirect(branch));
        self.stubs.push(None);
        self.e.mov_imm64(0, rec);
        self.e.jmp_gs(off::FCACHE_RETURN);
    }

    /// The counting stub of direct exit `exit`, placed here: counts in the per-thread
    /// counter at `counter`, leaves with `TraceHead` when the count reaches the threshold,
    /// else jumps to the exit's stub, which is placed right after it. Returns the offset of
    /// that jump's field.
    fn counting_stub(&mut self, exit: usize, counter: u32) -> usize {
        let ExitKind::Direct { target } = self.exits[exit].kind else { unreachable!("only direct exits count") };
        let exit_stub = self.e.label();
        let hot = self.e.label();
        let at = off::COUNTERS + counter as usize;
        self.e.store_gs(off::SPILL0, 1);
        self.e.load_gs(1, at);
        self.e.bytes(&[0x48, 0x8d, 0x49, 0x01]); // lea rcx, [rcx + 1]
        self.e.store_gs(at, 1);
        self.e.bytes(&[0x48, 0x8d, 0x89]); // lea rcx, [rcx - threshold]
        self.e.bytes(&(self.opts.trace_threshold as i32).wrapping_neg().to_le_bytes());
        self.e.short(&[0xe3], hot); // jrcxz
        self.e.load_gs(1, off::SPILL0);
        let field = self.e.jmp_rel32(exit_stub);
        self.e.bind(hot);
        self.e.load_gs(1, off::SPILL0);
        let rec = self.new_record(ExitKind::TraceHead { target });
        self.e.exit_to_dispatcher(rec.address());
        self.exits.push(rec);
        self.e.bind(exit_stub);
        field
    }

    fn finish(mut self, app_len: u32, insns: u32) -> Translated {
        for i in 0..self.mismatches.len() {
            let (label, branch, correction) = self.mismatches[i];
            self.e.bind(label);
            if let Some(counter) = correction {
                // rcx is free here (the application's is in its scratch slot).
                self.counter(&CounterAdd { before: None, offset: counter, amount: 1 }, Scratch::Register(1));
            }
            if self.opts.count_ibl {
                self.e.load_gs(1, off::S_RCX);
                self.table_lookup(branch);
            } else {
                // The application's rcx is in its scratch slot already: the lookup need not
                // get it back and save it again.
                self.e.bytes(arch::ibl_template_rcx_saved());
                self.indirect_exit(branch);
            }
        }
        for i in 0..self.stubs.len() {
            let Some((stub, mut field)) = self.stubs[i] else { continue };
            self.e.bind(stub);
            // An exit that leaves a trace with merged counts early counts that on every
            // way out, linked or not: the body's jump stays aimed here, and the jump after
            // the correction takes the part of the body's (linked, or through the counter).
            if let Some(&(_, counter)) = self.corrections.iter().find(|(exit, _)| *exit == i) {
                self.counter(&CounterAdd { before: None, offset: counter, amount: 1 }, Scratch::SpillRax);
                let on = self.e.label();
                field = self.e.jmp_rel32(on);
                self.e.bind(on);
            }
            // An exit that counts: the body's jump goes through the counter (the bypass
            // field), the counting stub's own jump is the one linking patches.
            let field = match self.counting.iter().find(|(exit, _)| *exit == i) {
                Some(&(_, counter)) => {
                    self.exits[i].bypass = offset16(field);
                    self.exits[i].count_stub = offset16(self.e.offset());
                    self.counting_stub(i, counter)
                }
                None => field,
            };
            self.exits[i].field = offset16(field);
            self.exits[i].stub = offset16(self.e.offset());
            self.e.exit_to_dispatcher(self.exits[i].address());
        }
        self.e.finish();
        Translated {
            code_len: self.e.code().len(),
            exits: self.exits,
            parts: self.parts,
            app_len,
            insns,
            counters: self.taken,
            merged: self.merged,
        }
    }
}

/// Why the engine cannot run `insn` yet, if it cannot.
fn unsupported(insn: &Instruction) -> Option<Unrunnable> {
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

/// The memory operand of `insn` (with `segment` as its segment override).
fn memory_operand(insn: &Instruction, segment: Register) -> iced_x86::MemoryOperand {
    iced_x86::MemoryOperand::new(
        insn.memory_base(),
        insn.memory_index(),
        insn.memory_index_scale(),
        insn.memory_displacement64() as i64,
        insn.memory_displ_size(),
        false,
        segment,
    )
}

/// `insn` with its memory operand replaced by `[r]`.
fn addressed_by(insn: &Instruction, r: Register) -> Instruction {
    let mut moved = *insn;
    moved.set_memory_base(r);
    moved.set_memory_index(Register::None);
    moved.set_memory_displacement64(0);
    moved.set_memory_displ_size(0);
    moved
}

/// The x86 number of a 64-bit general register (rax=0 … r15=15).
fn gpr_number(r: Register) -> u8 {
    let full = r.full_register();
    (full as u32 - Register::RAX as u32) as u8
}
