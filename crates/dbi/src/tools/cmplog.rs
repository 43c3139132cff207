//! AFL++'s CmpLog (`afl-fuzz -c 0`): the operands of the program's comparisons, written to
//! the fuzzer's `__AFL_CMPLOG_SHM_ID` map, from which its input-to-state stage (RedQueen)
//! learns magic values and strings to put into test cases.
//!
//! Logged: `cmp` of 2, 4 or 8 bytes between registers, immediates and memory (1-byte
//! compares are left out, as AFL++'s binary-only modes do: they are mostly character
//! tests the fuzzer finds anyway), and calls through the module's PLT or GOT to `strcmp`,
//! `strncmp`, `strcasecmp`, `strncasecmp`, `memcmp` and `bcmp` (their first 31 bytes). Each
//! is a clean call before the instruction: CmpLog runs are a small share of a campaign's
//! executions, and the map is AFL++'s layout:
//!
//! ```text
//! headers: [u64; 65536]         hits:24 id:24 shape:5 type:2 attribute:4 overflow:1 reserved:4
//! log:     [[[u64; 4]; 32]; 65536]   instructions: v0, v1, v0_128, v1_128
//!                                    routines: 8 of { v0[31], v0_len, v1[31], v1_len }
//! ```

use crate::tool::{import_slots, low_memory, read_app, Arg, BlockView, Instrument, Segment};
use crate::RunError;
use iced_x86::{Code, Decoder, DecoderOptions, Instruction, Mnemonic, OpKind, Register};
use std::collections::HashMap;
use std::sync::Arc;

/// The variable with the fuzzer's comparison map.
pub const SHM_ID_VAR: &str = "__AFL_CMPLOG_SHM_ID";

const MAP_W: usize = 65536;
const MAP_H: usize = 32;
const RTN_H: usize = MAP_H / 4;
const HEADERS_BYTES: usize = MAP_W * 8;
/// Bytes of one entry's log row (32 instruction records or 8 routine records).
const ROW_BYTES: usize = MAP_H * 32;
const TYPE_INS: u64 = 1;
const TYPE_RTN: u64 = 2;
/// Bytes of a routine operand kept.
const RTN_LEN: usize = 31;

/// The fuzzer's map, shared by every clean call of the process.
#[derive(Debug, Clone, Copy)]
struct Map(usize);

impl Map {
    /// Counts a hit of entry `k` of `kind` with operands `shape + 1` bytes wide; returns
    /// the hit's index among the entry's earlier hits.
    fn hit(self, k: usize, kind: u64, shape: u64) -> usize {
        let header = (self.0 + k * 8) as *mut u64;
        // SAFETY: `k < MAP_W`: the header lies in the attached map. The fuzzer reads it only
        // while this process is stopped or gone.
        let old = unsafe { header.read_unaligned() };
        let (hits, shape) = if (old >> 53) & 3 == kind { (old & 0xff_ffff, shape.max((old >> 48) & 0x1f)) } else { (0, shape) };
        let new = ((hits + 1) & 0xff_ffff) | ((k as u64 & 0xff_ffff) << 24) | (shape << 48) | (kind << 53);
        // SAFETY: as above.
        unsafe { header.write_unaligned(new) };
        hits as usize
    }

    /// Logs a comparison of `bytes`-wide values `v0` and `v1` at entry `k`.
    fn instruction(self, k: usize, bytes: u64, v0: u64, v1: u64) {
        let i = self.hit(k, TYPE_INS, bytes - 1) % MAP_H;
        let rec = (self.0 + HEADERS_BYTES + k * ROW_BYTES + i * 32) as *mut [u64; 4];
        // SAFETY: record `i < MAP_H` of row `k < MAP_W`, inside the map.
        unsafe { rec.write_unaligned([v0, v1, 0, 0]) };
    }

    /// Logs a routine's two operands at entry `k`.
    fn routine(self, k: usize, a: &[u8], b: &[u8]) {
        let longest = a.len().max(b.len()).max(1) as u64;
        let i = self.hit(k, TYPE_RTN, longest - 1) % RTN_H;
        let mut rec = [0u8; 64];
        rec[..a.len()].copy_from_slice(a);
        rec[31] = a.len() as u8;
        rec[32..32 + b.len()].copy_from_slice(b);
        rec[63] = b.len() as u8;
        let at = (self.0 + HEADERS_BYTES + k * ROW_BYTES + i * 64) as *mut [u8; 64];
        // SAFETY: record `i < RTN_H` of row `k`, inside the map.
        unsafe { at.write_unaligned(rec) };
    }
}

/// A comparison function the program calls, and how its operands' lengths are known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Routine {
    /// NUL-terminated strings.
    Strings,
    /// Up to the third argument's count of bytes.
    Counted,
}

fn routine(name: &str) -> Option<Routine> {
    match name {
        "strcmp" | "strcasecmp" => Some(Routine::Strings),
        "strncmp" | "strncasecmp" | "memcmp" | "bcmp" => Some(Routine::Counted),
        _ => None,
    }
}

/// Up to `max` bytes of the program's memory at `addr` (fewer where it stops being
/// readable), cut after the first NUL when `string`.
fn operand(addr: u64, max: usize, string: bool) -> Vec<u8> {
    let mut buf = vec![0u8; max];
    let mut n = max;
    while n > 0 && !read_app(addr, &mut buf[..n]) {
        n = n.min(((addr + n as u64 - 1) & !0xfff).saturating_sub(addr) as usize);
    }
    buf.truncate(n);
    if string {
        if let Some(nul) = buf.iter().position(|&c| c == 0) {
            buf.truncate(nul + 1);
        }
    }
    buf
}

