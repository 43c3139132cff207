//! A byte emitter for fragment code at a known address: the fixed instruction forms the
//! engine writes (GS-relative moves, jumps to labels with patchable displacements) plus
//! iced-x86 encoding for instructions placed at a new address.

use crate::context::off;
use iced_x86::{Encoder, Instruction, OpKind};
use rewire_x86::emit;

/// A position in the code, bound once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label(usize);

#[derive(Debug)]
struct Fixup {
    /// Offset of the displacement field.
    field: usize,
    /// Offset of the end of the instruction (displacements are relative to it).
    end: usize,
    label: Label,
    rel8: bool,
}

/// Code being emitted for address `base`. One emitter serves translation after
/// translation ([`Emitter::reset`]), so its buffers are allocated once.
#[derive(Default)]
pub struct Emitter {
    base: u64,
    buf: Vec<u8>,
    labels: Vec<Option<usize>>,
    fixups: Vec<Fixup>,
    /// 8-byte constants placed after the code, with the labels that address them.
    constants: Vec<(Label, u64)>,
    /// Created on first use: most blocks need none.
    encoder: Option<Encoder>,
}

/// Why an instruction could not be placed.
#[derive(Debug)]
pub struct EncodeError;

impl Emitter {
    /// Starts over for code that will live at `base` (keeping the buffers).
    pub fn reset(&mut self, base: u64) {
        self.base = base;
        self.buf.clear();
        self.labels.clear();
        self.fixups.clear();
        self.constants.clear();
    }

    /// The code emitted (complete once [`Emitter::finish`] has run).
    pub fn code(&self) -> &[u8] {
        &self.buf
    }

    /// Address of the next byte.
    pub fn ip(&self) -> u64 {
        self.base + self.buf.len() as u64
    }

    /// Offset of the next byte.
    pub fn offset(&self) -> usize {
        self.buf.len()
    }

    /// Appends raw bytes.
    pub fn bytes(&mut self, b: &[u8]) {
        self.buf.extend_from_slice(b);
    }

    /// A new unbound label.
    pub fn label(&mut self) -> Label {
        self.labels.push(None);
        Label(self.labels.len() - 1)
    }

    /// Binds `l` to the current position.
    pub fn bind(&mut self, l: Label) {
        self.labels[l.0] = Some(self.buf.len());
    }

    /// Pads with `nop`s so that the 4-byte field `prefix` bytes ahead starts 4-byte aligned
    /// (so that linking can rewrite it with one atomic store).
    pub fn align_field(&mut self, prefix: u64) {
        while (self.ip() + prefix) % 4 != 0 {
            self.buf.push(0x90);
        }
    }

    /// `jmp rel32` to `l`, field aligned; returns the field's offset.
    pub fn jmp_rel32(&mut self, l: Label) -> usize {
        self.align_field(1);
        self.buf.push(0xe9);
        self.fixup32(l)
    }

    /// `jmp rel32` to `l`, never patched (so not aligned); returns the field's offset.
    pub fn jmp_rel32_unaligned(&mut self, l: Label) -> usize {
        self.buf.push(0xe9);
        self.fixup32(l)
    }

    /// `jcc rel32` (condition code `cc`, 0–15) to `l`, field aligned; returns the field's offset.
    pub fn jcc_rel32(&mut self, cc: u8, l: Label) -> usize {
        self.align_field(2);
        self.buf.extend_from_slice(&[0x0f, 0x80 | cc]);
        self.fixup32(l)
    }

    /// A short branch with opcode `op` (jmp, loop, jrcxz…) to `l`.
    pub fn short(&mut self, op: &[u8], l: Label) {
        self.buf.extend_from_slice(op);
        let field = self.buf.len();
        self.buf.push(0);
        self.fixups.push(Fixup { field, end: field + 1, label: l, rel8: true });
    }

    fn fixup32(&mut self, l: Label) -> usize {
        let field = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        self.fixups.push(Fixup { field, end: field + 4, label: l, rel8: false });
        field
    }

    /// `mov gs:[off], r64`.
    pub fn store_gs(&mut self, off: usize, reg: u8) {
        self.buf.extend_from_slice(&[0x65, 0x48 | ((reg >> 3) << 2), 0x89, ((reg & 7) << 3) | 4, 0x25]);
        self.buf.extend_from_slice(&(off as u32).to_le_bytes());
    }

    /// `mov r64, gs:[off]`.
    pub fn load_gs(&mut self, reg: u8, off: usize) {
        self.buf.extend_from_slice(&[0x65, 0x48 | ((reg >> 3) << 2), 0x8b, ((reg & 7) << 3) | 4, 0x25]);
        self.buf.extend_from_slice(&(off as u32).to_le_bytes());
    }

