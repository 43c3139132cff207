//! The raw memory system calls of this process, behind safe wrappers. All of the crate's
//! `unsafe` is here.

use crate::{MemError, Protection};
use rustix::mm::{MapFlags, MprotectFlags, ProtFlags};
use std::os::fd::BorrowedFd;
use std::sync::atomic::{AtomicU32, AtomicU64};

fn prot_flags(p: Protection) -> ProtFlags {
    let mut f = ProtFlags::empty();
    f.set(ProtFlags::READ, p.read);
    f.set(ProtFlags::WRITE, p.write);
    f.set(ProtFlags::EXEC, p.exec);
    f
}

/// A mapping of this process that it owns and unmaps on drop.
#[derive(Debug)]
pub(crate) struct LocalMap {
    ptr: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain shared memory; concurrent access goes through `write`/`read`
// (callers keep writers to distinct slots) and atomics.
unsafe impl Send for LocalMap {}
// SAFETY: as above.
unsafe impl Sync for LocalMap {}

impl LocalMap {
    /// Maps `len` bytes of `fd` read+write, shared, anywhere.
    pub(crate) fn shared_rw(fd: BorrowedFd<'_>, len: usize) -> Result<LocalMap, MemError> {
        // SAFETY: a fresh mapping at an address the kernel picks; it aliases nothing of ours.
        let ptr = unsafe { rustix::mm::mmap(std::ptr::null_mut(), len, prot_flags(Protection::RW), MapFlags::SHARED, fd, 0) }
            .map_err(|e| MemError::sys("mmap(shared, rw)", e))?;
        Ok(LocalMap { ptr: ptr.cast(), len })
    }

    pub(crate) fn write(&self, offset: usize, data: &[u8]) {
        assert!(offset.checked_add(data.len()).is_some_and(|end| end <= self.len), "write past the mapping");
        // SAFETY: bounds checked above; the mapping is live and writable for `self`'s lifetime.
        unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), self.ptr.add(offset), data.len()) }
    }

    pub(crate) fn read(&self, offset: usize, buf: &mut [u8]) {
        assert!(offset.checked_add(buf.len()).is_some_and(|end| end <= self.len), "read past the mapping");
        // SAFETY: bounds checked above; the mapping is live and readable.
        unsafe { std::ptr::copy_nonoverlapping(self.ptr.add(offset), buf.as_mut_ptr(), buf.len()) }
    }

    /// Backs `len` bytes at `offset` with memory and maps them writable now, instead of one
    /// page fault per page later (best effort: kernels before 5.14 lack the advice).
    pub(crate) fn populate(&self, offset: usize, len: usize) {
        assert!(offset.checked_add(len).is_some_and(|end| end <= self.len), "populate past the mapping");
        populate_write(self.ptr as u64 + offset as u64, len);
    }

    /// Asks for transparent huge pages behind the mapping (best effort).
    pub(crate) fn advise_huge_pages(&self) {
        advise_huge_pages(self.ptr as u64, self.len);
    }

    pub(crate) fn atomic_u32(&self, offset: usize) -> &AtomicU32 {
        assert!(offset % 4 == 0 && offset + 4 <= self.len, "unaligned or out-of-bounds cell");
        // SAFETY: in bounds and 4-aligned (the mapping is page aligned); only accessed
        // atomically or by byte copies to other, disjoint, offsets.
        unsafe { &*(self.ptr.add(offset) as *const AtomicU32) }
    }

    pub(crate) fn atomic_u64(&self, offset: usize) -> &AtomicU64 {
        assert!(offset % 8 == 0 && offset + 8 <= self.len, "unaligned or out-of-bounds cell");
        // SAFETY: in bounds, 8-aligned (the mapping is page aligned), and only accessed
        // atomically or by byte copies to other, disjoint, offsets.
        unsafe { &*(self.ptr.add(offset) as *const AtomicU64) }
    }
}

impl Drop for LocalMap {
    fn drop(&mut self) {
        // SAFETY: we own this mapping; no reference into it outlives `self`.
        let _ = unsafe { rustix::mm::munmap(self.ptr.cast(), self.len) };
    }
}

/// Backs the pages of `len` bytes at `addr` of this process with memory and maps them
/// writable now, instead of one page fault per page later (best effort: kernels before 5.14
/// lack the advice, which only costs the faults back).
pub fn populate_write(addr: u64, len: usize) {
    // SAFETY: populating writes no memory and changes no contents; an address range that is
    // not mapped, or not writable, only makes the call fail, which is ignored.
    let _ = unsafe { rustix::mm::madvise(addr as *mut _, len, rustix::mm::Advice::LinuxPopulateWrite) };
}

