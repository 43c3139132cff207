//! The Linux process model of the program: loading it like `execve` (loader, initial
//! stack), its memory as the runtime reads and writes it on its behalf, its executable
//! regions and the code pages it writes, its modules, its brk, its signal dispositions,
//! frames and delivery, how the process ends, and the runtime's report channel. It knows
//! nothing of the code cache or the engine: what must happen above it at the end of the
//! process is a function registered at start-up ([`process_end::on_end`]).

pub mod appmem;
pub mod brk;
pub mod code_writes;
pub mod credentials;
pub mod loader;
pub mod low_memory;
pub mod memory_file;
pub mod modules;
pub mod proc_status;
pub mod process_end;
pub mod program_env;
pub mod program_maps;
pub mod regions;
pub mod report;
pub mod sigmask;
pub mod signals;
pub mod stack;
pub mod symbols;
