//! Moving a run of instructions to another address without changing what it does.
//!
//! Unchanged instructions are copied byte for byte. RIP-relative memory operands get a new
//! displacement (a far `lea` becomes `mov reg, imm64`). Direct branches are re-encoded in their
//! long form, or as an absolute jump when the target is out of rel32 reach; a branch whose
//! target lies inside the window goes to the relocated copy of that instruction. `loop`,
//! `loopcc`, `jrcxz` and `jecxz` (rel8 only) keep their opcode and hop over a short jump to a
//! long one. Layout is decided once, from sizes that do not depend on position.

use crate::emit::{jmp_abs, jmp_rel32, push_jmp, rel32, rel32_reaches, JMP_ABS_LEN};
use crate::{format_instruction, RelocReason, X86Error};
use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind, Register};

/// A relocated run of instructions.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Relocated {
    /// The new code, to be placed at the address it was relocated for.
    pub code: Vec<u8>,
    /// Offset in `code` of each original instruction's relocated form (same order as input).
    pub starts: Vec<u32>,
    /// For every instruction boundary in `code`: its offset and the original address a thread
    /// stopped there would be at. Sorted by offset. Used to move threads between the original
    /// and the relocated copy, and to translate addresses back.
    pub map: Vec<(u32, u64)>,
}

impl Relocated {
    /// The original address equivalent to `offset` in the new code, if it is a boundary.
    pub fn original_at(&self, offset: u32) -> Option<u64> {
        self.map.binary_search_by_key(&offset, |e| e.0).ok().map(|i| self.map[i].1)
    }
}

/// How one original instruction is rewritten.
#[derive(Debug, Clone, Copy)]
enum Piece {
    Copy,
    RipRel { disp_at: usize, target: u64 },
    LeaAbs { reg: Register, target: u64 },
    Jmp { target: u64 },
    Jcc { cc: u8, target: u64 },
    Call { target: u64 },
    LoopLike { target: u64 },
}

/// Relocates `insns` (decoded from `bytes`, which start at `insns[0].ip()`) to `new_ip`.
/// With `continue_at`, a jump to it is appended (the code after the window).
pub fn relocate(insns: &[Instruction], bytes: &[u8], new_ip: u64, continue_at: Option<u64>) -> Result<Relocated, X86Error> {
    let Some(first) = insns.first() else {
        return Ok(Relocated { code: Vec::new(), starts: Vec::new(), map: Vec::new() });
    };
    let window = first.ip()..insns.last().map_or(first.ip(), |i| i.next_ip());
    let boundaries: Vec<u64> = insns.iter().map(|i| i.ip()).collect();
    let pieces = insns
        .iter()
        .map(|i| {
            let own = &bytes[(i.ip() - window.start) as usize..(i.next_ip() - window.start) as usize];
            classify(i, own, new_ip, &window, &boundaries)
        })
        .collect::<Result<Vec<_>, _>>()?;

    // Pass 1: sizes (position independent), hence offsets.
    let mut starts = Vec::with_capacity(insns.len());
    let mut size = 0usize;
    for (insn, piece) in insns.iter().zip(&pieces) {
        starts.push(size as u32);
        size += piece_len(insn, piece, new_ip, &window);
    }
    let new_addr_of = |target: u64| -> u64 {
        let idx = boundaries.binary_search(&target).expect("classify checked the target is a boundary");
        new_ip + starts[idx] as u64
    };
    let resolve = |target: u64| {
        if window.contains(&target) {
            new_addr_of(target)
        } else {
            target
        }
    };

    // Pass 2: emit.
    let mut code = Vec::with_capacity(size + JMP_ABS_LEN);
    let mut map = Vec::with_capacity(insns.len() + 4);
    for (insn, piece) in insns.iter().zip(&pieces) {
        let off = code.len();
        let at = new_ip + off as u64;
        let orig = &bytes[(insn.ip() - window.start) as usize..(insn.next_ip() - window.start) as usize];
        map.push((off as u32, insn.ip()));
        match *piece {
            Piece::Copy => code.extend_from_slice(orig),
            Piece::RipRel { disp_at, target } => {
                code.extend_from_slice(orig);
                let disp = rel32(at + orig.len() as u64, target).expect("reach checked");
                code[off + disp_at..off + disp_at + 4].copy_from_slice(&disp.to_le_bytes());
            }
            Piece::LeaAbs { reg, target } => {
                let n = reg.number() as u8;
                code.extend_from_slice(&[0x48 | (n >> 3), 0xb8 | (n & 7)]);
                code.extend_from_slice(&target.to_le_bytes());
            }
            Piece::Jmp { target } => push_jump(&mut code, at, resolve(target), is_far(target, new_ip, &window)),
            Piece::Jcc { cc, target } => {
                let to = resolve(target);
                if !is_far(target, new_ip, &window) {
                    code.extend_from_slice(&[0x0f, 0x80 | cc]);
                    code.extend_from_slice(&rel32(at + 6, to).expect("reach checked").to_le_bytes());
                } else {
                    code.extend_from_slice(&[0x70 | (cc ^ 1), JMP_ABS_LEN as u8]);
                    map.push(((off + 2) as u32, target));
                    code.extend_from_slice(&jmp_abs(to));
                }
            }
            Piece::Call { target } => {
                if !is_far(target, new_ip, &window) {
                    code.push(0xe8);
                    code.extend_from_slice(&rel32(at + 5, target).expect("reach checked").to_le_bytes());
                } else {
                    // call [rip+2]; jmp +8; .quad target
                    code.extend_from_slice(&[0xff, 0x15, 0x02, 0, 0, 0, 0xeb, 0x08]);
                    map.push(((off + 6) as u32, insn.next_ip()));
                    code.extend_from_slice(&target.to_le_bytes());
                }
            }
            Piece::LoopLike { target } => {
                // <prefixes+opcode> rel8=2; jmp short over; jmp target
                let far = is_far(target, new_ip, &window);
                code.extend_from_slice(&orig[..orig.len() - 1]);
                code.push(2);
                map.push((code.len() as u32, insn.next_ip()));
                code.extend_from_slice(&[0xeb, if far { JMP_ABS_LEN as u8 } else { 5 }]);
                map.push((code.len() as u32, target));
                let at = new_ip + code.len() as u64;
                push_jump(&mut code, at, resolve(target), far);
            }
        }
        debug_assert_eq!(code.len() - off, piece_len(insn, piece, new_ip, &window));
    }
    if let Some(next) = continue_at {
        map.push((code.len() as u32, next));
        let at = new_ip + code.len() as u64;
        push_jmp(&mut code, at, next);
    }
    Ok(Relocated { code, starts, map })
}

