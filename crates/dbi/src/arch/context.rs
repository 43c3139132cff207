//! The per-thread runtime context, reached from cache code through the GS base.
//!
//! One mapping per application thread holds, at fixed offsets from its start: the header
//! ([`ThreadCtx`]: scratch slots, the saved application registers, the FS values to swap),
//! the XSAVE area for the application's SIMD state while runtime code runs, and the thread's
//! indirect-branch lookup table. Cache code addresses all of it as `gs:[offset]`.

use crate::arch::simd;
use std::mem::offset_of;

/// The application's general registers and flags, saved on every exit from the cache.
/// Ordered by x86 register number, so `gpr[n]` is register `n` (rax=0 … r15=15).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct AppRegs {
    /// rax, rcx, rdx, rbx, rsp, rbp, rsi, rdi, r8 … r15.
    pub gpr: [u64; 16],
    /// RFLAGS.
    pub rflags: u64,
}

/// Register numbers used by the dispatcher.
pub mod reg {
    /// rax
    pub const RAX: usize = 0;
    /// rcx
    pub const RCX: usize = 1;
    /// rdx
    pub const RDX: usize = 2;
    /// rsp
    pub const RSP: usize = 4;
    /// rsi
    pub const RSI: usize = 6;
    /// rdi
    pub const RDI: usize = 7;
    /// r8
    pub const R8: usize = 8;
    /// r9
    pub const R9: usize = 9;
    /// r10
    pub const R10: usize = 10;
    /// r11
    pub const R11: usize = 11;
}

/// The header of a thread's context mapping. Field order is free; cache code and the
/// assembly in [`crate::arch`] use the offsets below.
#[repr(C)]
#[derive(Debug)]
pub struct ThreadCtx {
    /// Linear address of this header (GS base), for code that needs a plain pointer.
    pub self_ptr: u64,
    /// Application rax while cache code borrows rax (exit stubs, indirect branches).
    pub scratch_rax: u64,
    /// Application rcx while the indirect-branch lookup borrows rcx.
    pub scratch_rcx: u64,
    /// Probe position of the lookup in progress.
    pub ibl_index: u64,
    /// The exit record of the last exit from the cache.
    pub exit_record: u64,
    /// The application address an indirect branch went to when the lookup missed.
    pub ibl_target: u64,
    /// Where the dispatcher resumes the application (a cache address).
    pub next_pc: u64,
    /// Address of the routine that saves application state and enters the dispatcher.
    pub fcache_return: u64,
    /// Spill slots for registers that mangled instructions borrow.
    pub spill: [u64; 2],
    /// Indirect-branch lookups executed (counted only with `--stats`).
    pub ibl_lookups: u64,
    /// Application registers, valid while the runtime runs.
    pub regs: AppRegs,
    /// The application's FS base (its thread pointer).
    pub app_fs: u64,
    /// The application's GS base, as set through `arch_prctl`.
    pub app_gs: u64,
    /// The runtime's own FS base (its libc's thread pointer).
    pub rt_fs: u64,
    /// Top of the runtime stack the dispatcher runs on.
    pub rt_stack_top: u64,
    /// Non-zero when `rdfsbase`/`wrfsbase` may be used (AT_HWCAP2 FSGSBASE).
    pub has_fsgsbase: u64,
    /// Non-zero when the context switch keeps the SIMD state with moves
    /// ([`simd::simd_by_moves`]): the XSAVE area then holds only the xmm/ymm registers and
    /// MXCSR, the rest stays live in the CPU (see [`ThreadCtx::simd_image`]).
    pub simd_moves: u64,
    /// Non-zero when the context switch saves with `xsaveopt` instead of `xsave` (the CPU
    /// has it: CPUID 0xD sub-leaf 1, EAX bit 0).
    pub xsaveopt: u64,
    /// The process model's signal state of the thread (`os::signals::ThreadSignals`, a
    /// leaked box), which this layer only stores.
    pub signal_state: u64,
    /// The thread's id (kept here: a system call of the program must not cost a `gettid`).
    pub tid: u64,
    /// Entries into the dispatcher so far.
    pub dispatches: u64,
    /// Non-zero while the thread may be running cache code (set by the dispatcher, under the
    /// engine lock, once it has chosen where the thread resumes).
    pub in_cache: u64,
    /// Non-zero when the signal handler recorded a signal for the program that the
    /// dispatcher has not looked at yet: the program's next system call does not start
    /// (see [`crate::arch::program_syscall`]).
    pub signal_kick: u64,
    /// Where the thread's time went (the engine keeps it with `--stats`).
    pub time: ThreadTime,
    /// The signal mask a child on its parent's memory takes once its GS base is its
    /// context (it may start with every signal blocked).
    pub start_mask: u64,
}

