//! Code the program writes after it was cached (JIT compilers, self-modifying code). Pages
//! mapped writable *and* executable lose their write permission while blocks built from them
//! are in the cache; the program's next write to such a page faults, the fragments of that
//! page are invalidated, write permission comes back, and the write is re-run. Pages mapped
//! without write permission need nothing (changing them takes an `mprotect`, which
//! invalidates), and RW→RX cycles invalidate on the `mprotect`. A page written more than
//! [`VOLATILE_AFTER`] times stays writable: blocks built from it check, every time they are
//! entered, that the application's bytes are still those they were built from.

use crate::os::regions::ExecRegions;
use std::collections::BTreeSet;
use std::ops::Range;

const PAGE: u64 = 4096;
/// Write faults after which a page is no longer protected but verified.
pub const VOLATILE_AFTER: u32 = 32;

/// Writable and executable memory of the program, and which of its pages the engine
/// write-protected.
#[derive(Debug, Default)]
pub struct CodeWrites {
    writable_code: ExecRegions,
    protected: BTreeSet<u64>,
    /// Write faults per page.
    writes: std::collections::HashMap<u64, u32>,
    /// Pages written too often to protect: their blocks verify themselves.
    volatile: BTreeSet<u64>,
    /// Write faults handled.
    pub faults: u64,
    /// Verifications of volatile blocks that found changed bytes.
    pub stale: u64,
}

fn mprotect(page: u64, prot: i32) -> bool {
    // SAFETY: changes the protection of one page of the program's own writable and
    // executable memory; the engine reads it only, the program's accesses are restored on
    // its first write.
    unsafe { libc::mprotect(page as *mut _, PAGE as usize, prot) == 0 }
}

impl CodeWrites {
    /// The program gave `range` protection `prot` (mmap or mprotect).
    pub fn mapped(&mut self, range: Range<u64>, prot: u64) {
        let wx = (libc::PROT_WRITE | libc::PROT_EXEC) as u64;
        if prot & wx == wx {
            self.writable_code.add(range.clone());
        } else {
            self.writable_code.remove(range.clone());
        }
        self.forget_pages(range);
    }

    /// The program unmapped `range`.
    pub fn unmapped(&mut self, range: Range<u64>) {
        self.writable_code.remove(range.clone());
        self.writes.retain(|p, _| !range.contains(p));
        self.forget_pages(range);
    }

    /// The pages of `range` got new protection: none is write-protected or verified by
    /// the engine any more.
    fn forget_pages(&mut self, range: Range<u64>) {
        self.protected.retain(|p| !range.contains(p));
        self.volatile.retain(|p| !range.contains(p));
    }

    /// True when blocks from `range` must verify their bytes on entry.
    pub fn must_verify(&self, range: Range<u64>) -> bool {
        self.volatile.range(range.start & !(PAGE - 1)..range.end).next().is_some()
    }

    /// A block was built from `range`: write-protect its writable code pages.
    pub fn watch(&mut self, range: Range<u64>) {
        let mut page = range.start & !(PAGE - 1);
        while page < range.end {
            let watched = self.writable_code.end_of(page).is_some() && !self.volatile.contains(&page);
            if watched && !self.protected.contains(&page) && mprotect(page, libc::PROT_READ | libc::PROT_EXEC) {
                self.protected.insert(page);
            }
            page += PAGE;
        }
    }

    /// True when the engine protects any page (most programs never write code: then a
    /// system call needs no look at its arguments).
    pub fn any_protected(&self) -> bool {
        !self.protected.is_empty()
    }

    /// The pages the engine protected in `range`: a system call that writes there would get
    /// EFAULT from the kernel instead of a fault the engine sees, so the caller lifts them
    /// first (with [`CodeWrites::write_fault`]).
    pub fn protected_in(&self, range: Range<u64>) -> Vec<u64> {
        self.protected.range(range.start & !(PAGE - 1)..range.end).copied().collect()
    }

    /// A write fault at `addr`: if it hit a page the engine protected, gives write
    /// permission back and says which page's fragments must go.
    pub fn write_fault(&mut self, addr: u64) -> WriteFault {
        let page = addr & !(PAGE - 1);
        if !self.protected.remove(&page) {
            // Writable code that is not protected now: another thread's fault on the same
            // page gave write permission back after this fault was raised.
            return if self.writable_code.end_of(page).is_some() { WriteFault::Lifted } else { WriteFault::NotWatched };
        }
        mprotect(page, libc::PROT_READ | libc::PROT_WRITE | libc::PROT_EXEC);
        self.faults += 1;
        let writes = self.writes.entry(page).or_default();
        *writes += 1;
        if *writes >= VOLATILE_AFTER {
            self.volatile.insert(page);
        }
        WriteFault::Unwatched(page..page + PAGE)
    }
}

/// What a write fault was to [`CodeWrites`].
#[derive(Debug, PartialEq, Eq)]
pub enum WriteFault {
    /// It hit this protected page, writable again now: its fragments must go, the write
    /// runs again.
    Unwatched(Range<u64>),
    /// The page is writable again already: the write runs again.
    Lifted,
    /// Not a page the engine protects: the fault is the program's.
    NotWatched,
}