/// A branch target outside the window and out of rel32 reach of the new code: it gets the
/// absolute form. Decided from `new_ip` alone so that sizes and emission always agree.
fn is_far(target: u64, new_ip: u64, window: &std::ops::Range<u64>) -> bool {
    !window.contains(&target) && !rel32_reaches(new_ip, target)
}

fn push_jump(code: &mut Vec<u8>, at: u64, to: u64, far: bool) {
    match far {
        true => code.extend_from_slice(&jmp_abs(to)),
        false => code.extend_from_slice(&jmp_rel32(at, to).expect("near target")),
    }
}

fn piece_len(insn: &Instruction, piece: &Piece, new_ip: u64, window: &std::ops::Range<u64>) -> usize {
    let far = |t: u64| is_far(t, new_ip, window);
    match *piece {
        Piece::Copy | Piece::RipRel { .. } => insn.len(),
        Piece::LeaAbs { .. } => 10,
        Piece::Jmp { target } => {
            if far(target) {
                JMP_ABS_LEN
            } else {
                5
            }
        }
        Piece::Jcc { target, .. } => {
            if far(target) {
                2 + JMP_ABS_LEN
            } else {
                6
            }
        }
        Piece::Call { target } => {
            if far(target) {
                16
            } else {
                5
            }
        }
        Piece::LoopLike { target } => insn.len() + 2 + if far(target) { JMP_ABS_LEN } else { 5 },
    }
}

fn classify(insn: &Instruction, bytes: &[u8], new_ip: u64, window: &std::ops::Range<u64>, boundaries: &[u64]) -> Result<Piece, X86Error> {
    let refuse = |reason| X86Error::Unrelocatable { address: insn.ip(), instruction: format_instruction(insn), reason };
    let branch_target = || -> Result<u64, X86Error> {
        let t = insn.near_branch_target();
        if window.contains(&t) && !boundaries.contains(&t) {
            return Err(refuse(RelocReason::BranchIntoInstruction));
        }
        Ok(t)
    };
    match insn.flow_control() {
        FlowControl::UnconditionalBranch if insn.op0_kind() == OpKind::NearBranch64 => return Ok(Piece::Jmp { target: branch_target()? }),
        FlowControl::ConditionalBranch if insn.op0_kind() == OpKind::NearBranch64 => {
            let target = branch_target()?;
            return Ok(match insn.mnemonic() {
                Mnemonic::Loop | Mnemonic::Loope | Mnemonic::Loopne | Mnemonic::Jrcxz | Mnemonic::Jecxz => Piece::LoopLike { target },
                _ => Piece::Jcc { cc: insn.condition_code() as u8 - 1, target },
            });
        }
        FlowControl::Call if insn.op0_kind() == OpKind::NearBranch64 => {
            let target = insn.near_branch_target();
            if window.contains(&target) {
                return Err(refuse(RelocReason::CallIntoWindow));
            }
            return Ok(Piece::Call { target });
        }
        FlowControl::XbeginXabortXend if insn.mnemonic() == Mnemonic::Xbegin => return Err(refuse(RelocReason::Xbegin)),
        _ => {}
    }
    if !insn.is_ip_rel_memory_operand() {
        return Ok(Piece::Copy);
    }
    let target = insn.ip_rel_memory_address();
    if rel32_reaches(new_ip, target) {
        return Ok(Piece::RipRel { disp_at: displacement_offset(bytes, insn.ip()), target });
    }
    if insn.mnemonic() == Mnemonic::Lea && insn.op0_register().size() == 8 {
        return Ok(Piece::LeaAbs { reg: insn.op0_register().full_register(), target });
    }
    Err(refuse(if insn.mnemonic() == Mnemonic::Lea { RelocReason::UnsupportedRipUse } else { RelocReason::MemoryOutOfReach }))
}

fn displacement_offset(bytes: &[u8], ip: u64) -> usize {
    let mut d = Decoder::with_ip(64, bytes, ip, DecoderOptions::NONE);
    let i = d.decode();
    d.get_constant_offsets(&i).displacement_offset()
}
