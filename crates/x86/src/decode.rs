//! Instruction boundaries.

use crate::X86Error;
use iced_x86::{Decoder, DecoderError, DecoderOptions, FastFormatter, Instruction, Mnemonic};

/// Decodes instructions from `code` (which starts at address `ip`) until at least `min_len`
/// bytes are covered. Returns the whole instructions that cover them.
pub fn decode_window(code: &[u8], ip: u64, min_len: usize) -> Result<Vec<Instruction>, X86Error> {
    let mut decoder = Decoder::with_ip(64, code, ip, DecoderOptions::NONE);
    let mut out = Vec::with_capacity(4);
    let mut covered = 0usize;
    while covered < min_len {
        let at = ip + covered as u64;
        if !decoder.can_decode() {
            return Err(X86Error::Truncated { address: at, needed: min_len });
        }
        let insn = decoder.decode();
        match decoder.last_error() {
            DecoderError::None => {}
            DecoderError::NoMoreBytes => return Err(X86Error::Truncated { address: at, needed: min_len }),
            _ => return Err(X86Error::Invalid { address: at }),
        }
        covered += insn.len();
        out.push(insn);
    }
    Ok(out)
}

/// Formats one instruction in Intel syntax, for messages.
pub fn format_instruction(insn: &Instruction) -> String {
    let mut text = String::new();
    FastFormatter::new().format(insn, &mut text);
    text
}

/// True for instructions compilers put between functions: NOPs of any length and `int3`.
pub fn is_padding(insn: &Instruction) -> bool {
    matches!(insn.mnemonic(), Mnemonic::Nop | Mnemonic::Int3)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn covers_requested_bytes_with_whole_instructions() {
        // push rbp; mov rbp,rsp; sub rsp,0x10
        let code = [0x55, 0x48, 0x89, 0xe5, 0x48, 0x83, 0xec, 0x10];
        let insns = decode_window(&code, 0x1000, 5).unwrap();
        assert_eq!(insns.len(), 3);
        assert_eq!(insns[2].next_ip(), 0x1008);
    }

    #[test]
    fn reports_truncation_and_invalid_bytes() {
        assert!(matches!(decode_window(&[0x55], 0x10, 5), Err(X86Error::Truncated { .. })));
        assert_eq!(decode_window(&[0x06, 0, 0, 0, 0, 0], 0x10, 5), Err(X86Error::Invalid { address: 0x10 }));
    }
}
