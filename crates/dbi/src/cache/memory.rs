//! The code cache: dual-mapped units of memory (executed through a read+execute view,
//! written through a read+write view, so no page is ever writable and executable), one or
//! more per ±2 GiB neighbourhood of application code so that RIP-relative operands copied
//! from the application almost always still reach. Units are filled front to back and added
//! on demand.

use crate::error::RunError;
use rewire_mem::{AddressSpace, DualView, InProcess, Memory};
use std::ops::Range;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::FileExt;

/// Copies of the cache units, made for a child process.
#[derive(Debug)]
pub struct Snapshot {
    fds: Vec<OwnedFd>,
}

fn memfd(len: usize) -> Result<OwnedFd, RunError> {
    // SAFETY: memfd_create with a static NUL-terminated name; we own the returned fd.
    let fd = unsafe { libc::memfd_create(c"rewire-code".as_ptr(), libc::MFD_CLOEXEC) };
    if fd < 0 {
        return Err(RunError::Sys("memfd_create", std::io::Error::last_os_error()));
    }
    // SAFETY: a fresh descriptor nobody else owns.
    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
    std::fs::File::from(fd.try_clone().map_err(|e| RunError::Sys("dup(memfd)", e))?)
        .set_len(len as u64)
        .map_err(|e| RunError::Sys("ftruncate(memfd)", e))?;
    Ok(fd)
}

/// A copy of the code in `u`, in fresh shared memory.
fn copy_of(u: &Unit) -> Result<OwnedFd, RunError> {
    let fd = memfd(u.view.len)?;
    let mut bytes = vec![0u8; u.used];
    u.view.read(0, &mut bytes);
    std::fs::File::from(fd.try_clone().map_err(|e| RunError::Sys("dup(memfd)", e))?)
        .write_all_at(&bytes, 0)
        .map_err(|e| RunError::Sys("write(memfd)", e))?;
    Ok(fd)
}

/// Maps `fd`, a copy of `u`'s code, over both of `u`'s views.
fn remap(u: &mut Unit, fd: OwnedFd) -> Result<(), RunError> {
    // SAFETY: replaces the executable view of a unit of ours with an identical copy (same
    // contents, same address): code running from it sees no difference.
    let p = unsafe {
        libc::mmap(
            u.view.exec as *mut _,
            u.view.len,
            libc::PROT_READ | libc::PROT_EXEC,
            libc::MAP_SHARED | libc::MAP_FIXED,
            fd.as_raw_fd(),
            0,
        )
    };
    if p == libc::MAP_FAILED {
        return Err(RunError::Sys("mmap(cache copy)", std::io::Error::last_os_error()));
    }
    u.view = DualView::map_local(u.view.exec, u.view.len, fd.as_fd()).map_err(RunError::Cache)?;
    // The copy is present up to `used` only; what comes after is made present anew.
    u.populated = u.used;
    u.view.advise_huge_pages(true);
    Ok(())
}

/// Bytes per cache unit.
const UNIT_BYTES: usize = 16 << 20;
/// How far a unit may be from the code it holds: within rel32 reach with room to spare, so
/// that the application's RIP-relative operands (which point into its own module, close to
/// the code) still reach from the cache. The nearest free space is taken first.
const UNIT_REACH: u64 = (1 << 31) - (128 << 20);

/// Units start at multiples of this, so that huge pages can back them where the system
/// allows them for shared memory.
const HUGE_PAGE: u64 = 2 << 20;

/// Bytes of a unit made present at a time, ahead of the code written into them: one system
/// call instead of two page faults per page (writing through one view, running through the
/// other), which cost about 3 µs each on a virtual machine.
const POPULATE_BYTES: usize = 64 << 10;

#[derive(Debug)]
struct Unit {
    view: DualView,
    used: usize,
    /// Bytes from the start made present in both views.
    populated: usize,
    /// Shared with the fork server this process was forked from (see [`CodeCache::freeze`]).
    frozen: bool,
}

