//! Proof by decoding that a relocated run does what the original did: same operation, same
//! absolute branch target, same absolute memory operand address.

use crate::{format_instruction, Relocated};
use iced_x86::{Decoder, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind};

/// Checks every instruction of `original` (decoded from `original_bytes`) against its
/// relocated form in `relocated`, placed at `new_ip`. The error names the first mismatch.
pub fn check_equivalent(original: &[Instruction], original_bytes: &[u8], relocated: &Relocated, new_ip: u64) -> Result<(), String> {
    let Some(first) = original.first() else {
        return Ok(());
    };
    let window = first.ip()..original.last().map_or(0, |i| i.next_ip());
    let code = &relocated.code;
    let at = |addr: u64| -> Option<Instruction> {
        let off = addr.checked_sub(new_ip)? as usize;
        let i = Decoder::with_ip(64, code.get(off..)?, addr, DecoderOptions::NONE).decode();
        (!i.is_invalid()).then_some(i)
    };
    let pointer_at = |addr: u64| -> Option<u64> {
        let off = addr.checked_sub(new_ip)? as usize;
        Some(u64::from_le_bytes(code.get(off..off + 8)?.try_into().ok()?))
    };
    // The address an absolute jump/call through [rip+x] reaches.
    let indirect_target = |i: &Instruction| i.is_ip_rel_memory_operand().then(|| pointer_at(i.ip_rel_memory_address())).flatten();
    let moved = |target: u64| -> u64 {
        match original.iter().position(|o| o.ip() == target) {
            Some(k) if window.contains(&target) => new_ip + relocated.starts[k] as u64,
            _ => target,
        }
    };

    for (k, orig) in original.iter().enumerate() {
        let addr = new_ip + relocated.starts[k] as u64;
        let fail = |what: &str| Err(format!("{} at {:#x} relocated to {addr:#x}: {what}", format_instruction(orig), orig.ip()));
        let Some(new) = at(addr) else {
            return fail("relocated bytes do not decode");
        };
        let direct = orig.op0_kind() == OpKind::NearBranch64;
        match orig.flow_control() {
            FlowControl::UnconditionalBranch | FlowControl::Call | FlowControl::ConditionalBranch if direct => {
                let want = moved(orig.near_branch_target());
                let ok = match orig.mnemonic() {
                    Mnemonic::Loop | Mnemonic::Loope | Mnemonic::Loopne | Mnemonic::Jrcxz | Mnemonic::Jecxz => {
                        // op +2 ; jmp short over ; jmp target
                        let hop = at(new.next_ip());
                        let long = at(new.next_ip() + 2);
                        new.mnemonic() == orig.mnemonic()
                            && new.near_branch_target() == new.next_ip() + 2
                            && hop.is_some_and(|h| {
                                h.mnemonic() == Mnemonic::Jmp && Some(h.near_branch_target()) == long.map(|l| unit_end(&l))
                            })
                            && long.is_some_and(|l| reaches(&l, want, &indirect_target))
                    }
                    _ if new.mnemonic() == orig.mnemonic() => reaches(&new, want, &indirect_target),
                    _ if orig.flow_control() == FlowControl::ConditionalBranch => {
                        // inverted jcc over an absolute jump
                        let long = at(new.near_branch_target().wrapping_sub(14));
                        let mut inverted = *orig;
                        inverted.negate_condition_code();
                        new.condition_code() == inverted.condition_code()
                            && long.is_some_and(|l| l.ip() == new.next_ip() && reaches(&l, want, &indirect_target))
                    }
                    _ => false,
                };
                if !ok {
                    return fail(&format!("does not reach {want:#x} as the original does"));
                }
            }
            _ if orig.is_ip_rel_memory_operand() => {
                let want = orig.ip_rel_memory_address();
                let same = new.mnemonic() == orig.mnemonic() && new.is_ip_rel_memory_operand() && new.ip_rel_memory_address() == want;
                let lea_as_mov = orig.mnemonic() == Mnemonic::Lea
                    && new.mnemonic() == Mnemonic::Mov
                    && new.op0_register() == orig.op0_register()
                    && new.immediate64() == want;
                if !(same || lea_as_mov) {
                    return fail(&format!("no longer addresses {want:#x}"));
                }
            }
            _ => {
                let from = (orig.ip() - window.start) as usize;
                let to = relocated.starts[k] as usize;
                if code.get(to..to + orig.len()) != original_bytes.get(from..from + orig.len()) {
                    return fail("bytes differ although nothing needed rewriting");
                }
            }
        }
    }
    Ok(())
}

/// Where the code after a jump continues: past its 8-byte pointer for an absolute jump.
fn unit_end(jump: &Instruction) -> u64 {
    jump.next_ip() + if jump.op0_kind() == OpKind::Memory { 8 } else { 0 }
}

/// True when the branch `i` goes to `want`, directly or through an absolute pointer.
fn reaches(i: &Instruction, want: u64, indirect_target: &dyn Fn(&Instruction) -> Option<u64>) -> bool {
    match i.op0_kind() {
        OpKind::NearBranch64 => i.near_branch_target() == want,
        OpKind::Memory => indirect_target(i) == Some(want),
        _ => false,
    }
}
