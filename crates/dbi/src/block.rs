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
        /// Why.
        why: &'static str,
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
    /// The first entry of a thread.
    Start {
        /// Where the thread starts.
        entry: u64,
    },
}

/// One exit of a fragment. Cache code refers to it by address, so it is boxed and lives as
/// long as its fragment.
#[derive(Debug)]
pub struct ExitRecord {
    /// What the exit does.
    pub kind: ExitKind,
    /// The fragment it belongs to.
    pub fragment: u32,
    /// Its index among the fragment's exits.
    pub index: u16,
    /// Cache address of the patchable rel32 field of the jump that leaves through this
    /// exit (0 when the exit cannot be linked).
    pub field: u64,
    /// Cache address of the exit stub (where the field points while unlinked).
    pub stub: u64,
    /// The fragment this exit is linked to.
    pub linked: Option<u32>,
}

impl ExitRecord {
    /// A record not yet attached to a fragment.
    pub fn new(kind: ExitKind) -> Box<ExitRecord> {
        Box::new(ExitRecord { kind, fragment: u32::MAX, index: 0, field: 0, stub: 0, linked: None })
    }

    /// Address of the record, as cache code loads it.
    pub fn address(&self) -> u64 {
        self as *const ExitRecord as u64
    }
}

/// A translated block, ready to be copied to the cache address it was built for. Its code
/// starts with the [`LOOKUP_PREFIX`].
#[derive(Debug)]
pub struct Translated {
    /// The cache code.
    pub code: Vec<u8>,
    /// Its exits.
    pub exits: Vec<Box<ExitRecord>>,
    /// `(cache offset, application offset)` of every application instruction, ascending.
    pub map: Vec<(u16, u16)>,
    /// Application bytes covered.
    pub app_len: u32,
    /// Application instructions covered.
    pub insns: u32,
}

/// Options that change the code blocks get.
#[derive(Debug, Clone, Copy, Default)]
pub struct BuildOptions {
    /// Count indirect-branch lookups in the thread context (for `--stats`).
    pub count_ibl: bool,
    /// Start with a verification exit (the block's page is written often).
    pub verify: bool,
}

struct Builder<'a> {
    e: Emitter,
    // Boxed: cache code embeds each record's address, which must not move as the list grows.
    #[allow(clippy::vec_box)]
    exits: Vec<Box<ExitRecord>>,
    /// For every exit, the label of its stub and the offset of the jump field aimed at it
    /// (`None` for exits whose stub sequence sits in the body).
    stubs: Vec<Option<(Label, usize)>>,
    map: Vec<(u16, u16)>,
    tag: u64,
    opts: BuildOptions,
    info: &'a mut InstructionInfoFactory,
}

/// The application instructions of one block, decoded.
#[derive(Debug, Clone)]
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
}