/// Where one thread's time went, measured with the monotonic clock at every entry into and
/// exit from the dispatcher (wall time: a blocking system call counts while it waits).
#[repr(C)]
#[derive(Debug, Default, Clone, Copy)]
pub struct ThreadTime {
    /// When the thread first entered the dispatcher (0: not yet).
    pub started: u64,
    /// Nanoseconds in the dispatcher, system calls included.
    pub dispatcher: u64,
    /// Of which running the program's system calls (with their hooks).
    pub syscalls: u64,
}

/// Offsets of the header fields, for assembly and emitted code.
pub mod off {
    use super::*;
    /// `self_ptr`
    pub const SELF: usize = offset_of!(ThreadCtx, self_ptr);
    /// `scratch_rax`
    pub const S_RAX: usize = offset_of!(ThreadCtx, scratch_rax);
    /// `scratch_rcx`
    pub const S_RCX: usize = offset_of!(ThreadCtx, scratch_rcx);
    /// `ibl_index`
    pub const IBL_INDEX: usize = offset_of!(ThreadCtx, ibl_index);
    /// `exit_record`
    pub const EXIT: usize = offset_of!(ThreadCtx, exit_record);
    /// `ibl_target`
    pub const IBL_TARGET: usize = offset_of!(ThreadCtx, ibl_target);
    /// `next_pc`
    pub const NEXT_PC: usize = offset_of!(ThreadCtx, next_pc);
    /// `fcache_return`
    pub const FCACHE_RETURN: usize = offset_of!(ThreadCtx, fcache_return);
    /// `spill[0]`
    pub const SPILL0: usize = offset_of!(ThreadCtx, spill);
    /// `spill[1]`
    pub const SPILL1: usize = offset_of!(ThreadCtx, spill) + 8;
    /// `ibl_lookups`
    pub const IBL_LOOKUPS: usize = offset_of!(ThreadCtx, ibl_lookups);
    /// `regs.gpr[n]`
    pub const fn gpr(n: usize) -> usize {
        offset_of!(ThreadCtx, regs) + n * 8
    }
    /// `regs.rflags`
    pub const RFLAGS: usize = offset_of!(ThreadCtx, regs) + offset_of!(AppRegs, rflags);
    /// `app_fs`
    pub const APP_FS: usize = offset_of!(ThreadCtx, app_fs);
    /// `app_gs`
    pub const APP_GS: usize = offset_of!(ThreadCtx, app_gs);
    /// `rt_fs`
    pub const RT_FS: usize = offset_of!(ThreadCtx, rt_fs);
    /// `rt_stack_top`
    pub const RT_STACK: usize = offset_of!(ThreadCtx, rt_stack_top);
    /// `has_fsgsbase`
    pub const FSGSBASE: usize = offset_of!(ThreadCtx, has_fsgsbase);
    /// `simd_moves`
    pub const SIMD_MOVES: usize = offset_of!(ThreadCtx, simd_moves);
    /// `xsaveopt`
    pub const XSAVEOPT: usize = offset_of!(ThreadCtx, xsaveopt);
    /// `signal_kick`
    pub const SIGNAL_KICK: usize = offset_of!(ThreadCtx, signal_kick);
    /// The XSAVE area (64-byte aligned).
    pub const XSAVE: usize = 4096;
    /// The lookup table: [`super::IBL_SLOTS`] slots of `{negated tag, lookup entry}`.
    pub const IBL_TABLE: usize = XSAVE + super::XSAVE_MAX;
    /// The thread's tool counters ([`super::COUNTER_BYTES`], page aligned).
    pub const COUNTERS: usize = (IBL_TABLE + super::IBL_SLOTS * 16).next_multiple_of(4096);
}

