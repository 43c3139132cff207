//! Writing over code of this process that other threads may be about to execute.
//!
//! When the patch lies in one aligned 8- or 16-byte block (true of every function entry
//! compiled with the usual 16-byte alignment), it is written by one atomic store, after adding
//! write permission to the page: a thread fetching those bytes sees the old or the new
//! prologue, never a mix. Otherwise (or where the system refuses a writable code page) the
//! bytes go through `/proc/self/mem`; callers have parked every thread that could run them.

use crate::HookError;
use rewire_mem::{Memory, Protection};
use std::sync::atomic::{AtomicU64, Ordering};

/// Writes `bytes` over the code at `addr`, whose pages have protection `prot`.
pub(crate) fn write_code(mem: &dyn Memory, addr: u64, bytes: &[u8], prot: Protection) -> Result<(), HookError> {
    let block8 = addr & !7;
    let block16 = addr & !15;
    let end = addr + bytes.len() as u64;
    let atomic = if end <= block8 + 8 {
        Some(8)
    } else if end <= block16 + 16 {
        Some(16)
    } else {
        None
    };
    let writable = Protection { write: true, ..prot };
    match atomic {
        Some(width) if mem.protect(addr & !0xfff, (end - (addr & !0xfff)) as usize, writable).is_ok() => {
            let block = if width == 8 { block8 } else { block16 };
            let mut old = [0u8; 16];
            mem.read(block, &mut old[..width])?;
            let mut new = old;
            let at = (addr - block) as usize;
            new[at..at + bytes.len()].copy_from_slice(bytes);
            // SAFETY: `block` is a readable (checked by the read above), now writable, aligned
            // block of `width` bytes of code; only atomic accesses are made to it here, and a
            // concurrent patcher is excluded by the engine's lock.
            let stored = unsafe {
                if width == 8 {
                    let cell = &*(block as *const AtomicU64);
                    let (old, new) =
                        (u64::from_le_bytes(old[..8].try_into().expect("8")), u64::from_le_bytes(new[..8].try_into().expect("8")));
                    cell.compare_exchange(old, new, Ordering::SeqCst, Ordering::SeqCst).is_ok()
                } else {
                    store16(block as *mut u128, u128::from_le_bytes(old), u128::from_le_bytes(new))
                }
            };
            mem.protect(addr & !0xfff, (end - (addr & !0xfff)) as usize, prot)?;
            // The block changed between the read and the store: nobody may run these bytes
            // (threads are parked), so an ordinary write is as good.
            if !stored {
                mem.write(addr, bytes)?;
            }
            Ok(())
        }
        _ => Ok(mem.write(addr, bytes)?),
    }
}

/// Atomically replaces the 16 bytes at `ptr` (16-aligned) if they still hold `old`.
///
/// # Safety
/// `ptr` must be 16-aligned, readable and writable.
unsafe fn store16(ptr: *mut u128, old: u128, new: u128) -> bool {
    let swapped: u8;
    // SAFETY: cmpxchg16b on a 16-aligned writable address (caller's contract); rbx is reserved
    // by the compiler, so the new low half is swapped in and out around the instruction.
    unsafe {
        std::arch::asm!(
            "xchg {new_lo}, rbx",
            "lock cmpxchg16b [{ptr}]",
            "sete {swapped}",
            "mov rbx, {new_lo}",
            ptr = in(reg) ptr,
            new_lo = inout(reg) new as u64 => _,
            swapped = out(reg_byte) swapped,
            in("rcx") (new >> 64) as u64,
            inout("rax") old as u64 => _,
            inout("rdx") (old >> 64) as u64 => _,
        );
    }
    swapped != 0
}
