//! The machine code of a module: bytes at link-time addresses from its ELF segments, decoded
//! with iced-x86 into instruction starts and conditional branches.

use iced_x86::{Decoder, DecoderOptions, FlowControl};
use object::{Object, ObjectSegment};

/// One decoded instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Insn {
    /// Link-time address.
    pub ip: u64,
    /// The address after it (a conditional branch's fall-through successor).
    pub next: u64,
    /// The target of a conditional branch (`jcc`, `loop`, `jrcxz`).
    pub branch_target: Option<u64>,
}

/// The file bytes of `[lo, hi)` at link-time addresses, where one segment holds them all.
pub fn bytes_at<'a>(file: &object::File<'a>, lo: u64, hi: u64) -> Option<&'a [u8]> {
    file.segments().find_map(|s| s.data_range(lo, hi.checked_sub(lo)?).ok().flatten())
}

/// The instructions of `[lo, hi)`, decoded from `lo` on (a linear sweep).
pub fn decode(file: &object::File<'_>, lo: u64, hi: u64) -> Vec<Insn> {
    let Some(bytes) = bytes_at(file, lo, hi) else { return Vec::new() };
    let mut decoder = Decoder::with_ip(64, bytes, lo, DecoderOptions::NONE);
    let mut out = Vec::new();
    for i in &mut decoder {
        let branch_target = (i.flow_control() == FlowControl::ConditionalBranch).then(|| i.near_branch_target());
        out.push(Insn { ip: i.ip(), next: i.next_ip(), branch_target });
    }
    out
}
