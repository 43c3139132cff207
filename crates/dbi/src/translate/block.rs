//! Translating a block (or the blocks of a trace) into cache code. Instructions that need no change are copied
//! byte for byte; control transfers, `syscall`, RIP-relative operands the cache cannot reach
//! and GS-relative operands are mangled, and every way out of the block gets an exit.

use crate::arch;
use crate::arch::context::off;
use crate::translate::counters::{
    cheapest_place, edge_place, gpr_number, scratch_before, CounterAdd, EdgeHit, Insertions, MergedCounts, PartCounts, Scratch,
};
use crate::translate::decode::{unsupported, Decoded};
use crate::translate::emitter::{Emitter, Label};
use crate::translate::exits::{offset16, Branch, ExitKind, ExitRecord};
use iced_x86::{Code, ConditionCode, FlowControl, Instruction, InstructionInfoFactory, Mnemonic, OpKind, Register};
use smallvec::SmallVec;

/// Bytes before a fragment's body: its entry for indirect branches, which restores rcx (the
/// lookup used it to jump through the table). Direct links enter after it.
pub const LOOKUP_PREFIX: usize = 9;

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
    /// Start with an exit that tells the dispatcher each time the block runs.
    pub watched: bool,
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
    if opts.watched {
        b.mark(b.tag);
        b.resume_exit(ExitKind::Watched);
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
        let edge = src.insertions.edge.map(|hit| (edge_place(&d.insns, self.info), hit));
        let mut open = true;
        for (i, insn) in d.insns.iter().enumerate() {
            self.mark(insn.ip());
            match edge {
                Some((Some((at, scratch)), hit)) if at == i => self.edge_hit(&hit, scratch),
                Some((None, hit)) if i == 0 => self.edge_hit_saving_flags(&hit),
                _ => {}
            }
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

    /// An edge hit where the flags are dead, through register `scratch` (free there) or rax
    /// spilled: `mov r32, prev; xor r32, cur; mov prev, cur >> 1; add byte [r + map], 1;
    /// adc byte [r + map], 0` (the `adc` keeps a counter that wraps from 255 at 1, AFL's
    /// NeverZero).
    fn edge_hit(&mut self, hit: &EdgeHit, scratch: Option<u8>) {
        let r = scratch.unwrap_or(0);
        if scratch.is_none() {
            self.e.store_gs(off::SPILL0, 0);
        }
        self.edge_update(hit, r);
        if scratch.is_none() {
            self.e.load_gs(0, off::SPILL0);
        }
    }

    /// An edge hit where the flags are live: rax is spilled, the flags are kept in it with
    /// `lahf` and `seto al` and put back with `add al, 0x7f` (which sets OF exactly when al
    /// was 1) and `sahf`.
    fn edge_hit_saving_flags(&mut self, hit: &EdgeHit) {
        self.e.store_gs(off::SPILL0, 0);
        self.e.bytes(&[0x9f, 0x0f, 0x90, 0xc0]); // lahf; seto al
        self.e.store_gs(off::SPILL1, 0);
        self.edge_update(hit, 0);
        self.e.load_gs(0, off::SPILL1);
        self.e.bytes(&[0x04, 0x7f, 0x9e]); // add al, 0x7f; sahf
        self.e.load_gs(0, off::SPILL0);
    }

    /// The edge hit's update through register `r` (its old value and the flags are lost).
    fn edge_update(&mut self, hit: &EdgeHit, r: u8) {
        let prev = off::COUNTERS + hit.prev as usize;
        let rex_b = if r >= 8 { 0x41 } else { 0 };
        let low = r & 7;
        // mov r32, gs:[prev] (zero-extends)
        self.e.bytes(&[0x65]);
        if rex_b != 0 {
            self.e.bytes(&[0x44]);
        }
        self.e.bytes(&[0x8b, 0x04 | low << 3, 0x25]);
        self.e.bytes(&(prev as u32).to_le_bytes());
        // xor r32, cur
        if rex_b != 0 {
            self.e.bytes(&[rex_b]);
        }
        self.e.bytes(&[0x81, 0xf0 | low]);
        self.e.bytes(&hit.cur.to_le_bytes());
        // mov qword gs:[prev], cur >> 1
        self.e.bytes(&[0x65, 0x48, 0xc7, 0x04, 0x25]);
        self.e.bytes(&(prev as u32).to_le_bytes());
        self.e.bytes(&(hit.cur >> 1).to_le_bytes());
        // add byte [r + map], 1; adc byte [r + map], 0 (r/m = r with a disp32; rsp and r12
        // need a SIB byte)
        for (op, imm) in [(0u8, 1u8), (2, 0)] {
            if rex_b != 0 {
                self.e.bytes(&[rex_b]);
            }
            if low == 4 {
                self.e.bytes(&[0x80, 0x84 | op << 3, 0x24]);
            } else {
                self.e.bytes(&[0x80, 0x80 | op << 3 | low]);
            }
            self.e.bytes(&hit.map.to_le_bytes());
            self.e.bytes(&[imm]);
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

#[cfg(test)]
mod tests {
    use super::*;

    /// The instructions a block of `code` at 0x1000 translates to with `edge`, up to its
    /// first exit.
    fn with_edge(code: &[u8], edge: EdgeHit) -> Vec<String> {
        let mut d = Decoded::default();
        d.decode(0x1000, code);
        let ins = Insertions { edge: Some(edge), ..Default::default() };
        let mut ws = Workspace::default();
        let at = 0x7000_0000;
        translate_parts(&[Source { decoded: &d, code, insertions: &ins }], at, BuildOptions::default(), &mut ws);
        let out = &ws.code()[LOOKUP_PREFIX..];
        let mut dec = iced_x86::Decoder::with_ip(64, out, at + LOOKUP_PREFIX as u64, iced_x86::DecoderOptions::NONE);
        dec.iter().take(11).map(|i| rewire_x86::decode::format_instruction(&i)).collect()
    }

    const HIT: EdgeHit = EdgeHit { cur: 0x1234, prev: 0x10, map: 0x4000_0000 };

    #[test]
    fn an_edge_hit_uses_the_register_the_block_overwrites_where_the_flags_are_dead() {
        for (code, r) in [(&[0x31, 0xc0, 0xc3][..], "eax"), (&[0x45, 0x31, 0xc0, 0xc3][..], "r8d"), (&[0x45, 0x31, 0xe4, 0xc3][..], "r12d")]
        {
            let got = with_edge(code, HIT);
            let prev = format!("gs:[{:X}h]", off::COUNTERS + 0x10);
            assert!(got[0].starts_with(&format!("mov {r},")) && got[0].contains(&prev), "{got:?}");
            assert_eq!(got[1], format!("xor {r},1234h"), "{got:?}");
            assert!(got[2].starts_with("mov qword ptr") && got[2].ends_with(",91Ah"), "{got:?}");
            let r64 = match r {
                "eax" => "rax",
                "r8d" => "r8",
                _ => "r12",
            };
            assert_eq!(got[3], format!("add byte ptr [{r64}+40000000h],1h"), "{got:?}");
            assert_eq!(got[4], format!("adc byte ptr [{r64}+40000000h],0h"), "{got:?}");
        }
    }

    #[test]
    fn an_edge_hit_keeps_live_flags_with_lahf_and_seto() {
        // jb reads CF at once: the flags are never dead in this block.
        let got = with_edge(&[0x72, 0x00], HIT);
        assert!(got[0].starts_with("mov gs:") && got[0].ends_with(",rax"), "{got:?}");
        assert_eq!(&got[1..3], ["lahf", "seto al"], "{got:?}");
        assert!(got[4].starts_with("mov eax,gs:"), "{got:?}");
        assert_eq!(got[7], "add byte ptr [rax+40000000h],1h", "{got:?}");
        assert_eq!(&got[10..11], ["add al,7Fh"], "{got:?}");
    }
}
