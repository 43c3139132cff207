//! The jumps both engines write.

/// Length of `jmp rel32`.
pub const JMP_REL32_LEN: usize = 5;
/// Length of the absolute jump `jmp [rip+0]; .quad target`.
pub const JMP_ABS_LEN: usize = 14;

/// Distance kept free of the ±2 GiB limit so that code laid out after the first byte still
/// reaches (covers any trampoline or block this crate emits).
const REACH_MARGIN: i64 = 1 << 20;

/// True when a rel32 displacement from code at `from` reaches `to`, with room for the code
/// that follows `from` to reach it too.
pub fn rel32_reaches(from: u64, to: u64) -> bool {
    let delta = to.wrapping_sub(from) as i64;
    (-(i32::MAX as i64) + REACH_MARGIN..=i32::MAX as i64 - REACH_MARGIN).contains(&delta)
}

/// The rel32 displacement for an instruction ending at `next_ip` that targets `to`, if in range.
pub fn rel32(next_ip: u64, to: u64) -> Option<i32> {
    i32::try_from(to.wrapping_sub(next_ip) as i64).ok()
}

/// `jmp rel32` placed at `at`, jumping to `to`; `None` when out of reach.
pub fn jmp_rel32(at: u64, to: u64) -> Option<[u8; JMP_REL32_LEN]> {
    let d = rel32(at + JMP_REL32_LEN as u64, to)?.to_le_bytes();
    Some([0xe9, d[0], d[1], d[2], d[3]])
}

/// `jmp qword [rip+0]` followed by the 8-byte target: reaches anywhere, clobbers nothing.
pub fn jmp_abs(to: u64) -> [u8; JMP_ABS_LEN] {
    let mut out = [0u8; JMP_ABS_LEN];
    out[..6].copy_from_slice(&[0xff, 0x25, 0, 0, 0, 0]);
    out[6..].copy_from_slice(&to.to_le_bytes());
    out
}

/// Appends the shortest jump from `at` to `to` (rel32 when in reach, else absolute).
pub fn push_jmp(out: &mut Vec<u8>, at: u64, to: u64) {
    match jmp_rel32(at, to) {
        Some(j) if rel32_reaches(at, to) => out.extend_from_slice(&j),
        _ => out.extend_from_slice(&jmp_abs(to)),
    }
}

/// Length of [`indirect_jmp_stub`].
pub const INDIRECT_STUB_LEN: usize = 16;
/// Offset of the 8-byte pointer inside [`indirect_jmp_stub`] (8-aligned when the stub is).
pub const INDIRECT_STUB_PTR: usize = 8;

/// A 16-byte stub `jmp qword [rip+2]; int3; int3; .quad to`: the pointer sits 8-aligned at
/// [`INDIRECT_STUB_PTR`], so re-pointing the stub is one atomic 8-byte store.
pub fn indirect_jmp_stub(to: u64) -> [u8; INDIRECT_STUB_LEN] {
    let mut out = [0u8; INDIRECT_STUB_LEN];
    out[..8].copy_from_slice(&[0xff, 0x25, 0x02, 0, 0, 0, 0xcc, 0xcc]);
    out[8..].copy_from_slice(&to.to_le_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions, Mnemonic};

    #[test]
    fn jumps_decode_to_their_targets() {
        let j = jmp_rel32(0x1000, 0x2000).unwrap();
        let i = Decoder::with_ip(64, &j, 0x1000, DecoderOptions::NONE).decode();
        assert_eq!((i.mnemonic(), i.near_branch_target()), (Mnemonic::Jmp, 0x2000));
        assert!(jmp_rel32(0x1000, 0x1000 + (1 << 32)).is_none());
        let a = jmp_abs(0xdead_beef_0000);
        let i = Decoder::with_ip(64, &a, 0x1000, DecoderOptions::NONE).decode();
        assert_eq!(i.ip_rel_memory_address(), 0x1006);
        assert_eq!(u64::from_le_bytes(a[6..].try_into().unwrap()), 0xdead_beef_0000);
        let s = indirect_jmp_stub(7);
        let i = Decoder::with_ip(64, &s, 0x1000, DecoderOptions::NONE).decode();
        assert_eq!(i.ip_rel_memory_address(), 0x1000 + INDIRECT_STUB_PTR as u64);
    }
}