    /// `lea r64, [r64 + amount]` (adds without touching the flags; not for rsp).
    pub fn lea_add(&mut self, reg: u8, amount: u32) {
        debug_assert_ne!(reg, 4, "rsp");
        let rex = 0x48 | if reg >= 8 { 0x05 } else { 0 };
        self.buf.extend_from_slice(&[rex, 0x8d, 0x80 | (reg & 7) << 3 | (reg & 7)]);
        if reg & 7 == 4 {
            self.buf.push(0x24); // r12 as a base needs a SIB byte
        }
        self.buf.extend_from_slice(&amount.to_le_bytes());
    }

    /// `mov r64, imm64`.
    pub fn mov_imm64(&mut self, reg: u8, value: u64) {
        self.buf.extend_from_slice(&[0x48 | (reg >> 3), 0xb8 + (reg & 7)]);
        self.buf.extend_from_slice(&value.to_le_bytes());
    }

    /// `jmp qword gs:[off]`.
    pub fn jmp_gs(&mut self, off: usize) {
        self.buf.extend_from_slice(&[0x65, 0xff, 0x24, 0x25]);
        self.buf.extend_from_slice(&(off as u32).to_le_bytes());
    }

    /// Pushes the 8-byte `value` without touching registers or flags, with one 8-byte store
    /// (so that the `pop` of a return reads it back through store forwarding): `push imm32`
    /// when it sign-extends, else `push qword [rip+constant]`.
    pub fn push_imm64(&mut self, value: u64) {
        let lo = value as u32;
        if value == lo as i32 as i64 as u64 {
            self.buf.push(0x68);
            self.buf.extend_from_slice(&lo.to_le_bytes());
        } else {
            let l = self.label();
            self.constants.push((l, value));
            self.buf.extend_from_slice(&[0xff, 0x35]);
            self.fixup32(l);
        }
    }

    /// `pop r64`.
    pub fn pop(&mut self, reg: u8) {
        if reg >= 8 {
            self.buf.push(0x41);
        }
        self.buf.push(0x58 + (reg & 7));
    }

    /// `lea rsp, [rsp + n]`.
    pub fn lea_rsp(&mut self, n: i32) {
        self.buf.extend_from_slice(&[0x48, 0x8d, 0xa4, 0x24]);
        self.buf.extend_from_slice(&n.to_le_bytes());
    }

    /// The exit sequence: keep rax in `scratch_rax`, load the exit record, leave the cache.
    pub fn exit_to_dispatcher(&mut self, record: u64) {
        self.store_gs(off::S_RAX, 0);
        self.mov_imm64(0, record);
        self.jmp_gs(off::FCACHE_RETURN);
    }

    /// Encodes `insn` at the current address (RIP-relative operands are re-aimed; an error
    /// when the operand is out of rel32 reach from here, which the encoder would not see).
    pub fn encode(&mut self, insn: &Instruction) -> Result<(), EncodeError> {
        let ip = self.ip();
        if insn.is_ip_rel_memory_operand() && !emit::rel32_reaches(ip, insn.ip_rel_memory_address()) {
            return Err(EncodeError);
        }
        let encoder = self.encoder.get_or_insert_with(|| Encoder::new(64));
        encoder.encode(insn, ip).map_err(|_| EncodeError)?;
        let mut out = encoder.take_buffer();
        self.buf.extend_from_slice(&out);
        out.clear();
        encoder.set_buffer(out);
        Ok(())
    }

    /// Copies `bytes`, the encoding of the RIP-relative `insn`, to the current address with
    /// its displacement re-aimed at the same memory: no re-encoding when the displacement's
    /// place is known (it ends 4 bytes before the immediates, and must hold the original
    /// displacement); else as [`Emitter::encode`].
    pub fn copy_rip_relative(&mut self, insn: &Instruction, bytes: &[u8]) -> Result<(), EncodeError> {
        let Some(at) = bytes.len().checked_sub(4 + immediate_bytes(insn)) else { return self.encode(insn) };
        let original = i32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        let target = insn.ip_rel_memory_address();
        if target.wrapping_sub(insn.next_ip()) as i64 != original as i64 {
            return self.encode(insn);
        }
        let disp = emit::rel32(self.ip() + bytes.len() as u64, target).ok_or(EncodeError)?;
        self.buf.extend_from_slice(&bytes[..at]);
        self.buf.extend_from_slice(&disp.to_le_bytes());
        self.buf.extend_from_slice(&bytes[at + 4..]);
        Ok(())
    }