impl Unit {
    fn range(&self) -> Range<u64> {
        self.view.exec..self.view.exec + self.view.len as u64
    }
}

/// All cache memory of the process.
#[derive(Debug, Default)]
pub struct CodeCache {
    units: Vec<Unit>,
    /// Reclaimed ranges (address → length), reused before fresh space.
    free: std::collections::BTreeMap<u64, usize>,
    /// The same ranges by (length, address): the smallest that fits is found without
    /// walking the many small ones a JIT's invalidations leave.
    free_by_size: std::collections::BTreeSet<(usize, u64)>,
}

/// Where a piece of code may go: a unit and the address of its next free byte.
#[derive(Debug, Clone, Copy)]
pub struct Place {
    unit: usize,
    /// Address the code will have.
    pub addr: u64,
    room: usize,
}

impl CodeCache {
    /// The next free place in a unit near `near` with at least `want` bytes of room (a new
    /// unit if needed).
    pub fn place(&mut self, near: u64, want: usize) -> Result<Place, RunError> {
        let reclaimed = self.free_by_size.range((want, 0)..).find(|&&(_, a)| a.abs_diff(near) < UNIT_REACH).map(|&(len, a)| (a, len));
        if let Some((addr, room)) = reclaimed {
            let unit = self.units.iter().position(|u| u.range().contains(&addr)).expect("free space inside a unit");
            return Ok(Place { unit, addr, room });
        }
        let found = self.units.iter().position(|u| {
            !u.frozen
                && u.view.len - u.used >= want
                && u.range().start.abs_diff(near) < UNIT_REACH
                && u.range().end.abs_diff(near) < UNIT_REACH
        });
        let unit = match found {
            Some(i) => i,
            None => self.add_unit(near)?,
        };
        let u = &self.units[unit];
        Ok(Place { unit, addr: u.view.exec + u.used as u64, room: u.view.len - u.used })
    }

    fn add_unit(&mut self, near: u64) -> Result<usize, RunError> {
        let space = AddressSpace::read(None).map_err(RunError::Cache)?;
        let len = UNIT_BYTES as u64;
        let candidates = space.free_near(near, len, UNIT_REACH - len, HUGE_PAGE);
        let addr =
            candidates.into_iter().next().ok_or_else(|| RunError::Unsupported(format!("no free address space for code near {near:#x}")))?;
        let view = InProcess::new().map_dual(addr, UNIT_BYTES).map_err(RunError::Cache)?;
        view.advise_huge_pages(true);
        self.units.push(Unit { view, used: 0, populated: 0, frozen: false });
        Ok(self.units.len() - 1)
    }

    /// Copies `code` to `place` (which it must fit) and claims the bytes.
    pub fn commit(&mut self, place: Place, code: &[u8]) {
        assert!(code.len() <= place.room, "code larger than the room it was built for");
        let u = &mut self.units[place.unit];
        let offset = (place.addr - u.view.exec) as usize;
        let end = offset + code.len();
        if end > u.populated {
            let to = end.next_multiple_of(POPULATE_BYTES).min(u.view.len);
            u.view.populate(u.populated, to - u.populated, true);
            u.populated = to;
        }
        u.view.write(offset, code);
        if offset == u.used {
            u.used += code.len();
        } else if let Some(len) = self.take_free(place.addr) {
            if len > code.len() {
                self.put_free(place.addr + code.len() as u64, len - code.len());
            }
        }
    }

    /// Gives back `len` bytes at `addr` (code no thread can reach or be in any more).
    pub fn release(&mut self, addr: u64, len: usize) {
        let unit = self.unit_of(addr).expect("released code inside a unit");
        if unit.frozen {
            return;
        }
        let bounds = unit.range();
        let (mut start, mut len) = (addr, len);
        // Merge with free neighbours in the same unit only (units may be adjacent in memory,
        // and a free range must not run from one into the next).
        if let Some((&prev, &plen)) = self.free.range(bounds.start..start).next_back() {
            if prev + plen as u64 == start {
                self.take_free(prev);
                start = prev;
                len += plen;
            }
        }
        if start + (len as u64) < bounds.end {
            if let Some(next) = self.take_free(start + len as u64) {
                len += next;
            }
        }
        self.put_free(start, len);
    }

