//! The runtime's own report channel, for `rewire: ...` lines. It holds no descriptor while
//! the program's stderr is as the program started with it: reports go to descriptor 2, and
//! the program sees only its own descriptors (a daemon it forks holds nothing of rewire's).
//! Just before the program closes or replaces its stderr, the process rewire started takes a
//! hidden close-on-exec copy numbered high (reports of a tool come at exit, after programs
//! closed their stderr); a forked child, or a program started without stderr, has none.
//! How the program died (a fault, a signal it did not handle) is reported only under
//! `--verbose` or into the `--log` file, so that the program's stderr is what it is natively.

use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::OnceLock;

/// Where reports go: 2, the hidden copy, or -1 (nowhere).
static REPORT_FD: AtomicI32 = AtomicI32::new(2);
/// Set in a forked child: it makes no copy of its stderr (a daemon must not keep its
/// caller's stderr open).
static FORKED: AtomicBool = AtomicBool::new(false);

/// At start-up: without a stderr, reports go nowhere (the number is the program's to open).
pub fn open_report_fd() {
    // SAFETY: F_GETFD only queries descriptor 2.
    if unsafe { libc::fcntl(2, libc::F_GETFD) } < 0 {
        REPORT_FD.store(-1, Ordering::Relaxed);
    }
}

/// In the child of a fork: it will not copy its stderr.
pub fn forked() {
    FORKED.store(true, Ordering::Relaxed);
}

/// The program is about to close or replace descriptor 2: reports keep the stderr it had
/// (a hidden copy), or stop in a forked child.
pub fn before_stderr_changes() {
    if report_fd() != 2 {
        return;
    }
    if FORKED.load(Ordering::Relaxed) {
        REPORT_FD.store(-1, Ordering::Relaxed);
        return;
    }
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit fills the struct; fcntl duplicates fd 2 (close-on-exec).
    let fd = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit);
        let want = (limit.rlim_cur.min(1024) as i32 - 24).max(3);
        libc::fcntl(2, libc::F_DUPFD_CLOEXEC, want)
    };
    REPORT_FD.store(fd.max(-1), Ordering::Relaxed);
}

/// The descriptor reports go to (the program must not close a hidden copy), or -1.
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
    if report_fd() < 0 {
        return;
    }
    let line = format!("rewire: {msg}\n");
    // SAFETY: write(2) of a live buffer; a plain system call, safe in signal handlers.
    unsafe { libc::write(report_fd(), line.as_ptr().cast(), line.len()) };
}

/// Where reports of the program's death go.
#[derive(Debug)]
enum DeathReports {
    Stderr,
    Log(CString),
}

static DEATH_REPORTS: OnceLock<DeathReports> = OnceLock::new();

/// Sends reports of the program's death to stderr (`verbose`) or appends them to `log`
/// (which wins); without either they are not written.
pub fn route_death_reports(verbose: bool, log: Option<&std::path::Path>) {
    let route = match log {
        Some(path) => DeathReports::Log(CString::new(path.as_os_str().as_encoded_bytes()).expect("path without NUL bytes")),
        None if verbose => DeathReports::Stderr,
        None => return,
    };
    let _ = DEATH_REPORTS.set(route);
}

/// Reports how the program died (`rewire: MSG`), where [`route_death_reports`] said.
pub fn report_death(msg: &str) {
    match DEATH_REPORTS.get() {
        Some(DeathReports::Stderr) => report(msg),
        Some(DeathReports::Log(path)) => {
            let line = format!("rewire: {msg}\n");
            // SAFETY: open, write and close of a live path and buffer: plain system calls, safe
            // in signal handlers.
            unsafe {
                let fd = libc::open(path.as_ptr(), libc::O_WRONLY | libc::O_APPEND | libc::O_CREAT | libc::O_CLOEXEC, 0o644);
                if fd >= 0 {
                    libc::write(fd, line.as_ptr().cast(), line.len());
                    libc::close(fd);
                }
            }
        }
        None => {}
    }
}
