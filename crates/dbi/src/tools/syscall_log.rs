//! `-t syscalls`: an strace-like log of the program's system calls, per thread: name,
//! decoded arguments for the common calls (paths, descriptors, open flags, sizes), and the
//! result or `-1 ENAME`.

use crate::tool::{read_app_string, Output, Syscall, Tool};
use rustc_hash::FxHashMap;

/// The system call log.
#[derive(Debug)]
pub struct SyscallLog {
    output: Output,
    /// Per thread: the call in progress, described.
    pending: FxHashMap<u32, String>,
}

impl SyscallLog {
    /// A log written to `output`.
    pub fn new(output: Output) -> SyscallLog {
        SyscallLog { output, pending: FxHashMap::default() }
    }
}

/// How each argument of a call is shown.
#[derive(Clone, Copy)]
enum Arg {
    Int,
    Hex,
    Path,
    Fd,
    DirFd,
    OpenFlags,
    Prot,
}

fn shape(nr: i64) -> Option<&'static [Arg]> {
    use Arg::*;
    Some(match nr {
        libc::SYS_read | libc::SYS_write | libc::SYS_pread64 | libc::SYS_pwrite64 => &[Fd, Hex, Int],
        libc::SYS_open => &[Path, OpenFlags, Hex],
        libc::SYS_openat => &[DirFd, Path, OpenFlags, Hex],
        libc::SYS_close | libc::SYS_fsync | libc::SYS_dup => &[Fd],
        libc::SYS_dup2 => &[Fd, Fd],
        libc::SYS_fstat => &[Fd, Hex],
        libc::SYS_stat | libc::SYS_lstat => &[Path, Hex],
        libc::SYS_newfstatat => &[DirFd, Path, Hex, Hex],
        libc::SYS_statx => &[DirFd, Path, Hex, Hex, Hex],
        libc::SYS_access => &[Path, Int],
        libc::SYS_faccessat | libc::SYS_faccessat2 => &[DirFd, Path, Int],
        libc::SYS_readlink => &[Path, Hex, Int],
        libc::SYS_readlinkat => &[DirFd, Path, Hex, Int],
        libc::SYS_unlink | libc::SYS_chdir | libc::SYS_rmdir => &[Path],
        libc::SYS_unlinkat => &[DirFd, Path, Hex],
        libc::SYS_mkdir => &[Path, Hex],
        libc::SYS_execve => &[Path, Hex, Hex],
        libc::SYS_lseek => &[Fd, Int, Int],
        libc::SYS_mmap => &[Hex, Int, Prot, Hex, Fd, Hex],
        libc::SYS_mprotect => &[Hex, Int, Prot],
        libc::SYS_munmap => &[Hex, Int],
        libc::SYS_brk => &[Hex],
        libc::SYS_ioctl | libc::SYS_fcntl => &[Fd, Hex, Hex],
        libc::SYS_getdents64 => &[Fd, Hex, Int],
        libc::SYS_exit | libc::SYS_exit_group => &[Int],
        libc::SYS_getpid
        | libc::SYS_gettid
        | libc::SYS_getuid
        | libc::SYS_geteuid
        | libc::SYS_getgid
        | libc::SYS_getegid
        | libc::SYS_getppid => &[],
        libc::SYS_pipe2 => &[Hex, Hex],
        libc::SYS_wait4 => &[Int, Hex, Hex, Hex],
        libc::SYS_kill => &[Int, Int],
        _ => return None,
    })
}

fn flags(v: u64, names: &[(u64, &str)], zero: &str) -> String {
    let mut parts: Vec<String> = names.iter().filter(|(bit, _)| *bit != 0 && v & bit == *bit).map(|(_, n)| n.to_string()).collect();
    let known = names.iter().fold(0, |acc, (b, _)| acc | b);
    if v & !known != 0 {
        parts.push(format!("{:#x}", v & !known));
    }
    if parts.is_empty() {
        zero.to_string()
    } else {
        parts.join("|")
    }
}

