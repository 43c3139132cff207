//! Reading and writing the program's memory on its behalf, with the kernel checking the
//! addresses (a bad pointer from the program gives `EFAULT`, as natively, never a crash of
//! the runtime). Reads and writes are plain copies whose faults the runtime's signal handler
//! catches, when the thread's fault signals are unblocked (else the kernel would kill the
//! process on the fault); `process_vm_readv`/`writev` otherwise, which cost page pinning on
//! every call and cannot grow the stack.

use crate::arch;

fn transfer(addr: u64, buf: *mut u8, len: usize, write: bool) -> bool {
    let local = libc::iovec { iov_base: buf.cast(), iov_len: len };
    let remote = libc::iovec { iov_base: addr as *mut _, iov_len: len };
    let pid = std::process::id() as libc::pid_t;
    // SAFETY: the kernel validates `remote` (this process's memory) and copies between it
    // and `local`, which is a live buffer of `len` bytes the caller owns.
    let n = unsafe {
        if write {
            libc::process_vm_writev(pid, &local, 1, &remote, 1, 0)
        } else {
            libc::process_vm_readv(pid, &local, 1, &remote, 1, 0)
        }
    };
    n == len as isize
}

/// Copies `buf.len()` bytes from the program's `addr`; false if not all readable.
pub fn read(addr: u64, buf: &mut [u8]) -> bool {
    reader()(addr, buf)
}

/// How this thread reads program memory now: by a fault-resumed copy, or through the kernel.
fn reader() -> fn(u64, &mut [u8]) -> bool {
    if fault_signals_unblocked() {
        arch::copy_or_fault
    } else {
        |addr, buf| transfer(addr, buf.as_mut_ptr(), buf.len(), false)
    }
}

/// Whether a fault of this thread reaches the runtime's handler: SIGSEGV and SIGBUS are not
/// blocked (the program may block them; the runtime's own handler runs with the one it
/// handles blocked).
fn fault_signals_unblocked() -> bool {
    let mut mask = 0u64;
    // SAFETY: rt_sigprocmask with no new set only writes the current mask (8 bytes) to a local.
    let r = unsafe { arch::syscall6(libc::SYS_rt_sigprocmask as u64, [libc::SIG_BLOCK as u64, 0, &raw mut mask as u64, 8, 0, 0]) };
    let bit = |sig: i32| 1u64 << (sig - 1);
    r == 0 && mask & (bit(libc::SIGSEGV) | bit(libc::SIGBUS)) == 0
}

/// Copies `data` to the program's `addr`; false if not all writable. A write just below
/// the stack grows it, as the program's own store would (ld.so's `readlink` of
/// `/proc/self/exe` writes into stack pages never touched yet).
pub fn write(addr: u64, data: &[u8]) -> bool {
    if fault_signals_unblocked() {
        arch::store_or_fault(addr, data)
    } else {
        transfer(addr, data.as_ptr().cast_mut(), data.len(), true)
    }
}

/// The NUL-terminated string at `addr`, if readable and at most `max` bytes.
pub fn read_cstr(addr: u64, max: usize) -> Option<Vec<u8>> {
    let read = reader();
    let mut out = Vec::new();
    let mut chunk = [0u8; 64];
    while out.len() < max {
        // Stay inside the page so that a string ending before unmapped memory still reads.
        let room = (4096 - (addr + out.len() as u64) % 4096) as usize;
        let n = room.min(chunk.len());
        if !read(addr + out.len() as u64, &mut chunk[..n]) {
            return None;
        }
        if let Some(end) = chunk[..n].iter().position(|&b| b == 0) {
            out.extend_from_slice(&chunk[..end]);
            return Some(out);
        }
        out.extend_from_slice(&chunk[..n]);
    }
    None
}

/// Copies `data` to the program's stack at `addr`, growing the main thread's `[stack]`
/// mapping as the program's own accesses would (the kernel grows it on page faults, not for
/// `process_vm_writev`); false if `addr` is not in or just below the program's stack.
pub fn write_stack(addr: u64, data: &[u8]) -> bool {
    if write(addr, data) {
        return true;
    }
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills the struct.
    unsafe { libc::getrlimit(libc::RLIMIT_STACK, &mut limit) };
    let Ok(space) = rewire_mem::AddressSpace::read(None) else { return false };
    let Some(stack) = space.mappings.iter().find(|m| m.path == "[stack]") else { return false };
    let room = limit.rlim_cur.min(1 << 30);
    let growable = addr < stack.range.start && addr >= stack.range.end.saturating_sub(room) && addr + data.len() as u64 <= stack.range.end;
    if !growable {
        return false;
    }
    // SAFETY: below the program's stack within its size limit: the kernel extends the stack
    // mapping on the fault, exactly as for the program's own pushes; nothing else lives there.
    unsafe { std::ptr::copy_nonoverlapping(data.as_ptr(), addr as *mut u8, data.len()) };
    true
}
