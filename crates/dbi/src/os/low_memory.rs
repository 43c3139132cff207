//! Memory below 2 GiB, for data that inline code addresses with a sign-extended 32-bit
//! displacement (a coverage map): a System V shared-memory segment attached there, or
//! private zeroed memory. It is placed in a free gap around 1 GiB, away from where
//! programs, their libraries and their heaps usually live.

use rewire_mem::AddressSpace;

/// Where the search for room starts.
const NEAR: u64 = 1 << 30;
/// The highest byte such memory may reach.
const LIMIT: u64 = 1 << 31;

/// Why low memory could not be had.
#[derive(Debug, thiserror::Error)]
pub enum LowMemoryError {
    /// The address space has no free room below 2 GiB.
    #[error("no free address space below 2 GiB for {0} bytes")]
    NoRoom(usize),
    /// The segment does not exist or cannot be attached.
    #[error("cannot attach System V shared memory segment {id}: {err}")]
    Attach {
        /// The segment's id.
        id: i32,
        /// What the kernel said.
        err: std::io::Error,
    },
    /// The memory could not be mapped.
    #[error("cannot map {len} bytes below 2 GiB: {err}")]
    Map {
        /// Bytes asked for.
        len: usize,
        /// What the kernel said.
        err: std::io::Error,
    },
}

/// A mapping below 2 GiB, kept for the life of the process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LowMemory {
    /// Its address (below 2 GiB, page aligned).
    pub addr: u32,
    /// Its length in bytes.
    pub len: usize,
}

fn room(len: usize) -> Result<u64, LowMemoryError> {
    let space = AddressSpace::read(None).map_err(|_| LowMemoryError::NoRoom(len))?;
    let len64 = (len as u64).next_multiple_of(4096);
    space
        .free_near(NEAR, len64, NEAR - 4096, 4096)
        .into_iter()
        .find(|&a| a >= 1 << 16 && a + len64 <= LIMIT)
        .ok_or(LowMemoryError::NoRoom(len))
}

/// The size of System V segment `id`.
pub fn segment_size(id: i32) -> Result<usize, LowMemoryError> {
    // SAFETY: a zeroed shmid_ds is valid; IPC_STAT fills it.
    let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
    // SAFETY: IPC_STAT only reads the segment's description into `ds`.
    if unsafe { libc::shmctl(id, libc::IPC_STAT, &mut ds) } != 0 {
        return Err(LowMemoryError::Attach { id, err: std::io::Error::last_os_error() });
    }
    Ok(ds.shm_segsz)
}

/// Attaches System V segment `id` below 2 GiB, read+write.
pub fn attach_segment(id: i32) -> Result<LowMemory, LowMemoryError> {
    let len = segment_size(id)?;
    let at = room(len)?;
    // SAFETY: attaches the segment at a free, page-aligned address (SHMLBA is the page size
    // on x86-64): nothing of this process is there.
    let p = unsafe { libc::shmat(id, at as *const _, 0) };
    if p as isize == -1 {
        return Err(LowMemoryError::Attach { id, err: std::io::Error::last_os_error() });
    }
    Ok(LowMemory { addr: p as u64 as u32, len })
}

/// Maps `len` bytes of private zeroed read+write memory at `at` (`fixed`: the mmap flag
/// that places it there).
fn map_zeroed(at: u64, len: usize, fixed: i32) -> Result<u32, LowMemoryError> {
    // SAFETY: anonymous memory at `at`: callers pass a free address with
    // MAP_FIXED_NOREPLACE (which fails rather than replace anything), or their own mapping.
    let p = unsafe {
        libc::mmap(at as *mut _, len, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | fixed, -1, 0)
    };
    if p == libc::MAP_FAILED {
        return Err(LowMemoryError::Map { len, err: std::io::Error::last_os_error() });
    }
    Ok(p as u64 as u32)
}

/// Maps `len` bytes of private zeroed memory below 2 GiB.
pub fn private(len: usize) -> Result<LowMemory, LowMemoryError> {
    Ok(LowMemory { addr: map_zeroed(room(len)?, len, libc::MAP_FIXED_NOREPLACE)?, len })
}

impl LowMemory {
    /// Maps all of it into this process's page tables now, for writing: a forked child does
    /// not inherit the entries of shared memory and would take a fault on each page.
    pub fn populate(&self) {
        rewire_mem::populate_write(self.addr as u64, self.len);
    }

    /// Puts private zeroed memory where this mapping was: writes through its address no
    /// longer reach whoever shares it (a segment stays the fuzzer's, unchanged from now on).
    pub fn make_private(&self) -> Result<(), LowMemoryError> {
        // Over this mapping's own pages only, with memory of the same size and protection.
        map_zeroed(self.addr as u64, self.len.next_multiple_of(4096), libc::MAP_FIXED).map(|_| ())
    }
}
