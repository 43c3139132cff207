//! The program's emulated brk. The real brk belongs to the runtime's libc, so the program's
//! break lives in a region of its own just past its image.

const PAGE: u64 = 4096;

/// The program's emulated brk: a region of its own just past its image, reserved up front
/// (inaccessible until the break moves over it) so that no mapping can take its room.
#[derive(Debug)]
pub struct Brk {
    start: u64,
    current: u64,
    mapped_end: u64,
}

/// Room reserved for the program's brk.
const BRK_ROOM: u64 = 1 << 30;

impl Brk {
    /// A brk starting (and ending) at `start`, page aligned, with its room reserved.
    pub fn new(start: u64) -> Brk {
        // SAFETY: an inaccessible reservation that replaces nothing (FIXED_NOREPLACE); if the
        // room is taken, the break simply cannot grow as far, as natively.
        unsafe {
            libc::mmap(
                start as *mut _,
                BRK_ROOM as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        Brk { start, current: start, mapped_end: start }
    }

    /// The pages the break spans now (the kernel's `[heap]`).
    pub fn heap(&self) -> std::ops::Range<u64> {
        self.start..self.mapped_end
    }

    /// The brk system call: moves the break to `want` if it can, returns the break.
    pub fn set(&mut self, want: u64) -> u64 {
        if want < self.start || want > self.start + BRK_ROOM {
            return self.current;
        }
        let end = want.next_multiple_of(PAGE);
        let (from, to, prot) = if end > self.mapped_end {
            (self.mapped_end, end, libc::PROT_READ | libc::PROT_WRITE)
        } else {
            (end, self.mapped_end, libc::PROT_NONE)
        };
        if from < to {
            let flags =
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | if prot == libc::PROT_NONE { libc::MAP_NORESERVE } else { 0 };
            // SAFETY: within the brk room reserved in `new`: only the program's brk pages
            // (fresh zero pages when growing, given back when shrinking) change.
            let p = unsafe { libc::mmap(from as *mut _, (to - from) as usize, prot, flags, -1, 0) };
            if p == libc::MAP_FAILED {
                return self.current;
            }
            self.mapped_end = end;
        }
        self.current = want;
        want
    }
}