    /// Places the constants and resolves the labels: [`Emitter::code`] is complete.
    pub fn finish(&mut self) {
        if !self.constants.is_empty() {
            while self.ip() % 8 != 0 {
                self.buf.push(0xcc);
            }
            for i in 0..self.constants.len() {
                let (l, v) = self.constants[i];
                self.bind(l);
                self.buf.extend_from_slice(&v.to_le_bytes());
            }
        }
        for f in &self.fixups {
            let target = self.labels[f.label.0].expect("label used but never bound") as i64;
            let rel = target - f.end as i64;
            if f.rel8 {
                self.buf[f.field] = i8::try_from(rel).expect("short branch out of range") as u8;
            } else {
                self.buf[f.field..f.field + 4].copy_from_slice(&(rel as i32).to_le_bytes());
            }
        }
    }
}

/// Bytes of immediate operands at the end of `insn`'s encoding.
fn immediate_bytes(insn: &Instruction) -> usize {
    (0..insn.op_count())
        .map(|i| match insn.op_kind(i) {
            OpKind::Immediate8 | OpKind::Immediate8_2nd | OpKind::Immediate8to16 | OpKind::Immediate8to32 | OpKind::Immediate8to64 => 1,
            OpKind::Immediate16 => 2,
            OpKind::Immediate32 | OpKind::Immediate32to64 => 4,
            OpKind::Immediate64 => 8,
            _ => 0,
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;
    use iced_x86::{Decoder, DecoderOptions};

    /// RIP-relative instructions copied 1 GiB away still address the same memory, with
    /// their immediates intact (SSE, AVX-512, an imm8 and an imm32 after the displacement).
    #[test]
    fn rip_relative_copies_keep_their_target_and_immediates() {
        let cases: &[&[u8]] = &[
            &[0x48, 0x8b, 0x05, 0x10, 0x20, 0x00, 0x00],                         // mov rax, [rip+0x2010]
            &[0x83, 0x3d, 0xf0, 0xff, 0xff, 0xff, 0x05],                         // cmp dword [rip-0x10], 5
            &[0x48, 0xc7, 0x05, 0x00, 0x01, 0x00, 0x00, 0x78, 0x56, 0x34, 0x12], // mov qword [rip+0x100], 0x12345678
            &[0x66, 0x0f, 0x6f, 0x05, 0x40, 0x00, 0x00, 0x00],                   // movdqa xmm0, [rip+0x40]
            &[0x62, 0xf1, 0x7c, 0x48, 0x28, 0x05, 0x00, 0x10, 0x00, 0x00],       // vmovaps zmm0, [rip+0x1000]
            &[0x66, 0x0f, 0x3a, 0x0f, 0x05, 0x08, 0x00, 0x00, 0x00, 0x04],       // palignr xmm0, [rip+8], 4
        ];
        let (from, to) = (0x5555_0000_1000u64, 0x5555_4000_0000u64);
        for bytes in cases {
            let insn = Decoder::with_ip(64, bytes, from, DecoderOptions::NONE).decode();
            assert!(insn.is_ip_rel_memory_operand(), "{insn}");
            let mut e = Emitter::default();
            e.reset(to);
            e.copy_rip_relative(&insn, bytes).unwrap();
            e.finish();
            let out = e.code();
            let moved = Decoder::with_ip(64, out, to, DecoderOptions::NONE).decode();
            assert_eq!(out.len(), bytes.len(), "{insn}");
            // The formatted form shows the absolute target and every immediate.
            assert_eq!(moved.to_string(), insn.to_string());
        }
        let far = Decoder::with_ip(64, cases[0], from, DecoderOptions::NONE).decode();
        let mut e = Emitter::default();
        e.reset(from + (3u64 << 30));
        assert!(e.copy_rip_relative(&far, cases[0]).is_err());
    }

    /// `lea_add` encodes `lea r, [r + amount]` for every general register but rsp.
    #[test]
    fn lea_add_encodes_for_every_register() {
        for reg in (0u8..16).filter(|&r| r != 4) {
            let mut e = Emitter::default();
            e.reset(0x1000);
            e.lea_add(reg, 0x1234);
            e.finish();
            let code = e.code();
            let insn = Decoder::with_ip(64, code, 0x1000, DecoderOptions::NONE).decode();
            let r = insn.op0_register();
            assert_eq!(insn.len(), code.len(), "{insn}");
            assert_eq!(insn.mnemonic(), iced_x86::Mnemonic::Lea, "{insn}");
            assert_eq!(r as u32, iced_x86::Register::RAX as u32 + reg as u32, "{insn}");
            assert_eq!((insn.memory_base(), insn.memory_index(), insn.memory_displacement64()), (r, iced_x86::Register::None, 0x1234));
        }
    }
}