/// Largest XSAVE area supported (AVX-512 needs about 2.7 KiB).
pub const XSAVE_MAX: usize = 12 * 1024;
/// Home slots of the lookup table: the low 16 bits of the application address pick one.
pub const IBL_HOME_SLOTS: usize = 1 << 16;
/// How far an insertion probes past its home slot before replacing the home entry.
pub const IBL_MAX_PROBE: usize = 64;
/// Slots in the table, with the overflow area and one always-empty slot that ends every probe.
pub const IBL_SLOTS: usize = IBL_HOME_SLOTS + IBL_MAX_PROBE + 1;
/// Bytes of per-thread tool counters (8 bytes each; untouched pages cost nothing).
pub const COUNTER_BYTES: usize = 64 << 20;
/// Bytes of a context mapping.
pub const CTX_BYTES: usize = off::COUNTERS + COUNTER_BYTES;
/// Bytes of a thread's runtime stack.
pub const RT_STACK_BYTES: usize = 1 << 20;
/// Bytes of a thread's signal stack: the runtime's handler runs there (`SA_ONSTACK`), so a
/// fault on an exhausted program stack can still be handled.
pub const SIGNAL_STACK_BYTES: usize = 64 << 10;
/// Bytes of the mapping that holds a thread's signal stack (lowest) and runtime stack.
pub const STACKS_BYTES: usize = SIGNAL_STACK_BYTES + RT_STACK_BYTES;

const _: () = assert!(std::mem::size_of::<ThreadCtx>() <= off::XSAVE);

impl ThreadCtx {
    fn ibl_table(&mut self) -> &mut [[u64; 2]] {
        // SAFETY: a ThreadCtx only exists at the start of its context mapping (ContextBlock),
        // whose lookup table follows at IBL_TABLE; `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut((self.self_ptr as *mut u8).add(off::IBL_TABLE) as *mut [u64; 2], IBL_SLOTS) }
    }

    /// (dispatches, may be in the cache) of a thread, read from another one.
    pub fn progress(&self) -> (u64, bool) {
        // SAFETY: plain aligned 8-byte fields of a live context; volatile so that each read
        // is one load of the value the owner last stored.
        unsafe { (std::ptr::read_volatile(&self.dispatches), std::ptr::read_volatile(&self.in_cache) != 0) }
    }

    pub(crate) fn xsave_area(&mut self) -> &mut [u8] {
        // SAFETY: inside this context's mapping (see `ibl_table`); `&mut self` makes it exclusive.
        unsafe { std::slice::from_raw_parts_mut((self.self_ptr as *mut u8).add(off::XSAVE), XSAVE_MAX) }
    }

    /// The application's SIMD state as an XSAVE image (standard format), complete. Called
    /// on the context's own thread while it is in the runtime (the state the context switch
    /// left live in the CPU is the application's then).
    pub fn simd_image(&mut self) -> &[u8] {
        let moves = self.simd_moves != 0;
        let area = self.xsave_area();
        if moves {
            simd::save_live_simd(area);
        }
        area
    }

    /// Makes `image` (a sanitized XSAVE image) the application's SIMD state, on the
    /// context's own thread while it is in the runtime.
    pub fn set_simd_image(&mut self, image: &[u8]) {
        let moves = self.simd_moves != 0;
        let area = self.xsave_area();
        area[..image.len()].copy_from_slice(image);
        if moves {
            simd::load_live_simd(area);
        }
    }