/// Maps the pages of `len` bytes at `addr` of this process now, for reading, instead of one
/// page fault per page later (best effort, as [`populate_write`]).
pub(crate) fn populate_read(addr: u64, len: usize) {
    // SAFETY: populating reads no memory and changes no contents; an address range that is
    // not mapped only makes the call fail, which is ignored.
    let _ = unsafe { rustix::mm::madvise(addr as *mut _, len, rustix::mm::Advice::LinuxPopulateRead) };
}

/// Asks for transparent huge pages behind `len` bytes at `addr` of this process (best effort:
/// the system may not allow them, e.g. for shared memory by default).
pub(crate) fn advise_huge_pages(addr: u64, len: usize) {
    // SAFETY: the advice changes how memory is backed, never its contents; an address range
    // that is not mapped only makes the call fail, which is ignored.
    let _ = unsafe { rustix::mm::madvise(addr as *mut _, len, rustix::mm::Advice::LinuxHugepage) };
}

/// Maps `len` bytes of `fd` at exactly `addr` with `prot`, failing if anything is there.
pub(crate) fn map_fixed(fd: Option<BorrowedFd<'_>>, addr: u64, len: usize, prot: Protection) -> Result<(), MemError> {
    let call = || format!("mmap({addr:#x}, {len:#x})");
    // SAFETY: MAP_FIXED_NOREPLACE never replaces an existing mapping, so no memory anyone
    // uses changes; on kernels that ignore the flag the address is checked below.
    let got = unsafe {
        match fd {
            Some(fd) => rustix::mm::mmap(addr as *mut _, len, prot_flags(prot), MapFlags::SHARED | MapFlags::FIXED_NOREPLACE, fd, 0),
            None => rustix::mm::mmap_anonymous(
                addr as *mut _,
                len,
                prot_flags(prot),
                MapFlags::PRIVATE | MapFlags::NORESERVE | MapFlags::FIXED_NOREPLACE,
            ),
        }
    }
    .map_err(|e| MemError::sys(call(), e))?;
    if got as u64 != addr {
        // SAFETY: the kernel just created this mapping for us at another address.
        let _ = unsafe { rustix::mm::munmap(got, len) };
        return Err(MemError::Sys { call: call(), errno: "address taken".into() });
    }
    Ok(())
}

/// Unmaps `addr..addr+len`.
pub(crate) fn unmap(addr: u64, len: usize) -> Result<(), MemError> {
    // SAFETY: callers only release ranges the policy mapped itself (trampoline space), which
    // hold no Rust objects.
    unsafe { rustix::mm::munmap(addr as *mut _, len) }.map_err(|e| MemError::sys(format!("munmap({addr:#x})"), e))
}

/// Changes protection of `addr..addr+len`.
pub(crate) fn protect(addr: u64, len: usize, prot: Protection) -> Result<(), MemError> {
    let mut f = MprotectFlags::empty();
    f.set(MprotectFlags::READ, prot.read);
    f.set(MprotectFlags::WRITE, prot.write);
    f.set(MprotectFlags::EXEC, prot.exec);
    let page = addr & !0xfff;
    // SAFETY: changing protection cannot break Rust's aliasing rules; a caller that removes
    // access to memory it still uses faults, which is the documented contract of `protect`.
    unsafe { rustix::mm::mprotect(page as *mut _, (addr + len as u64 - page) as usize, f) }
        .map_err(|e| MemError::sys(format!("mprotect({addr:#x})"), e))
}

/// Reads this process's memory at `addr` without faulting on unmapped bytes.
pub(crate) fn read_self(addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
    let local = libc::iovec { iov_base: buf.as_mut_ptr().cast(), iov_len: buf.len() };
    let remote = libc::iovec { iov_base: addr as *mut _, iov_len: buf.len() };
    // SAFETY: the kernel checks `remote` and fails with EFAULT instead of faulting; `local` is
    // our own buffer of the given length.
    let n = unsafe { libc::process_vm_readv(libc::getpid(), &local, 1, &remote, 1, 0) };
    if n == buf.len() as isize {
        Ok(())
    } else {
        Err(MemError::Unreadable { addr, len: buf.len() })
    }
}
