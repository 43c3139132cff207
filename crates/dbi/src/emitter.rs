//! A byte emitter for fragment code at a known address: the fixed instruction forms the
//! engine writes (GS-relative moves, jumps to labels with patchable displacements) plus
//! iced-x86 encoding for instructions placed at a new address.

use crate::context::off;
use iced_x86::{Encoder, Instruction};

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

/// Code being emitted for address `base`.
pub struct Emitter {
    base: u64,
    buf: Vec<u8>,
    labels: Vec<Option<usize>>,
    fixups: Vec<Fixup>,
    /// 8-byte constants placed after the code, with the labels that address them.
    constants: Vec<(Label, u64)>,
    encoder: Encoder,
}

/// Why an instruction could not be placed.
#[derive(Debug)]
pub struct EncodeError;

impl Emitter {
    /// An empty emitter for code that will live at `base`.
    pub fn new(base: u64) -> Emitter {
        Emitter {
            base,
            buf: Vec::with_capacity(256),
            labels: Vec::new(),
            fixups: Vec::new(),
            constants: Vec::new(),
            encoder: Encoder::new(64),
        }
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
        if insn.is_ip_rel_memory_operand() && insn.ip_rel_memory_address().abs_diff(ip) >= (1 << 31) - 64 {
            return Err(EncodeError);
        }
        self.encoder.encode(insn, ip).map_err(|_| EncodeError)?;
        self.buf.extend_from_slice(&self.encoder.take_buffer());
        Ok(())
    }

    /// Resolves labels and returns the code.
    pub fn finish(mut self) -> Vec<u8> {
        if !self.constants.is_empty() {
            while self.ip() % 8 != 0 {
                self.buf.push(0xcc);
            }
            for (l, v) in std::mem::take(&mut self.constants) {
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
        self.buf
    }
}
