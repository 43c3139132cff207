//! The memory policy for this process.

use crate::sys::{self, LocalMap};
use crate::{AddressSpace, DualView, MemError, Memory, Protection};
use rustix::fs::{MemfdFlags, Mode, OFlags};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;

/// Memory of this process. Code is written through `/proc/self/mem` (as a debugger writes),
/// so patching never makes a page writable and executable at once.
#[derive(Debug, Default)]
pub struct InProcess {
    /// `/proc/self/mem`, opened on first write and reopened in a forked child.
    proc_mem: Mutex<Option<(u32, OwnedFd)>>,
}

impl InProcess {
    /// A policy for this process.
    pub fn new() -> InProcess {
        InProcess::default()
    }
}

impl Memory for InProcess {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        sys::read_self(addr, buf)
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        let pid = rustix::process::getpid().as_raw_nonzero().get() as u32;
        let mut guard = self.proc_mem.lock().unwrap_or_else(|p| p.into_inner());
        if guard.as_ref().is_none_or(|(p, _)| *p != pid) {
            let fd = rustix::fs::open("/proc/self/mem", OFlags::RDWR | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| MemError::sys("open(/proc/self/mem)", e))?;
            *guard = Some((pid, fd));
        }
        let fd = &guard.as_ref().expect("opened above").1;
        let unwritable = |errno: String| MemError::Unwritable { addr, len: data.len(), errno };
        match rustix::io::pwrite(fd, data, addr) {
            Ok(n) if n == data.len() => Ok(()),
            Ok(n) => Err(unwritable(format!("short write ({n} bytes)"))),
            Err(e) => Err(unwritable(e.to_string())),
        }
    }

    fn protect(&self, addr: u64, len: usize, prot: Protection) -> Result<(), MemError> {
        sys::protect(addr, len, prot)
    }

    fn reserve(&self, addr: u64, len: usize) -> Result<(), MemError> {
        sys::map_fixed(None, addr, len, Protection::NONE)
    }

    fn commit(&self, addr: u64, len: usize, prot: Protection) -> Result<(), MemError> {
        sys::protect(addr, len, prot)
    }

    fn release(&self, addr: u64, len: usize) -> Result<(), MemError> {
        sys::unmap(addr, len)
    }

    fn address_space(&self) -> Result<AddressSpace, MemError> {
        AddressSpace::read(None)
    }

    fn map_dual(&self, addr: u64, len: usize) -> Result<DualView, MemError> {
        let fd = rustix::fs::memfd_create("rewire-code", MemfdFlags::CLOEXEC).map_err(|e| MemError::sys("memfd_create", e))?;
        rustix::fs::ftruncate(&fd, len as u64).map_err(|e| MemError::sys("ftruncate(memfd)", e))?;
        sys::map_fixed(Some(fd.as_fd()), addr, len, Protection::RX)?;
        match LocalMap::shared_rw(fd.as_fd(), len) {
            Ok(local) => Ok(DualView::new(addr, len, local)),
            Err(e) => {
                let _ = sys::unmap(addr, len);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fail_cleanly_on_unmapped_memory() {
        let m = InProcess::new();
        let mut b = [0u8; 8];
        assert!(matches!(m.read(8, &mut b), Err(MemError::Unreadable { .. })));
        let x = 0x1122_3344_5566_7788u64;
        m.read(&x as *const u64 as u64, &mut b).unwrap();
        assert_eq!(u64::from_le_bytes(b), x);
    }

    #[test]
    fn dual_view_writes_show_in_the_executable_view_which_is_not_writable() {
        let m = InProcess::new();
        let space = m.address_space().unwrap();
        let here = reads_fail_cleanly_on_unmapped_memory as fn() as usize as u64;
        let addr = space.free_near(here, 0x10000, 1 << 30, 0x10000)[0];
        let view = m.map_dual(addr, 0x10000).unwrap();
        view.write(0x100, &[0xc3]);
        view.store_u64(0x108, 42);
        let mut b = [0u8; 16];
        m.read(addr + 0x100, &mut b).unwrap();
        assert_eq!(b[0], 0xc3);
        assert_eq!(u64::from_le_bytes(b[8..].try_into().unwrap()), 42);
        let after = m.address_space().unwrap();
        let exec = after.find(addr).unwrap();
        assert_eq!(exec.prot, Protection::RX);
        assert!(after.mappings.iter().all(|m| !(m.prot.write && m.prot.exec)), "no page is writable and executable");
        m.unmap_dual(view).unwrap();
        assert!(m.address_space().unwrap().find(addr).is_none());
    }

    #[test]
    fn reserve_commit_release() {
        let m = InProcess::new();
        let space = m.address_space().unwrap();
        let addr = space.free_near(0x7000_0000_0000, 0x4000, 1 << 30, 0x1000)[0];
        m.reserve(addr, 0x4000).unwrap();
        assert!(m.reserve(addr, 0x1000).is_err(), "a reserved address is taken");
        let mut b = [0u8; 1];
        assert!(m.read(addr, &mut b).is_err(), "reserved memory is inaccessible");
        m.commit(addr, 0x1000, Protection::RW).unwrap();
        m.write(addr, &[7]).unwrap();
        m.read(addr, &mut b).unwrap();
        assert_eq!(b[0], 7);
        m.release(addr, 0x4000).unwrap();
        assert!(m.read(addr, &mut b).is_err());
    }

    #[test]
    fn writes_into_read_only_code_without_making_it_writable() {
        let m = InProcess::new();
        let space = m.address_space().unwrap();
        let addr = space.free_near(0x7100_0000_0000, 0x1000, 1 << 30, 0x1000)[0];
        m.reserve(addr, 0x1000).unwrap();
        m.commit(addr, 0x1000, Protection::RX).unwrap();
        m.write(addr + 3, &[1, 2, 3]).unwrap();
        let mut b = [0u8; 3];
        m.read(addr + 3, &mut b).unwrap();
        assert_eq!(b, [1, 2, 3]);
        assert_eq!(m.address_space().unwrap().find(addr).unwrap().prot, Protection::RX);
        m.release(addr, 0x1000).unwrap();
    }
}
