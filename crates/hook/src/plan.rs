//! Deciding whether the code at an address can be overwritten by a jump, and which bytes.

use crate::{HookError, Refusal};
use iced_x86::{Decoder, DecoderError, DecoderOptions, FlowControl, Instruction, Mnemonic, OpKind};

/// How far past the patched window branches back into it are looked for when the function's
/// extent is unknown.
const SCAN_LIMIT: u64 = 4096;

/// The bytes a patch overwrites at a target, and the instructions they hold.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The patched address.
    pub target: u64,
    /// The whole instructions covering the patch.
    pub insns: Vec<Instruction>,
    /// Their bytes.
    pub bytes: Vec<u8>,
}

impl Plan {
    /// Length of the window (at least the patch length).
    pub fn window_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Plans a `patch_len`-byte patch at `target`. `code` holds the readable bytes from
/// `code_start` (the function's start when known, else `target`) on, ideally through the
/// function's end; `function_end` is that end, from the function's symbol, when known.
pub fn plan(code: &[u8], code_start: u64, target: u64, function_end: Option<u64>, patch_len: usize) -> Result<Plan, HookError> {
    let skip = (target - code_start) as usize;
    let whole = code;
    let code = &code[skip.min(code.len())..];
    let mut decoder = Decoder::with_ip(64, code, target, DecoderOptions::NONE);
    let mut insns = Vec::with_capacity(4);
    let mut covered = 0usize;
    // Where the function's code ends inside the window, if it does (after an unconditional
    // control transfer, or at the symbol's end): only padding may follow there.
    let mut code_end: Option<u64> = function_end.filter(|&e| e > target && e < target + patch_len as u64);
    while covered < patch_len {
        let at = target + covered as u64;
        let insn = decode_at(&mut decoder).map_err(|reason| match reason {
            Refusal::TooShort { .. } => too_short(target, code_end.unwrap_or(at), patch_len),
            r => HookError::unhookable(target, None, at, r),
        })?;
        if let Some(end) = code_end.filter(|&end| insn.ip() >= end && !rewire_x86::is_padding(&insn)) {
            return Err(too_short(target, end, patch_len));
        }
        if insn.mnemonic() == Mnemonic::Syscall {
            return Err(HookError::unhookable(target, Some(&insn), insn.ip(), Refusal::SyscallInWindow));
        }
        if code_end.is_none() && ends_flow(&insn) && insn.next_ip() < target + patch_len as u64 {
            code_end = Some(insn.next_ip());
        }
        covered += insn.len();
        insns.push(insn);
    }
    let window = target..target + covered as u64;
    scan_for_branches_into(&window, whole, code_start, function_end)?;
    Ok(Plan { target, insns, bytes: code[..covered].to_vec() })
}

fn too_short(target: u64, end: u64, needed: usize) -> HookError {
    HookError::unhookable(target, None, end, Refusal::TooShort { available: end - target, needed })
}

fn decode_at(decoder: &mut Decoder<'_>) -> Result<Instruction, Refusal> {
    if !decoder.can_decode() {
        return Err(Refusal::TooShort { available: 0, needed: 0 });
    }
    let insn = decoder.decode();
    match decoder.last_error() {
        DecoderError::None => Ok(insn),
        DecoderError::NoMoreBytes => Err(Refusal::TooShort { available: 0, needed: 0 }),
        _ => Err(Refusal::InvalidInstruction),
    }
}

/// Instructions after which execution never falls through.
fn ends_flow(insn: &Instruction) -> bool {
    matches!(
        insn.flow_control(),
        FlowControl::Return | FlowControl::UnconditionalBranch | FlowControl::IndirectBranch | FlowControl::Exception
    ) || matches!(insn.mnemonic(), Mnemonic::Int3 | Mnemonic::Hlt | Mnemonic::Ud2)
}

/// Refuses when a direct branch of the function outside the window lands strictly inside
/// it. A branch to the target itself is fine: it reaches the hook, as a call or a probe would.
fn scan_for_branches_into(window: &std::ops::Range<u64>, code: &[u8], code_start: u64, function_end: Option<u64>) -> Result<(), HookError> {
    let target = window.start;
    let limit = function_end.unwrap_or(window.end + SCAN_LIMIT).min(code_start + code.len() as u64);
    let scanned = &code[..(limit - code_start) as usize];
    if !may_branch_into(scanned, code_start, window) {
        return Ok(());
    }
    let mut decoder = Decoder::with_ip(64, code, code_start, DecoderOptions::NONE);
    let mut previous_ended_flow = false;
    while decoder.ip() < limit {
        let Ok(insn) = decode_at(&mut decoder) else {
            return Ok(());
        };
        if function_end.is_none() && insn.ip() >= window.end && previous_ended_flow && rewire_x86::is_padding(&insn) {
            return Ok(()); // the function's end, as far as can be told
        }
        previous_ended_flow = ends_flow(&insn);
        if matches!(insn.op0_kind(), OpKind::NearBranch64) && !window.contains(&insn.ip()) {
            let to = insn.near_branch_target();
            if to > target && to < window.end {
                return Err(HookError::unhookable(target, Some(&insn), insn.ip(), Refusal::BranchIntoWindow { from: insn.ip(), to }));
            }
        }
    }
    Ok(())
}

/// A cheap superset of the decoding scan: true when some byte of `code` (at `base`) is the
/// opcode of a direct branch (jcc, jmp, call, loop, jrcxz; short or near) whose displacement
/// would land strictly inside `window`. Every real branch has its opcode at some byte, so a
/// false answer proves there is none; a true one is settled by decoding.
fn may_branch_into(code: &[u8], base: u64, window: &std::ops::Range<u64>) -> bool {
    let inside = |to: u64| to > window.start && to < window.end;
    let rel8 = |p: usize| code.get(p + 1).map(|&d| (base + p as u64 + 2).wrapping_add(d as i8 as i64 as u64));
    let rel32 = |p: usize, len: usize| {
        code.get(p + len - 4..p + len)
            .map(|d| (base + (p + len) as u64).wrapping_add(i32::from_le_bytes(d.try_into().expect("4")) as i64 as u64))
    };
    (0..code.len()).any(|p| {
        let to = match code[p] {
            0x70..=0x7f | 0xe0..=0xe3 | 0xeb => rel8(p),
            0xe8 | 0xe9 => rel32(p, 5),
            0x0f if code.get(p + 1).is_some_and(|b| (0x80..=0x8f).contains(b)) => rel32(p, 6),
            _ => None,
        };
        to.is_some_and(inside)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn refusal(r: Result<Plan, HookError>) -> Refusal {
        match r {
            Err(HookError::Unhookable { reason, .. }) => reason,
            other => panic!("expected a refusal, got {other:?}"),
        }
    }

    #[test]
    fn tiny_function_followed_by_padding_is_hookable() {
        // xor eax,eax; ret; nop dword [rax+rax]; (next function) push rbp
        let code = [0x31, 0xc0, 0xc3, 0x0f, 0x1f, 0x44, 0x00, 0x00, 0x55];
        let p = plan(&code, 0x1000, 0x1000, Some(0x1003), 5).unwrap();
        assert_eq!(p.window_len(), 8);
    }

    #[test]
    fn tiny_function_followed_by_code_is_refused() {
        let code = [0x31, 0xc0, 0xc3, 0x55, 0x48, 0x89, 0xe5, 0xc3];
        assert_eq!(refusal(plan(&code, 0x1000, 0x1000, Some(0x1003), 5)), Refusal::TooShort { available: 3, needed: 5 });
        assert_eq!(refusal(plan(&code, 0x1000, 0x1000, None, 5)), Refusal::TooShort { available: 3, needed: 5 });
    }

    #[test]
    fn branch_back_into_the_window_is_refused() {
        // push rbp; push rbx; push r12; (window ends at 4) dec ecx; jnz -> 0x1001
        let code = [0x55, 0x53, 0x41, 0x54, 0x41, 0x55, 0xff, 0xc9, 0x75, 0xf7, 0xc3];
        assert_eq!(refusal(plan(&code, 0x1000, 0x1000, Some(0x100b), 5)), Refusal::BranchIntoWindow { from: 0x1008, to: 0x1001 });
        // A branch to the very start is a tail call into the hook: fine.
        let code = [0x55, 0x53, 0x41, 0x54, 0x41, 0x55, 0xff, 0xc9, 0x75, 0xf6, 0xc3];
        assert!(plan(&code, 0x1000, 0x1000, Some(0x100b), 5).is_ok());
    }

    #[test]
    fn syscall_inside_the_window_is_refused() {
        // mov eax,39; syscall ... needs 5: mov r32,imm32 is 5 bytes: fine
        assert!(plan(&[0xb8, 39, 0, 0, 0, 0x0f, 0x05, 0xc3], 0x1000, 0x1000, None, 5).is_ok());
        // xor eax,eax; syscall; ret
        assert_eq!(refusal(plan(&[0x31, 0xc0, 0x0f, 0x05, 0xc3, 0xcc, 0xcc], 0x1000, 0x1000, None, 5)), Refusal::SyscallInWindow);
    }
}
