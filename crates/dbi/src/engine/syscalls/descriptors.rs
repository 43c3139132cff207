//! Descriptor calls that could reach the runtime's report descriptor: before the program
//! closes or replaces its stderr the runtime keeps a hidden copy; for the program that copy
//! does not exist (closing it fails with EBADF, `dup2` onto its number moves it away first).

use super::{err, raw, Call, Outcome};
use crate::os::process_end::owns_memory;
use crate::os::report::{before_stderr_changes, move_report_fd, report_fd};

/// The calls.
pub(super) const CALLS: &[i64] = &[libc::SYS_close, libc::SYS_close_range, libc::SYS_dup2, libc::SYS_dup3];

pub(super) fn handle(call: &mut Call<'_>) -> Outcome {
    let (nr, a) = (call.nr, call.args);
    let stderr_changes = match nr as i64 {
        libc::SYS_close => a[0] == 2,
        libc::SYS_close_range => (a[0]..=a[1]).contains(&2),
        _ => a[1] == 2,
    };
    // A vfork child changes its own descriptor table, not its parent's report descriptor.
    if stderr_changes && owns_memory() {
        before_stderr_changes();
    }
    Outcome::Returns(match nr as i64 {
        _ if report_fd() == 2 => raw(nr, a),
        libc::SYS_close if a[0] as i32 == report_fd() => err(libc::EBADF),
        libc::SYS_close_range => close_range(a),
        libc::SYS_dup2 | libc::SYS_dup3 if a[1] as i32 == report_fd() => {
            move_report_fd();
            raw(nr, a)
        }
        _ => raw(nr, a),
    })
}

/// `close_range(first, last, flags)` around the runtime's report descriptor.
fn close_range(a: [u64; 6]) -> u64 {
    let (first, last, fd) = (a[0] as u32, a[1] as u32, report_fd() as u32);
    if !(first..=last).contains(&fd) {
        return raw(libc::SYS_close_range as u64, a);
    }
    let below = if fd > first { raw(libc::SYS_close_range as u64, [first as u64, (fd - 1) as u64, a[2], 0, 0, 0]) } else { 0 };
    let above = if fd < last { raw(libc::SYS_close_range as u64, [(fd + 1) as u64, last as u64, a[2], 0, 0, 0]) } else { 0 };
    if below != 0 {
        below
    } else {
        above
    }
}
