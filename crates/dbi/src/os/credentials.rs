//! Whether an `execve` would change who the process is (set-user-ID and set-group-ID files,
//! file capabilities), and whether the process is being traced. The engine cannot give a
//! program the privileges the kernel grants at exec (rewire runs as the caller), and a
//! tracer must see the program itself: such programs run natively.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// What an exec of a file would grant.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Privilege {
    /// Set-user-ID to this user.
    SetUid(u32),
    /// Set-group-ID to this group.
    SetGid(u32),
    /// File capabilities (`security.capability`).
    Capabilities,
}

impl std::fmt::Display for Privilege {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Privilege::SetUid(uid) => write!(f, "set-user-ID (to user {uid})"),
            Privilege::SetGid(gid) => write!(f, "set-group-ID (to group {gid})"),
            Privilege::Capabilities => f.write_str("given file capabilities"),
        }
    }
}

/// What exec of `path` would grant this process that it does not have, if anything: a
/// set-ID bit naming someone else, or file capabilities for a process that is not root, on
/// a file system mounted without `nosuid`.
pub fn gained_at_exec(path: &Path) -> Option<Privilege> {
    let meta = std::fs::metadata(path).ok()?;
    let c = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statvfs writes only into the zeroed struct it is given.
    let mut fs: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above; the path is NUL-terminated.
    if unsafe { libc::statvfs(c.as_ptr(), &mut fs) } == 0 && fs.f_flag & libc::ST_NOSUID != 0 {
        return None;
    }
    // SAFETY: geteuid and getegid have no effects.
    let (euid, egid) = unsafe { (libc::geteuid(), libc::getegid()) };
    if meta.mode() & libc::S_ISUID != 0 && meta.uid() != euid {
        return Some(Privilege::SetUid(meta.uid()));
    }
    // Set-group-ID without group execute permission marks mandatory locking, not a gain.
    if meta.mode() & (libc::S_ISGID | libc::S_IXGRP) == libc::S_ISGID | libc::S_IXGRP && meta.gid() != egid {
        return Some(Privilege::SetGid(meta.gid()));
    }
    // SAFETY: getxattr with a null buffer only asks for the attribute's size.
    let caps = unsafe { libc::getxattr(c.as_ptr(), c"security.capability".as_ptr(), std::ptr::null_mut(), 0) };
    (caps > 0 && euid != 0).then_some(Privilege::Capabilities)
}

/// True when a tracer (a debugger, `strace`) is attached to this process.
pub fn traced() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .is_ok_and(|s| s.lines().find_map(|l| l.strip_prefix("TracerPid:")).is_some_and(|pid| pid.trim() != "0"))
}
