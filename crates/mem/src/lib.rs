//! rewire's memory policies, after the two orthogonal concepts of Mozilla's DLL interceptor:
//!
//! * the *memory policy* — how to read, write, protect, reserve, commit and release memory of
//!   the process being changed: the [`Memory`] trait, implemented by [`InProcess`] here and by
//!   the remote (ptrace) policy elsewhere;
//! * the *space-sharing policy* — who owns trampoline space: [`Sharing::Unique`] (a slab set per
//!   owner) or [`Sharing::Shared`] (one slab set per process, a slab per ±2 GiB neighbourhood).
//!
//! Trampoline space is dual-mapped shared memory: executed through a read+execute view, written
//! through a read+write view, so no page is ever writable and executable at once.

#![warn(missing_docs)]

mod error;
mod inprocess;
pub mod maps;
mod memory;
mod space;
mod sys;

pub use error::MemError;
pub use inprocess::InProcess;
pub use maps::{AddressSpace, Mapping, Protection};
pub use memory::{DualView, Memory};
pub use space::{Sharing, Slot, SpaceStats, TrampolineSpace, NEAR_REACH};
pub use sys::populate_write;
