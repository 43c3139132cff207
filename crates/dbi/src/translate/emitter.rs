//! A byte emitter for fragment code at a known address: the fixed instruction forms the
//! engine writes (GS-relative moves, jumps to labels with patchable displacements) plus
//! iced-x86 encoding for instructions placed at a new address.

use crate::arch::context::off;
use iced_x86::{Code, Encoder, Instruction, OpKind};
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
        let Some(at) = displacement_at(insn, bytes) else { return self.encode(insn) };
        let disp = emit::rel32(self.ip() + bytes.len() as u64, insn.ip_rel_memory_address()).ok_or(EncodeError)?;
        self.buf.extend_from_slice(&bytes[..at]);
        self.buf.extend_from_slice(&disp.to_le_bytes());
        self.buf.extend_from_slice(&bytes[at + 4..]);
        Ok(())
    }

    /// `mov rax, m64` with the memory operand of `bytes`, the encoding of `jmp/call qword
    /// [mem]` (`insn`), written from its own bytes: the opcode and the ModRM reg field change,
    /// the addressing bytes stay (a RIP-relative displacement re-aimed). Building iced-x86's
    /// encoder tables costs about a millisecond per process, and almost every program jumps
    /// through memory (PLT entries); forms other than the usual ones are an error, left to
    /// [`Emitter::encode`].
    pub fn load_rax_from_branch_operand(&mut self, insn: &Instruction, bytes: &[u8]) -> Result<(), EncodeError> {
        let prefixes = legacy_prefixes(bytes);
        // Segment overrides other than FS mean nothing in 64-bit mode; 0x3e is also CET's
        // `notrack`, 0xf2 MPX's `bnd`: neither matters to a load. Others change the operand.
        if prefixes.iter().any(|b| !matches!(b, 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0xf2)) {
            return Err(EncodeError);
        }
        let fs = prefixes.contains(&0x64);
        let mut i = prefixes.len();
        let rex = match bytes.get(i) {
            Some(&b) if b & 0xf0 == 0x40 => {
                i += 1;
                b
            }
            _ => 0x40,
        };
        let (Some(0xff), Some(&modrm)) = (bytes.get(i), bytes.get(i + 1)) else { return Err(EncodeError) };
        if modrm >> 6 == 3 || !matches!((modrm >> 3) & 7, 2 | 4) {
            return Err(EncodeError);
        }
        let addressing = &bytes[i + 2..];
        let mut out = [0u8; 16];
        let mut n = 0;
        if fs {
            out[n] = 0x64;
            n += 1;
        }
        // REX.W, and the original's X and B extensions of index and base; ModRM reg = rax.
        out[n..n + 3].copy_from_slice(&[0x48 | (rex & 0x03), 0x8b, modrm & 0xc7]);
        n += 3;
        out[n..n + addressing.len()].copy_from_slice(addressing);
        n += addressing.len();
        if insn.is_ip_rel_memory_operand() {
            let disp = emit::rel32(self.ip() + n as u64, insn.ip_rel_memory_address()).ok_or(EncodeError)?;
            out[n - 4..n].copy_from_slice(&disp.to_le_bytes());
        }
        self.buf.extend_from_slice(&out[..n]);
        Ok(())
    }

    /// Copies `bytes`, the encoding of the RIP-relative `insn`, with its memory operand
    /// turned into `[reg]` (which holds the operand's address): the ModRM byte addresses
    /// through the register and the displacement goes. For legacy encodings and registers
    /// below r8 (no REX bit to change); anything else is an error, left to
    /// [`Emitter::encode`].
    pub fn copy_addressed_by(&mut self, insn: &Instruction, bytes: &[u8], reg: u8) -> Result<(), EncodeError> {
        let at = displacement_at(insn, bytes).ok_or(EncodeError)?;
        let modrm = at.checked_sub(1).ok_or(EncodeError)?;
        // mod 00, rm 101: RIP-relative; [rbp] and [rsp] would need other forms.
        if reg >= 8 || reg & 7 == 4 || reg & 7 == 5 || bytes[modrm] & 0xc7 != 0x05 {
            return Err(EncodeError);
        }
        let prefixes = legacy_prefixes(bytes).len();
        let rex = bytes.get(prefixes).filter(|&&b| b & 0xf0 == 0x40).map(|_| prefixes);
        if matches!(bytes.get(prefixes), Some(0xc4 | 0xc5 | 0x62 | 0x8f)) {
            return Err(EncodeError); // VEX, EVEX, XOP: the base extension bit lives elsewhere
        }
        let start = self.buf.len();
        self.buf.extend_from_slice(&bytes[..modrm]);
        if let Some(i) = rex {
            self.buf[start + i] &= !0x01; // REX.B now extends the base: rax..rdi
        }
        self.buf.push(bytes[modrm] & 0x38 | reg);
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

/// The legacy prefixes an encoding starts with.
fn legacy_prefixes(bytes: &[u8]) -> &[u8] {
    let n = bytes.iter().take_while(|b| matches!(b, 0x26 | 0x2e | 0x36 | 0x3e | 0x64 | 0x65 | 0x66 | 0x67 | 0xf0 | 0xf2 | 0xf3)).count();
    &bytes[..n]
}

/// Where the displacement of the RIP-relative `insn` starts in its encoding `bytes`: 4 bytes
/// before the immediates, checked to hold the original displacement.
fn displacement_at(insn: &Instruction, bytes: &[u8]) -> Option<usize> {
    let at = bytes.len().checked_sub(4 + immediate_bytes(insn))?;
    let original = i32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
    (insn.ip_rel_memory_address().wrapping_sub(insn.next_ip()) as i64 == original as i64).then_some(at)
}

/// Bytes of immediate operands at the end of `insn`'s encoding.
fn immediate_bytes(insn: &Instruction) -> usize {
    if shift_by_one(insn.code()) {
        return 0;
    }
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

/// The shifts and rotates by one (`D0`/`D1`): their count is an immediate operand with no
/// byte in the encoding.
fn shift_by_one(code: Code) -> bool {
    use Code::*;
    matches!(
        code,
        Rol_rm8_1
            | Rol_rm16_1
            | Rol_rm32_1
            | Rol_rm64_1
            | Ror_rm8_1
            | Ror_rm16_1
            | Ror_rm32_1
            | Ror_rm64_1
            | Rcl_rm8_1
            | Rcl_rm16_1
            | Rcl_rm32_1
            | Rcl_rm64_1
            | Rcr_rm8_1
            | Rcr_rm16_1
            | Rcr_rm32_1
            | Rcr_rm64_1
            | Shl_rm8_1
            | Shl_rm16_1
            | Shl_rm32_1
            | Shl_rm64_1
            | Shr_rm8_1
            | Shr_rm16_1
            | Shr_rm32_1
            | Shr_rm64_1
            | Sal_rm8_1
            | Sal_rm16_1
            | Sal_rm32_1
            | Sal_rm64_1
            | Sar_rm8_1
            | Sar_rm16_1
            | Sar_rm32_1
            | Sar_rm64_1
    )
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
            &[0x48, 0xd1, 0x25, 0xf0, 0xbe, 0x01, 0x00],                         // shl qword [rip+0x1bef0], 1
        ];
        let (from, to) = (0x5555_0000_1000u64, 0x5555_4000_0000u64);
        for bytes in cases {
            let insn = Decoder::with_ip(64, bytes, from, DecoderOptions::NONE).decode();
            assert!(insn.is_ip_rel_memory_operand(), "{insn}");
            let mut e = Emitter::default();
            e.reset(to);
            e.copy_rip_relative(&insn, bytes).unwrap();
            assert!(e.encoder.is_none(), "{insn} re-encoded instead of copied");
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

    /// The target of `jmp/call qword [mem]` is loaded into rax from the same memory, for
    /// every addressing form, prefixes and RIP-relative operands moved far away included.
    #[test]
    fn branch_operands_become_loads_of_the_same_memory() {
        let cases: &[&[u8]] = &[
            &[0xff, 0x25, 0x10, 0x20, 0x00, 0x00],             // jmp [rip+0x2010]
            &[0xf2, 0xff, 0x25, 0xf0, 0xff, 0xff, 0xff],       // bnd jmp [rip-0x10]
            &[0x3e, 0xff, 0x24, 0xc5, 0x10, 0, 0, 0],          // notrack jmp [rax*8+0x10]
            &[0xff, 0x14, 0xc3],                               // call [rbx+rax*8]
            &[0x41, 0xff, 0x54, 0x24, 0x08],                   // call [r12+8]
            &[0x43, 0xff, 0x64, 0xfd, 0x00],                   // jmp [r13+r15*8]
            &[0xff, 0x50, 0x18],                               // call [rax+0x18]
            &[0x41, 0xff, 0xa3, 0x00, 0x01, 0x00, 0x00],       // jmp [r11+0x100]
            &[0x64, 0xff, 0x14, 0x25, 0x28, 0x00, 0x00, 0x00], // call fs:[0x28]
            &[0x48, 0xff, 0x24, 0x24],                         // rex.w jmp [rsp]
        ];
        let (from, to) = (0x5555_0000_1000u64, 0x5555_4000_0000u64);
        for bytes in cases {
            let insn = Decoder::with_ip(64, bytes, from, DecoderOptions::NONE).decode();
            assert_eq!(insn.len(), bytes.len(), "{insn}");
            let mut e = Emitter::default();
            e.reset(to);
            e.load_rax_from_branch_operand(&insn, bytes).unwrap();
            assert!(e.encoder.is_none(), "{insn} re-encoded");
            e.finish();
            let load = Decoder::with_ip(64, e.code(), to, DecoderOptions::NONE).decode();
            assert_eq!(load.len(), e.code().len(), "{insn} -> {load}");
            assert_eq!((load.mnemonic(), load.op0_register()), (iced_x86::Mnemonic::Mov, iced_x86::Register::RAX), "{insn} -> {load}");
            let operand = |i: &Instruction| {
                let disp = if i.is_ip_rel_memory_operand() { i.ip_rel_memory_address() } else { i.memory_displacement64() };
                (i.memory_segment(), i.memory_base(), i.memory_index(), i.memory_index_scale(), disp, i.memory_size().size())
            };
            assert_eq!(operand(&load), operand(&insn), "{insn} -> {load}");
        }
        let far = Decoder::with_ip(64, cases[0], from, DecoderOptions::NONE).decode();
        let mut e = Emitter::default();
        e.reset(from + (3u64 << 30));
        assert!(e.load_rax_from_branch_operand(&far, cases[0]).is_err());
        let jmp_rax = [0xff, 0xe0];
        let insn = Decoder::with_ip(64, &jmp_rax, from, DecoderOptions::NONE).decode();
        assert!(e.load_rax_from_branch_operand(&insn, &jmp_rax).is_err());
    }

    /// RIP-relative instructions addressed through a register instead keep their other
    /// operands and immediates.
    #[test]
    fn rip_relative_operands_move_to_a_register() {
        let cases: &[&[u8]] = &[
            &[0x48, 0x8b, 0x05, 0x10, 0x20, 0x00, 0x00],                   // mov rax, [rip+0x2010]
            &[0x4c, 0x89, 0x0d, 0x10, 0x20, 0x00, 0x00],                   // mov [rip+0x2010], r9
            &[0x0f, 0x29, 0x1d, 0x40, 0x00, 0x00, 0x00],                   // movaps [rip+0x40], xmm3
            &[0x83, 0x3d, 0xf0, 0xff, 0xff, 0xff, 0x05],                   // cmp dword [rip-0x10], 5
            &[0x48, 0xd1, 0x25, 0xf0, 0xbe, 0x01, 0x00],                   // shl qword [rip+0x1bef0], 1
            &[0xf0, 0x48, 0x0f, 0xb1, 0x15, 0x00, 0x01, 0x00, 0x00],       // lock cmpxchg [rip+0x100], rdx
            &[0x66, 0x0f, 0x3a, 0x0f, 0x05, 0x08, 0x00, 0x00, 0x00, 0x04], // palignr xmm0, [rip+8], 4
        ];
        for bytes in cases {
            let insn = Decoder::with_ip(64, bytes, 0x1000, DecoderOptions::NONE).decode();
            for reg in [3u8, 6, 7] {
                let mut e = Emitter::default();
                e.reset(0x5555_0000_0000);
                e.copy_addressed_by(&insn, bytes, reg).unwrap();
                e.finish();
                let moved = Decoder::with_ip(64, e.code(), 0x5555_0000_0000, DecoderOptions::NONE).decode();
                assert_eq!(moved.len(), e.code().len(), "{insn} -> {moved}");
                let base = iced_x86::Register::RAX as u32 + reg as u32;
                assert_eq!((moved.memory_base() as u32, moved.memory_displacement64()), (base, 0), "{insn} -> {moved}");
                assert_eq!(moved.code(), insn.code(), "{insn} -> {moved}");
                for i in 0..insn.op_count() {
                    if insn.op_kind(i) != OpKind::Memory {
                        assert_eq!(moved.op_kind(i), insn.op_kind(i), "{insn} -> {moved}");
                        assert_eq!(format!("{moved}").split(',').nth(i as usize), format!("{insn}").split(',').nth(i as usize));
                    }
                }
            }
        }
        let vex = [0xc5, 0xf8, 0x28, 0x05, 0x40, 0x00, 0x00, 0x00]; // vmovaps xmm0, [rip+0x40]
        let insn = Decoder::with_ip(64, &vex, 0x1000, DecoderOptions::NONE).decode();
        assert!(Emitter::default().copy_addressed_by(&insn, &vex, 3).is_err());
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