/// Decodes the block at `tag` from `code` (its bytes, up to the end of executable memory).
pub fn decode(tag: u64, code: &[u8]) -> Decoded {
    let limit = code.len().min(MAX_BLOCK_BYTES + 16);
    let mut decoder = Decoder::with_ip(64, &code[..limit], tag, DecoderOptions::NONE);
    let mut insns = Vec::with_capacity(16);
    let mut insn = Instruction::default();
    let mut len = 0;
    while insns.len() < MAX_BLOCK_INSNS && len < MAX_BLOCK_BYTES {
        decoder.decode_out(&mut insn);
        if insn.is_invalid() {
            return Decoded { tag, insns, ends_invalid: true };
        }
        len += insn.len();
        insns.push(insn);
        if insn.flow_control() != FlowControl::Next || unsupported(&insn).is_some() {
            break;
        }
    }
    Decoded { tag, insns, ends_invalid: false }
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

/// Translates a decoded block (`code` holds its bytes from the tag) into cache code for
/// address `at`, with a tool's insertions.
pub fn translate(d: &Decoded, code: &[u8], at: u64, ins: &Insertions, opts: BuildOptions, info: &mut InstructionInfoFactory) -> Translated {
    let adds = &ins.adds;
    let tag = d.tag;
    let mut b = Builder { e: Emitter::new(at), exits: Vec::new(), stubs: Vec::new(), map: Vec::new(), tag, opts, info };
    b.e.load_gs(1, off::S_RCX);
    debug_assert_eq!(b.e.offset(), LOOKUP_PREFIX);
    if opts.verify {
        b.mark(tag);
        b.resume_exit(ExitKind::Verify);
    }
    let cheapest = if adds.iter().any(|a| a.before.is_none()) { cheapest_place(&d.insns) } else { 0 };
    let placed: Vec<(usize, CounterAdd)> = adds.iter().map(|a| (a.before.unwrap_or(cheapest), *a)).collect();
    let mut open = true;
    for (i, insn) in d.insns.iter().enumerate() {
        b.mark(insn.ip());
        for &(_, site) in ins.calls.iter().filter(|(at, _)| *at == i) {
            b.clean_call(site);
        }
        for (_, add) in placed.iter().filter(|(at, _)| *at == i) {
            b.counter(add, flags_dead_before(&d.insns[i..]));
        }
        let bytes = &code[(insn.ip() - tag) as usize..(insn.next_ip() - tag) as usize];
        open = b.instruction(insn, bytes);
    }
    let app_len = d.app_len();
    if d.ends_invalid {
        b.mark(tag + app_len);
        b.e.bytes(&[0x0f, 0x0b]);
    } else if open {
        b.direct_exit_jump(tag + app_len);
    }
    let insns = d.insns.len().max(1) as u32;
    b.finish(app_len.max(1) as u32, insns)
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

/// Where a once-per-execution counter costs least: before the first instruction whose
/// flags are dead, else at the top.
fn cheapest_place(insns: &[Instruction]) -> usize {
    (0..insns.len()).find(|&i| flags_dead_before(&insns[i..])).unwrap_or(0)
}

impl Builder<'_> {
    /// `add qword gs:[counters + offset], amount` where the flags are dead, else the same
    /// through rax and `lea`, which leave the flags alone.
    fn counter(&mut self, add: &CounterAdd, flags_dead: bool) {
        let at = (off::COUNTERS + add.offset as usize) as u32;
        if flags_dead {
            self.e.bytes(&[0x65, 0x48, 0x81, 0x04, 0x25]);
            self.e.bytes(&at.to_le_bytes());
            self.e.bytes(&add.amount.to_le_bytes());
        } else {
            self.e.store_gs(off::SPILL0, 0);
            self.e.load_gs(0, at as usize);
            self.e.bytes(&[0x48, 0x8d, 0x80]);
            self.e.bytes(&add.amount.to_le_bytes());
            self.e.store_gs(at as usize, 0);
            self.e.load_gs(0, off::SPILL0);
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
        let resume = self.e.ip();
        self.exits.last_mut().expect("just pushed").stub = resume;
    }

    fn mark(&mut self, app: u64) {
        self.map.push((self.e.offset() as u16, (app - self.tag) as u16));
    }

    fn record(&mut self, kind: ExitKind) -> u64 {
        let rec = ExitRecord::new(kind);
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
        let rec = ExitRecord::new(ExitKind::Direct { target });
        self.exits.push(rec);
        self.stubs.push(Some((stub, field)));
    }

    /// An exit whose stub sequence is placed right here in the body.
    fn inline_exit(&mut self, kind: ExitKind) {
        let rec = self.record(kind);
        self.stubs.push(None);
        self.e.exit_to_dispatcher(rec);
    }

    /// Translates one instruction; false when the block ends with it.
    fn instruction(&mut self, insn: &Instruction, bytes: &[u8]) -> bool {
        if let Some(why) = unsupported(insn) {
            // Replace the last mark: the exit stands for this instruction.
            self.inline_exit(ExitKind::Unsupported { at: insn.ip(), why });
            return false;
        }
        match insn.flow_control() {
            FlowControl::Next => {
                self.copy(insn, bytes);
                true
            }
            FlowControl::UnconditionalBranch => {
                self.direct_exit_jump(insn.near_branch_target());
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
                self.direct_exit_jump(insn.near_branch_target());
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
                self.target_into_rax(insn);
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
                self.direct_exit_jump(insn.next_ip());
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
            if self.e.encode(insn).is_err() {
                self.far_rip_operand(insn);
            }
        } else {
            self.e.bytes(bytes);
        }
    }

    /// A RIP-relative operand out of rel32 reach of the cache: address it through a
    /// borrowed register holding the absolute address.
    fn far_rip_operand(&mut self, insn: &Instruction) {
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
        self.e.encode(&moved).expect("register-based operand encodes anywhere");
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
            let stub_taken = self.e.label();
            let field = self.e.jcc_rel32(cc, stub_taken);
            self.linkable(taken, stub_taken, field);
            self.direct_exit_jump(fall);
        } else {
            // loop/loopcc/jrcxz exist only as rel8: branch over the fall-through jump.
            let over = self.e.label();
            self.e.short(&bytes[..bytes.len() - 1], over);
            self.direct_exit_jump(fall);
            self.e.bind(over);
            self.direct_exit_jump(taken);
        }
    }

    /// Loads the target of `jmp/call reg|mem` into rax (the application's rax is in its
    /// scratch slot, and still live in rax for the operand's address).
    fn target_into_rax(&mut self, insn: &Instruction) {
        if insn.op0_kind() == OpKind::Register {
            let src = gpr_number(insn.op0_register());
            if src != 0 {
                self.e.bytes(&[0x48 | ((src >> 3) << 2), 0x89, 0xc0 | ((src & 7) << 3)]);
            }
            return;
        }
        let load =
            Instruction::with2(Code::Mov_r64_rm64, Register::RAX, memory_operand(insn, insn.segment_prefix())).expect("mov rax, m64");
        if self.e.encode(&load).is_err() {
            self.e.mov_imm64(0, insn.ip_rel_memory_address());
            self.e.bytes(&[0x48, 0x8b, 0x00]);
        }
    }

    /// The in-cache lookup of the target in rax, with this block's exit on a miss.
    fn lookup(&mut self, branch: Branch) {
        if self.opts.count_ibl {
            self.e.store_gs(off::S_RCX, 1);
            self.e.load_gs(1, off::IBL_LOOKUPS);
            self.e.bytes(&[0x48, 0x8d, 0x49, 0x01]);
            self.e.store_gs(off::IBL_LOOKUPS, 1);
            self.e.load_gs(1, off::S_RCX);
        }
        self.e.bytes(arch::ibl_template());
        let rec = self.record(ExitKind::Indirect(branch));
        self.stubs.push(None);
        self.e.mov_imm64(0, rec);
        self.e.jmp_gs(off::FCACHE_RETURN);
    }

    fn finish(mut self, app_len: u32, insns: u32) -> Translated {
        let base = self.e.ip() - self.e.offset() as u64;
        let mut fields = Vec::with_capacity(self.exits.len());
        for (i, linkable) in std::mem::take(&mut self.stubs).into_iter().enumerate() {
            if let Some((stub, field)) = linkable {
                self.e.bind(stub);
                let stub_addr = self.e.ip();
                let rec = self.exits[i].address();
                self.e.exit_to_dispatcher(rec);
                fields.push((i, base + field as u64, stub_addr));
            }
        }
        for (i, field, stub) in fields {
            self.exits[i].field = field;
            self.exits[i].stub = stub;
        }
        Translated { code: self.e.finish(), exits: self.exits, map: self.map, app_len, insns }
    }
}

/// Why the engine cannot run `insn` yet, if it cannot.
fn unsupported(insn: &Instruction) -> Option<&'static str> {
    match insn.mnemonic() {
        Mnemonic::Rdgsbase | Mnemonic::Wrgsbase | Mnemonic::Swapgs => return Some("GS base instructions (the engine owns GS)"),
        Mnemonic::Sysenter | Mnemonic::Sysexit => return Some("sysenter"),
        Mnemonic::Int if insn.immediate8() == 0x80 => return Some("32-bit system calls (int 0x80)"),
        Mnemonic::Xbegin => return Some("transactional memory (xbegin)"),
        Mnemonic::Iret | Mnemonic::Iretd | Mnemonic::Iretq => return Some("iret"),
        _ => {}
    }
    if insn.flow_control() == FlowControl::Return && insn.mnemonic() != Mnemonic::Ret {
        return Some("far returns");
    }
    if matches!(insn.code(), Code::Jmp_m1664 | Code::Jmp_m1632 | Code::Jmp_m1616 | Code::Call_m1664 | Code::Call_m1632 | Code::Call_m1616) {
        return Some("far jumps and calls");
    }
    if (0..insn.op_count()).any(|i| insn.op_kind(i) == OpKind::Register && insn.op_register(i) == Register::GS)
        && insn.op0_register() == Register::GS
    {
        return Some("loading the GS selector");
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
    if implicit_mem && insn.segment_prefix() == Register::GS {
        return Some("GS-relative string instructions");
    }
    if matches!(insn.flow_control(), FlowControl::IndirectBranch | FlowControl::IndirectCall)
        && insn.op0_kind() == OpKind::Memory
        && insn.memory_segment() == Register::GS
    {
        return Some("GS-relative indirect branches");
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
