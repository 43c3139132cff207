//! The runtime's own report channel: a private duplicate of stderr, kept out of the way of
//! the program's descriptors, for `rewire: ...` lines.

use std::sync::atomic::{AtomicI32, Ordering};

/// The runtime's own copy of stderr, kept open whatever the program does with its fds.
static REPORT_FD: AtomicI32 = AtomicI32::new(2);

/// Gives the runtime a private duplicate of stderr, numbered high (programs close their
/// stderr at exit, and reports come after that).
pub fn open_report_fd() {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills the struct; fcntl duplicates fd 2 (close-on-exec).
    let fd = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        let want = (limit.rlim_cur.min(1024) as i32 - 24).max(3);
        libc::fcntl(2, libc::F_DUPFD_CLOEXEC, want)
    };
    if fd >= 0 {
        REPORT_FD.store(fd, Ordering::Relaxed);
    }
}

/// The descriptor reports go to (the program must not see or close it).
pub fn report_fd() -> i32 {
    REPORT_FD.load(Ordering::Relaxed)
}

/// Moves the report descriptor out of the way of a program about to use its number.
pub fn move_report_fd() {
    let old = report_fd();
    // SAFETY: duplicates our own descriptor to a free number above it, then closes the old one.
    let new = unsafe { libc::fcntl(old, libc::F_DUPFD_CLOEXEC, old + 1) };
    if new >= 0 {
        REPORT_FD.store(new, Ordering::Relaxed);
        // SAFETY: our descriptor, no longer used.
        unsafe { libc::close(old) };
    }
}

/// Writes `rewire: MSG` to the runtime's stderr.
pub fn report(msg: &str) {
    let line = format!("rewire: {msg}\n");
    // SAFETY: write(2) of a live buffer; a plain system call, safe in signal handlers.
    unsafe { libc::write(report_fd(), line.as_ptr().cast(), line.len()) };
}