fn show(arg: Arg, v: u64) -> String {
    match arg {
        Arg::Int => (v as i64).to_string(),
        Arg::Hex => format!("{v:#x}"),
        Arg::Fd => (v as i32).to_string(),
        Arg::DirFd if v as i32 == libc::AT_FDCWD => "AT_FDCWD".into(),
        Arg::DirFd => (v as i32).to_string(),
        Arg::Path => match read_app_string(v, 4096) {
            Some(p) => format!("{:?}", String::from_utf8_lossy(&p)),
            None => format!("{v:#x}"),
        },
        Arg::OpenFlags => {
            let access = match v as i32 & libc::O_ACCMODE {
                libc::O_RDONLY => "O_RDONLY",
                libc::O_WRONLY => "O_WRONLY",
                _ => "O_RDWR",
            };
            let rest = flags(
                v & !(libc::O_ACCMODE as u64),
                &[
                    (libc::O_CREAT as u64, "O_CREAT"),
                    (libc::O_EXCL as u64, "O_EXCL"),
                    (libc::O_NOCTTY as u64, "O_NOCTTY"),
                    (libc::O_TRUNC as u64, "O_TRUNC"),
                    (libc::O_APPEND as u64, "O_APPEND"),
                    (libc::O_NONBLOCK as u64, "O_NONBLOCK"),
                    (libc::O_DIRECTORY as u64, "O_DIRECTORY"),
                    (libc::O_NOFOLLOW as u64, "O_NOFOLLOW"),
                    (libc::O_CLOEXEC as u64, "O_CLOEXEC"),
                    (libc::O_PATH as u64, "O_PATH"),
                ],
                "",
            );
            if rest.is_empty() {
                access.into()
            } else {
                format!("{access}|{rest}")
            }
        }
        Arg::Prot => flags(
            v,
            &[(libc::PROT_READ as u64, "PROT_READ"), (libc::PROT_WRITE as u64, "PROT_WRITE"), (libc::PROT_EXEC as u64, "PROT_EXEC")],
            "PROT_NONE",
        ),
    }
}

/// `name(args)` for a call.
pub fn describe(call: &Syscall) -> String {
    let name = syscalls::Sysno::new(call.nr as usize).map_or_else(|| format!("syscall_{}", call.nr), |s| s.name().to_string());
    let args: Vec<String> = match shape(call.nr as i64) {
        Some(shape) => shape.iter().zip(call.args).map(|(a, v)| show(*a, v)).collect(),
        None => call.args.iter().map(|v| format!("{v:#x}")).collect(),
    };
    format!("{name}({})", args.join(", "))
}

/// ` = 3`, ` = -1 ENOENT (No such file or directory)`.
pub fn result(call: &Syscall, r: u64) -> String {
    let v = r as i64;
    if (-4095..0).contains(&v) {
        let e = nix::errno::Errno::from_raw(-v as i32);
        return format!("-1 {e:?} ({})", e.desc());
    }
    match call.nr as i64 {
        libc::SYS_mmap | libc::SYS_brk => format!("{r:#x}"),
        _ => v.to_string(),
    }
}

impl Tool for SyscallLog {
    fn on_syscall(&mut self, call: &mut Syscall) -> Option<u64> {
        let text = describe(call);
        if matches!(call.nr as i64, libc::SYS_exit | libc::SYS_exit_group) {
            self.output.report(&[format!("[{}] {text} = ?", call.tid)]);
        } else {
            self.pending.insert(call.tid, text);
        }
        None
    }

    fn on_syscall_result(&mut self, call: &Syscall, r: &mut u64) {
        let text = self.pending.remove(&call.tid).unwrap_or_else(|| describe(call));
        self.output.report(&[format!("[{}] {text} = {}", call.tid, result(call, *r))]);
    }
}
