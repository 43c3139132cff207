//! The machine level, the bottom layer: the per-thread context that cache code reaches
//! through the GS base, the context switch between cache and dispatcher, the
//! indirect-branch lookup template, the signal entry, the fault-resumed copy, the start of a
//! child on its parent's memory, raw system calls, SIMD state and the runtime's own heap. All of the crate's inline assembly is here.
//! This layer imports nothing above it: the assembly reaches the dispatcher and the signal
//! handler by their symbol names (`rewire_dispatch`, `rewire_on_signal`,
//! `rewire_shared_child`), which the engine
//! layer defines.

pub mod context;
pub mod context_block;
pub mod copy;
pub mod cpu;
pub mod heap;
pub mod lookup;
pub mod program_syscall;
pub mod shared_child;
pub mod signal_entry;
pub mod simd;
pub mod switch;

pub use copy::{copy_or_fault, resume_after_copy_fault, store_or_fault};
pub use cpu::{fs_base, gs_base, set_gs_base, stack_pointer, syscall6};
pub use lookup::{ibl_template, ibl_template_rcx_saved};
pub use program_syscall::{program_syscall, skip_unstarted_call, NOT_STARTED};
pub use signal_entry::signal_entry_address;
pub use simd::{sanitize_xsave, signal_xsave_size, xsave_permissions_changed, xsave_size};
pub use switch::{exit_thread, fcache_return_address, start};
