//! rewire's instruction core, shared by the hook engine and the DBI engine.
//!
//! Everything that understands x86-64 machine code lives here, on top of `iced-x86`:
//! * [`decode`]: find instruction boundaries from an address until N bytes are covered;
//! * [`relocate`]: move a run of instructions to another address, keeping what they do;
//! * [`emit`]: the jumps both engines write (5-byte `jmp rel32`, 14-byte absolute jump);
//! * [`verify`]: prove, by decoding, that a relocated run does what the original did.

#![warn(missing_docs)]

pub mod decode;
pub mod emit;
mod error;
pub mod relocate;
pub mod verify;

pub use decode::{decode_window, format_instruction, is_padding};
pub use error::{RelocReason, X86Error};
pub use iced_x86::{Instruction, Mnemonic};
pub use relocate::{relocate, Relocated};
