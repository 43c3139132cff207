//! The code cache: its memory (dual-mapped units, executed through one view and written
//! through the other), the registry of fragments built into it, the links between them,
//! translation of cache addresses back to application addresses, and invalidation with
//! deferred reclaiming.

pub mod fragments;
pub mod memory;

pub use fragments::{FragId, FragmentKind, Fragments};
pub use memory::CodeCache;
