//! Calls that name this process's files in `/proc`: `exe` is the program's executable, not
//! rewire; `maps` read through `open` shows the program's own mappings (see
//! [`crate::os::program_maps`]): a memory file holding the text the kernel gave at `open`,
//! with the runtime's mappings left out.

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
        libc::SYS_open if names_maps(a[0]) => open_maps(a[1], nr, a),
        libc::SYS_openat if names_maps(a[1]) => open_maps(a[2], nr, a),
        libc::SYS_openat2 if names_maps(a[1]) => open_maps(openat2_flags(a[2]), nr, a),
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

/// True when the program's string at `path` names this process's (or one of its threads')
/// `maps`: `/proc/self/maps`, `/proc/thread-self/maps`, `/proc/PID/maps`,
/// `/proc/PID/task/TID/maps` (PID this process, or `self`).
fn names_maps(path: u64) -> bool {
    let Some(p) = appmem::read_cstr(path, 64) else { return false };
    let Some(rest) = p.strip_prefix(b"/proc/") else { return false };
    let mut parts = rest.split(|&b| b == b'/');
    let pid = std::process::id().to_string();
    let is_number = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    match (parts.next(), parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(b"thread-self"), Some(b"maps"), None, ..) => true,
        (Some(who), Some(b"maps"), None, ..) => who == b"self" || who == pid.as_bytes(),
        (Some(who), Some(b"task"), Some(tid), Some(b"maps"), None) => (who == b"self" || who == pid.as_bytes()) && is_number(tid),
        _ => false,
    }
}

/// The flags of an `openat2` call's `struct open_how` at `how` (0 when unreadable).
fn openat2_flags(how: u64) -> u64 {
    let mut flags = [0u8; 8];
    if appmem::read(how, &mut flags) {
        u64::from_le_bytes(flags)
    } else {
        0
    }
}

/// `open` of the process's `maps` with `flags`: a memory file with the program's view, when
/// it opens to read; anything else (writing, `O_PATH`, a directory) the kernel answers, as
/// it does when no memory file can be made.
fn open_maps(flags: u64, nr: u64, a: [u64; 6]) -> u64 {
    let special = (libc::O_ACCMODE | libc::O_PATH | libc::O_DIRECTORY) as u64;
    if flags & special != libc::O_RDONLY as u64 {
        return raw(nr, a);
    }
    let mut eng = engine();
    let heap = eng.brk.heap();
    match eng.maps.open_file(heap, flags & libc::O_CLOEXEC as u64 != 0) {
        Ok(fd) => fd as u64,
        Err(_) => raw(nr, a),
    }
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
