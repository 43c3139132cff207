//! Calls that name `/proc/self/exe`: the program sees its own executable, not rewire.

use super::{err, raw, Call, Outcome};
use crate::engine::state::engine;
use crate::os::appmem;

/// The calls that take a path.
pub(super) const CALLS: &[i64] = &[
    libc::SYS_readlink,
    libc::SYS_readlinkat,
    libc::SYS_open,
    libc::SYS_stat,
    libc::SYS_access,
    libc::SYS_openat,
    libc::SYS_newfstatat,
    libc::SYS_statx,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_openat2,
];

pub(super) fn handle(call: &mut Call<'_>) -> Outcome {
    let (nr, a) = (call.nr, call.args);
    Outcome::Returns(match nr as i64 {
        libc::SYS_readlink => readlink(a[0], a[1], a[2]).unwrap_or_else(|| raw(nr, a)),
        libc::SYS_readlinkat if is_absolute(a[1]) => readlink(a[1], a[2], a[3]).unwrap_or_else(|| raw(nr, a)),
        libc::SYS_readlinkat => raw(nr, a),
        libc::SYS_open | libc::SYS_stat | libc::SYS_access => with_exe_path(nr, a, 0),
        _ => with_exe_path(nr, a, 1),
    })
}

fn is_absolute(path: u64) -> bool {
    let mut b = [0u8; 1];
    appmem::read(path, &mut b) && b[0] == b'/'
}

/// True when the program's string at `path` names this process's executable link.
pub(super) fn names_exe(path: u64) -> bool {
    let Some(p) = appmem::read_cstr(path, 64) else { return false };
    let Some(rest) = p.strip_prefix(b"/proc/") else { return false };
    rest == b"self/exe" || rest == b"thread-self/exe" || rest == format!("{}/exe", std::process::id()).as_bytes()
}

/// `readlink` of `/proc/self/exe`: the program, not rewire.
fn readlink(path: u64, buf: u64, size: u64) -> Option<u64> {
    if !names_exe(path) {
        return None;
    }
    if size as i64 <= 0 {
        return Some(err(libc::EINVAL));
    }
    let exe = engine().exe.as_bytes().to_vec();
    let n = exe.len().min(size as usize);
    Some(if appmem::write(buf, &exe[..n]) { n as u64 } else { err(libc::EFAULT) })
}

/// A call taking a path in argument `i`: `/proc/self/exe` is replaced by the program.
fn with_exe_path(nr: u64, mut a: [u64; 6], i: usize) -> u64 {
    if names_exe(a[i]) {
        a[i] = engine().exe.as_ptr() as u64;
    }
    raw(nr, a)
}
