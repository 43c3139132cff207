//! Calls that name this process's files in `/proc`: `exe` is the program's executable, not
//! rewire; `maps`, `status` and `stat` opened to read are memory files with the kernel's
//! text as the program would see it: its own mappings (see [`crate::os::program_maps`]), its
//! own signal dispositions (see [`crate::os::proc_status`]).

use super::{err, raw, Call, Outcome};
use crate::engine::state::engine;
use crate::os::appmem;
use crate::os::memory_file::memory_file;
use crate::os::proc_status;

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
        libc::SYS_open => open(nr, a, 0, a[1]),
        libc::SYS_openat => open(nr, a, 1, a[2]),
        libc::SYS_openat2 => open(nr, a, 1, openat2_flags(a[2])),
        libc::SYS_stat | libc::SYS_access => with_exe_path(nr, a, 0),
        _ => with_exe_path(nr, a, 1),
    })
}

/// An `open` call with its path in argument `i` and open flags `flags`.
fn open(nr: u64, a: [u64; 6], i: usize, flags: u64) -> u64 {
    match proc_file(a[i]) {
        Some(ProcFile::Exe) => raw_with_exe(nr, a, i),
        Some(ProcFile::View(view)) => open_view(view, flags, nr, a),
        None => raw(nr, a),
    }
}

fn is_absolute(path: u64) -> bool {
    let mut b = [0u8; 1];
    appmem::read(path, &mut b) && b[0] == b'/'
}

/// True when the program's string at `path` names this process's executable link.
pub(super) fn names_exe(path: u64) -> bool {
    proc_file(path) == Some(ProcFile::Exe)
}

/// A file of `/proc` about this process whose kernel answer would show the engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum ProcFile {
    /// The executable link: the program's path stands for it.
    Exe,
    /// A text the program reads its own version of.
    View(View),
}

/// The files the program reads its own version of (from a memory file).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum View {
    Maps,
    Status,
    Stat,
}

/// Which of those files the program's string at `path` names, if any: `/proc/self/F`,
/// `/proc/thread-self/F`, `/proc/PID/F` (PID this process), and but for `exe`
/// `/proc/PID/task/TID/F` (PID this process, or `self`).
fn proc_file(path: u64) -> Option<ProcFile> {
    let p = appmem::read_cstr(path, 64)?;
    let rest = p.strip_prefix(b"/proc/")?;
    let parts: Vec<&[u8]> = rest.split(|&b| b == b'/').collect();
    let pid = std::process::id().to_string();
    let this = |who: &[u8]| who == b"self" || who == pid.as_bytes();
    let is_number = |s: &[u8]| !s.is_empty() && s.iter().all(u8::is_ascii_digit);
    let (name, of_task) = match parts[..] {
        [b"thread-self", name] => (name, false),
        [who, name] if this(who) => (name, false),
        [who, b"task", tid, name] if this(who) && is_number(tid) => (name, true),
        _ => return None,
    };
    match name {
        b"exe" if !of_task => Some(ProcFile::Exe),
        b"maps" => Some(ProcFile::View(View::Maps)),
        b"status" => Some(ProcFile::View(View::Status)),
        b"stat" => Some(ProcFile::View(View::Stat)),
        _ => None,
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

/// `open` of `view` with `flags`: a memory file with the program's version, when it opens to
/// read; anything else (writing, `O_PATH`, a directory) the kernel answers, as it does when
/// no memory file can be made.
fn open_view(view: View, flags: u64, nr: u64, a: [u64; 6]) -> u64 {
    let special = (libc::O_ACCMODE | libc::O_PATH | libc::O_DIRECTORY) as u64;
    if flags & special != libc::O_RDONLY as u64 {
        return raw(nr, a);
    }
    let cloexec = flags & libc::O_CLOEXEC as u64 != 0;
    let opened = match view {
        View::Maps => {
            let mut eng = engine();
            let heap = eng.brk.heap();
            eng.maps.open_file(heap, cloexec)
        }
        View::Status => std::fs::read_to_string("/proc/self/status").and_then(|t| memory_file(&proc_status::status(&t), cloexec)),
        View::Stat => std::fs::read_to_string("/proc/self/stat").and_then(|t| memory_file(&proc_status::stat(&t), cloexec)),
    };
    opened.map_or_else(|_| raw(nr, a), |fd| fd as u64)
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
fn with_exe_path(nr: u64, a: [u64; 6], i: usize) -> u64 {
    if names_exe(a[i]) {
        raw_with_exe(nr, a, i)
    } else {
        raw(nr, a)
    }
}

/// The call with the program's executable as its path in argument `i`.
fn raw_with_exe(nr: u64, mut a: [u64; 6], i: usize) -> u64 {
    a[i] = engine().exe.as_ptr() as u64;
    raw(nr, a)
}