    /// Records `len` free bytes at `addr`.
    fn put_free(&mut self, addr: u64, len: usize) {
        self.free.insert(addr, len);
        self.free_by_size.insert((len, addr));
    }

    /// Takes the free range at `addr` out of the free lists; its length.
    fn take_free(&mut self, addr: u64) -> Option<usize> {
        let len = self.free.remove(&addr)?;
        self.free_by_size.remove(&(len, addr));
        Some(len)
    }

    /// Bytes waiting for reuse.
    pub fn reclaimed(&self) -> usize {
        self.free.values().sum()
    }

    /// Room left at `place`.
    pub fn fits(place: &Place, len: usize) -> bool {
        len <= place.room
    }

    /// Atomically rewrites the aligned 4-byte field at cache address `addr` (a frozen unit
    /// gets a copy of its own first).
    pub fn patch_u32(&mut self, addr: u64, value: u32) {
        if let Err(e) = self.thaw(addr) {
            panic!("cannot copy a code cache unit shared with the fork server: {e}");
        }
        let u = self.unit_of(addr).expect("patch outside the code cache");
        u.view.store_u32((addr - u.view.exec) as usize, value);
    }

    fn unit_of(&self, addr: u64) -> Option<&Unit> {
        self.units.iter().find(|u| u.range().contains(&addr))
    }

    /// True when `addr` is inside the code cache.
    pub fn contains(&self, addr: u64) -> bool {
        self.unit_of(addr).is_some()
    }

    /// Copies every unit into fresh shared memory, for a child about to be forked: cache
    /// memory is shared (the two views alias one memfd), so without its own copy a child's
    /// new blocks would land in its parent's cache.
    pub fn snapshot(&self) -> Result<Snapshot, RunError> {
        Ok(Snapshot { fds: self.units.iter().map(copy_of).collect::<Result<_, _>>()? })
    }

    /// In the forked child: replaces both views of every unit by the snapshot's copy.
    pub fn adopt(&mut self, snap: Snapshot) -> Result<(), RunError> {
        for (u, fd) in self.units.iter_mut().zip(snap.fds) {
            remap(u, fd)?;
        }
        Ok(())
    }

    /// In a child of a fork server: the units stay shared with the parent, which builds
    /// into them between children, and this process does not write them. New code goes
    /// into units of its own; a unit is copied (as by [`CodeCache::adopt`]) only when this
    /// process must change code in it (an unlink, a trace taking over a block).
    pub fn freeze(&mut self) {
        for u in &mut self.units {
            u.frozen = true;
        }
        self.free.clear();
        self.free_by_size.clear();
    }

    /// True when `addr` is in a unit this process shares with its fork server.
    pub fn is_frozen(&self, addr: u64) -> bool {
        self.unit_of(addr).is_some_and(|u| u.frozen)
    }

    /// Gives the frozen unit holding `addr` a copy of its own.
    fn thaw(&mut self, addr: u64) -> Result<(), RunError> {
        let Some(u) = self.units.iter_mut().find(|u| u.frozen && u.range().contains(&addr)) else { return Ok(()) };
        let fd = copy_of(u)?;
        remap(u, fd)?;
        u.frozen = false;
        Ok(())
    }

    /// Bytes of code in the cache.
    pub fn used(&self) -> usize {
        self.units.iter().map(|u| u.used).sum()
    }

    /// Bytes of cache memory reserved.
    pub fn reserved(&self) -> usize {
        self.units.len() * UNIT_BYTES
    }
}
