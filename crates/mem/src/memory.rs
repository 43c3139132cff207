//! The memory-access policy trait.

use crate::sys::LocalMap;
use crate::{AddressSpace, MemError, Protection};
use std::sync::atomic::Ordering;

/// Memory access to the process being changed: this one ([`crate::InProcess`]) or another one
/// (the remote policy). Addresses are addresses in that process.
pub trait Memory: Send + Sync + 'static {
    /// Reads `buf.len()` bytes at `addr`; fails cleanly (no fault) when any byte is unmapped.
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError>;
    /// Writes `data` at `addr`, also into read-only code, the way a debugger does, without
    /// making any page writable. Callers keep other threads away from the bytes written.
    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError>;
    /// Changes the protection of the pages covering `addr..addr+len`.
    fn protect(&self, addr: u64, len: usize, prot: Protection) -> Result<(), MemError>;
    /// Reserves `len` bytes of inaccessible address space at exactly `addr`.
    fn reserve(&self, addr: u64, len: usize) -> Result<(), MemError>;
    /// Commits reserved pages with protection `prot`.
    fn commit(&self, addr: u64, len: usize, prot: Protection) -> Result<(), MemError>;
    /// Releases (unmaps) `addr..addr+len`.
    fn release(&self, addr: u64, len: usize) -> Result<(), MemError>;
    /// The current address-space map.
    fn address_space(&self) -> Result<AddressSpace, MemError>;
    /// Maps `len` bytes of fresh shared memory at exactly `addr`, read+execute there and
    /// read+write in this process; fails if `addr` is taken.
    fn map_dual(&self, addr: u64, len: usize) -> Result<DualView, MemError>;
    /// Unmaps the executable side of `view`; the local side goes with the value.
    fn unmap_dual(&self, view: DualView) -> Result<(), MemError> {
        self.release(view.exec, view.len)
    }
}

/// Shared memory seen twice: executed at `exec` in the target, written here.
#[derive(Debug)]
pub struct DualView {
    /// Address of the read+execute view in the target process.
    pub exec: u64,
    /// Length in bytes.
    pub len: usize,
    local: LocalMap,
}

impl DualView {
    /// Wraps a local read+write mapping of the memory mapped at `exec` in the target.
    pub(crate) fn new(exec: u64, len: usize, local: LocalMap) -> DualView {
        DualView { exec, len, local }
    }

    /// Maps `fd` (shared memory of `len` bytes whose executable view is at `exec` in the
    /// target process) read+write here.
    pub fn map_local(exec: u64, len: usize, fd: std::os::fd::BorrowedFd<'_>) -> Result<DualView, crate::MemError> {
        Ok(DualView { exec, len, local: LocalMap::shared_rw(fd, len)? })
    }

    /// Writes `data` at byte `offset` through the writable view.
    pub fn write(&self, offset: usize, data: &[u8]) {
        self.local.write(offset, data)
    }

    /// Backs `len` bytes at byte `offset` with memory now and maps them in the writable view
    /// (and in the executable view when it is in this process), so that writing and then
    /// running code there takes no page faults.
    pub fn populate(&self, offset: usize, len: usize, exec_in_this_process: bool) {
        self.local.populate(offset, len);
        if exec_in_this_process {
            crate::sys::populate_read(self.exec + offset as u64, len);
        }
    }

    /// Asks for transparent huge pages behind the writable view (and the executable view
    /// when it is in this process): fewer TLB misses running a large cache. Effective only
    /// where the system allows huge pages for shared memory
    /// (`/sys/kernel/mm/transparent_hugepage/shmem_enabled` at `advise` or `always`; the
    /// default is `never`); elsewhere nothing changes.
    pub fn advise_huge_pages(&self, exec_in_this_process: bool) {
        self.local.advise_huge_pages();
        if exec_in_this_process {
            crate::sys::advise_huge_pages(self.exec, self.len);
        }
    }

    /// Reads `buf.len()` bytes at byte `offset`.
    pub fn read(&self, offset: usize, buf: &mut [u8]) {
        self.local.read(offset, buf)
    }

    /// Stores an aligned 8-byte value atomically (a pointer other threads may be loading).
    pub fn store_u64(&self, offset: usize, value: u64) {
        self.local.atomic_u64(offset).store(value, Ordering::Release)
    }

    /// Stores an aligned 4-byte value atomically: a branch displacement code may be executing.
    pub fn store_u32(&self, offset: usize, value: u32) {
        self.local.atomic_u32(offset).store(value, Ordering::Release)
    }

    /// Loads an aligned 8-byte value.
    pub fn load_u64(&self, offset: usize) -> u64 {
        self.local.atomic_u64(offset).load(Ordering::Acquire)
    }
}