    /// Puts `tag → entry` into the thread's lookup table (replacing the home entry when the
    /// probe window is full: the table is a cache).
    pub fn ibl_insert(&mut self, tag: u64, entry: u64) {
        let table = self.ibl_table();
        let home = (tag & 0xffff) as usize;
        let neg = tag.wrapping_neg();
        let slot = (home..home + IBL_MAX_PROBE).find(|&i| table[i][0] == 0 || table[i][0] == neg).unwrap_or(home);
        table[slot] = [neg, entry];
    }

    /// Points the thread's table entry for `tag`, if it has one, at `entry` (another valid
    /// cache address for the same tag: a lookup racing with this finds either).
    pub fn ibl_retarget(&mut self, tag: u64, entry: u64) {
        let table = self.ibl_table();
        let home = (tag & 0xffff) as usize;
        let neg = tag.wrapping_neg();
        if let Some(slot) = (home..home + IBL_MAX_PROBE).find(|&i| table[i][0] == neg) {
            // SAFETY: an aligned u64 of the table; a volatile store so that it is one write.
            unsafe { std::ptr::write_volatile(&mut table[slot][1], entry) };
        }
    }

    /// The thread's counter at byte `offset` of its counter area.
    pub fn counter(&self, offset: u32) -> u64 {
        assert!((offset as usize) < COUNTER_BYTES && offset % 8 == 0, "counter outside the area");
        // SAFETY: inside this context's mapping (see `ibl_table`), 8-byte aligned; a plain
        // read of a counter its thread may be incrementing (a torn value is impossible for an
        // aligned 8-byte load).
        unsafe { std::ptr::read_volatile((self.self_ptr as *const u8).add(off::COUNTERS + offset as usize) as *const u64) }
    }

    /// Sets the thread's counter at byte `offset` of its counter area (on the thread itself,
    /// in the runtime).
    pub fn set_counter(&mut self, offset: u32, value: u64) {
        assert!((offset as usize) < COUNTER_BYTES && offset % 8 == 0, "counter outside the area");
        // SAFETY: as in `counter`; the owning thread's cache code is not running meanwhile.
        unsafe { std::ptr::write_volatile((self.self_ptr as *mut u8).add(off::COUNTERS + offset as usize) as *mut u64, value) };
    }

    /// Adds one to the thread's counter at byte `offset` of its counter area (for the
    /// thread itself, or its signal handler).
    pub fn count(&mut self, offset: u32) {
        assert!((offset as usize) < COUNTER_BYTES && offset % 8 == 0, "counter outside the area");
        // SAFETY: as in `counter`; `&mut self` on the owning thread, whose cache code is
        // not running meanwhile (it is in the dispatcher or interrupted by this handler).
        unsafe {
            let c = (self.self_ptr as *mut u8).add(off::COUNTERS + offset as usize) as *mut u64;
            std::ptr::write_volatile(c, std::ptr::read_volatile(c).wrapping_add(1));
        }
    }

    /// Removes every entry for `tag` from the thread's lookup table (its fragment went
    /// away). As in [`ThreadCtx::ibl_clear`], only tags are cleared; an entry beyond the
    /// hole left is found no more and comes back at the next miss.
    pub fn ibl_forget(&mut self, tag: u64) {
        let table = self.ibl_table();
        let home = (tag & 0xffff) as usize;
        let neg = tag.wrapping_neg();
        for slot in &mut table[home..home + IBL_MAX_PROBE] {
            if slot[0] == neg {
                // SAFETY: an aligned u64 of the table; a volatile store so that it is one write.
                unsafe { std::ptr::write_volatile(&mut slot[0], 0) };
            }
        }
    }

    /// Empties the thread's lookup table. Only the tags are cleared: a lookup that already
    /// matched (the owning thread may be interrupted mid-lookup by a signal whose handler
    /// calls this) still finds a valid cache address beside it.
    pub fn ibl_clear(&mut self) {
        for slot in self.ibl_table() {
            // SAFETY: an aligned u64 of the table; a volatile store so that it is one write.
            unsafe { std::ptr::write_volatile(&mut slot[0], 0) };
        }
    }
}
