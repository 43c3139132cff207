//! rewire's inline hooks, in the style of Detours and Mozilla's DLL interceptor.
//!
//! An [`Interceptor`] overwrites a function's first instructions with a jump to a detour,
//! relocates them into a trampoline (through `rewire-x86`), and hands out the trampoline so the
//! detour can call the original. Hooks stack, can be enabled, disabled and removed in any
//! order, and are applied in batches by [`Transaction`]s. [`TypedHook`] and [`HookCell`] give
//! typed access for `extern "C"` functions; [`Probe`]s run a callback at any instruction.
//!
//! ```no_run
//! use rewire_hook::{HookCell, Interceptor};
//! static GETPID: HookCell<extern "C" fn() -> i32> = HookCell::new();
//! extern "C" fn fake_getpid() -> i32 {
//!     GETPID.original().map_or(0, |f| f()) + 1_000_000
//! }
//! let interceptor = Interceptor::new();
//! // SAFETY: same signature as getpid.
//! unsafe { GETPID.install_symbol(&interceptor, "libc.so.6", "getpid", fake_getpid) }.unwrap();
//! ```

#![warn(missing_docs)]

mod cell;
pub mod check;
pub mod elf;
mod error;
mod interceptor;
mod patch;
pub mod plan;
mod probe;
mod process;
pub mod remote;
mod threads;
mod typed;

pub use cell::HookCell;
pub use error::{HookError, Refusal};
pub use interceptor::{Hook, Interceptor, SiteInfo, Transaction};
pub use probe::{Probe, ProbeContext, Registers};
pub use process::{ModuleIndex, Process, Stopped, ThisProcess};
pub use rewire_mem::Sharing;
pub use threads::stop_signal;
pub use typed::{Function, TypedHook};
