//! What a fork server's child found: the blocks it built and the indirect-branch targets it
//! missed, in memory shared with the server.

/// Most block tags one child reports.
const REPORT_SLOTS: usize = (1 << 20) / 8 - 1;

/// Tags of the blocks a child built and of the indirect-branch targets it missed, in memory
/// shared with its fork server: a count, then the tags.
#[derive(Debug)]
pub struct BuiltBlocks {
    base: *mut u64,
}

// SAFETY: the mapping is owned by the process for its whole life; only the thread in the
// dispatcher (under the engine lock) touches it.
unsafe impl Send for BuiltBlocks {}

impl BuiltBlocks {
    /// A fresh, empty report in memory that children will share.
    pub fn new() -> Option<BuiltBlocks> {
        let len = (REPORT_SLOTS + 1) * 8;
        // SAFETY: a fresh shared anonymous mapping, inherited by children.
        let p = unsafe {
            libc::mmap(std::ptr::null_mut(), len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_SHARED | libc::MAP_ANONYMOUS, -1, 0)
        };
        (p != libc::MAP_FAILED).then(|| BuiltBlocks { base: p.cast() })
    }

    fn count(&self) -> usize {
        // SAFETY: the first word of the live mapping.
        (unsafe { std::ptr::read_volatile(self.base) } as usize).min(REPORT_SLOTS)
    }

    /// Notes that this process built the block at `tag` or missed it as an indirect-branch
    /// target (dropped when the report is full).
    pub fn push(&mut self, tag: u64) {
        let n = self.count();
        if n < REPORT_SLOTS {
            // SAFETY: slot n + 1 is inside the mapping (n < REPORT_SLOTS).
            unsafe {
                std::ptr::write_volatile(self.base.add(n + 1), tag);
                std::ptr::write_volatile(self.base, n as u64 + 1);
            }
        }
    }

    /// The tags reported since the last call, emptying the report.
    pub fn take(&mut self) -> Vec<u64> {
        let n = self.count();
        // SAFETY: slots 1..=n are inside the mapping.
        let tags = (1..=n).map(|i| unsafe { std::ptr::read_volatile(self.base.add(i)) }).collect();
        // SAFETY: the first word of the live mapping.
        unsafe { std::ptr::write_volatile(self.base, 0) };
        tags
    }
}