/// Where a `cmp` operand's value comes from.
#[derive(Debug, Clone, Copy)]
enum Source {
    /// The clean call's argument is the value.
    Value,
    /// It is the address of the value.
    Memory,
}

/// CmpLog instrumentation for one process.
#[derive(Debug)]
pub struct CmpLog {
    map: Map,
    /// Imported functions by the link-time address of their slot, per module file.
    imports: HashMap<String, HashMap<u64, String>>,
}

impl CmpLog {
    /// CmpLog when the fuzzer asks for it (`__AFL_CMPLOG_SHM_ID` is set).
    pub fn from_env() -> Result<Option<CmpLog>, RunError> {
        let Ok(id) = std::env::var(SHM_ID_VAR) else { return Ok(None) };
        let id = id.trim().parse::<i32>().map_err(|_| RunError::ToolSettings(format!("{SHM_ID_VAR}={id}: not a shared memory id")))?;
        let map = low_memory::attach_segment(id).map_err(|e| RunError::ToolSettings(e.to_string()))?;
        if map.len < HEADERS_BYTES + MAP_W * ROW_BYTES {
            return Err(RunError::ToolSettings(format!(
                "{SHM_ID_VAR}={id}: a segment of {} bytes is not AFL++'s comparison map ({} bytes)",
                map.len,
                HEADERS_BYTES + MAP_W * ROW_BYTES
            )));
        }
        Ok(Some(CmpLog { map: Map(map.addr as usize), imports: HashMap::new() }))
    }

    /// Places the clean calls for `block` of `segment`; `place` gives an instruction's
    /// stable hash (its module and link-time address).
    pub fn on_block(&mut self, block: &BlockView<'_>, segment: &Segment, instrument: &mut Instrument<'_>, place: impl Fn(u64) -> u64) {
        for (index, insn) in block.insns.iter().enumerate() {
            let k = (place(insn.ip()) as usize) % MAP_W;
            if insn.mnemonic() == Mnemonic::Cmp {
                self.compare(index, insn, k, instrument);
            } else if insn.mnemonic() == Mnemonic::Call {
                if let Some(r) = self.called_routine(insn, segment) {
                    let map = self.map;
                    let args = vec![Arg::Reg(Register::RDI), Arg::Reg(Register::RSI), Arg::Reg(Register::RDX)];
                    instrument.clean_call(
                        index,
                        Arc::new(move |v: &[u64]| {
                            let (max, string) = match r {
                                Routine::Strings => (RTN_LEN, true),
                                Routine::Counted => ((v[2] as usize).min(RTN_LEN), false),
                            };
                            map.routine(k, &operand(v[0], max, string), &operand(v[1], max, string));
                        }),
                        args,
                    );
                }
            }
        }
    }

    fn compare(&self, index: usize, insn: &Instruction, k: usize, instrument: &mut Instrument<'_>) {
        let bytes = match insn.op0_register().size() {
            0 => insn.memory_size().size(),
            n => n,
        } as u64;
        if !matches!(bytes, 2 | 4 | 8) {
            return;
        }
        let arg = |op: u32| -> Option<(Arg, Source)> {
            match insn.op_kind(op) {
                OpKind::Register => Some((Arg::Reg(insn.op_register(op)), Source::Value)),
                OpKind::Memory => Some((Arg::MemAddress(op), Source::Memory)),
                OpKind::Immediate8to16
                | OpKind::Immediate8to32
                | OpKind::Immediate8to64
                | OpKind::Immediate16
                | OpKind::Immediate32
                | OpKind::Immediate32to64 => Some((Arg::Const(insn.immediate(op)), Source::Value)),
                _ => None,
            }
        };
        let (Some((a0, s0)), Some((a1, s1))) = (arg(0), arg(1)) else { return };
        let map = self.map;
        let mask = if bytes == 8 { u64::MAX } else { (1u64 << (bytes * 8)) - 1 };
        let value = move |v: u64, s: Source| -> Option<u64> {
            match s {
                Source::Value => Some(v & mask),
                Source::Memory => {
                    let mut b = [0u8; 8];
                    read_app(v, &mut b[..bytes as usize]).then(|| u64::from_le_bytes(b))
                }
            }
        };
        instrument.clean_call(
            index,
            Arc::new(move |v: &[u64]| {
                if let (Some(v0), Some(v1)) = (value(v[0], s0), value(v[1], s1)) {
                    if v0 != v1 {
                        map.instruction(k, bytes, v0, v1);
                    }
                }
            }),
            vec![a0, a1],
        );
    }

    /// The comparison function a call instruction reaches through its module's PLT or GOT.
    fn called_routine(&mut self, call: &Instruction, segment: &Segment) -> Option<Routine> {
        let slot = if call.is_ip_rel_memory_operand() {
            call.ip_rel_memory_address()
        } else if call.op0_kind() == OpKind::NearBranch64 {
            plt_slot(call.near_branch_target())?
        } else {
            return None;
        };
        let bias = segment.range.start - segment.preferred_base;
        let imports = self.imports.entry(segment.path.clone()).or_insert_with(|| import_slots(std::path::Path::new(&segment.path)));
        routine(imports.get(&slot.wrapping_sub(bias))?)
    }
}

/// The GOT slot a PLT stub at `stub` jumps through (`[endbr64;] [bnd] jmp [rip+d]`).
fn plt_slot(stub: u64) -> Option<u64> {
    let mut code = [0u8; 16];
    if !read_app(stub, &mut code) {
        return None;
    }
    let mut decoder = Decoder::with_ip(64, &code, stub, DecoderOptions::NONE);
    let mut insn = decoder.decode();
    if insn.code() == Code::Endbr64 {
        insn = decoder.decode();
    }
    (insn.mnemonic() == Mnemonic::Jmp && insn.is_ip_rel_memory_operand()).then(|| insn.ip_rel_memory_address())
}
