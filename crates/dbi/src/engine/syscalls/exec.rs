//! Following `execve`: the new program runs under rewire too, with the same options, unless
//! it would gain privileges at exec (set-ID or file capabilities: the kernel grants them
//! only to a program it execs itself; `--unprivileged` runs it under rewire without them)
//! or a tracer is attached (it must see the program itself), or it is one of Valgrind's
//! engines (a binary translator itself): those run natively, as with `--no-follow`. The
//! call becomes an `execve` of rewire itself (`rewire run OPTIONS --argv0=ARGV0 -- PATH
//! ARGS...`) with the program's environment (the variables for its loader under other names,
//! see [`crate::os::program_env`]). Errors the kernel would give
//! for the program itself (missing, not executable, not a format it runs) are checked first
//! and returned to the program with nothing changed.

use super::proc_self::names_exe;
use super::{err, raw, Call, Outcome};
use crate::engine::state::engine;
use crate::os::appmem;
use crate::os::credentials;
use crate::os::loader;
use crate::os::process_end::{flush, rearm};
use crate::os::program_env;
use std::ffi::CString;
use std::os::unix::ffi::{OsStrExt, OsStringExt};

/// The calls.
pub(super) const CALLS: &[i64] = &[libc::SYS_execve, libc::SYS_execveat];

pub(super) fn handle(call: &mut Call<'_>) -> Outcome {
    Outcome::Returns(if call.nr as i64 == libc::SYS_execveat { execveat(call.args) } else { execve(call.args) })
}

/// Most arguments read from the program's argv.
const MAX_ARGS: usize = 1 << 17;

/// Reads a NULL-terminated array of string pointers from the program.
fn read_strings(mut at: u64) -> Option<Vec<CString>> {
    let mut out = Vec::new();
    if at == 0 {
        return Some(out);
    }
    while out.len() < MAX_ARGS {
        let mut p = [0u8; 8];
        if !appmem::read(at, &mut p) {
            return None;
        }
        let p = u64::from_le_bytes(p);
        if p == 0 {
            return Some(out);
        }
        out.push(CString::new(appmem::read_cstr(p, 1 << 20)?).ok()?);
        at += 8;
    }
    None
}

/// The program's `execve(path, argv, envp)`.
fn execve(a: [u64; 6]) -> u64 {
    let Some(path) = appmem::read_cstr(a[0], 4096).and_then(|p| CString::new(p).ok()) else { return err(libc::EFAULT) };
    let path = if names_exe(a[0]) { engine().exe.clone() } else { path };
    // `/proc/self/exe` is the program, not rewire, natively too.
    let native = [path.as_ptr() as u64, a[1], a[2], 0, 0, 0];
    exec(path.clone(), a[1], a[2], (libc::SYS_execve as u64, native))
}

/// The program's `execveat(dirfd, path, argv, envp, flags)` (`fexecve` included): the file
/// is named by a path the new rewire can open (the descriptors may be close-on-exec). A file
/// without one (a memfd, a deleted file) runs natively.
fn execveat(a: [u64; 6]) -> u64 {
    let Some(path) = appmem::read_cstr(a[1], 4096) else { return err(libc::EFAULT) };
    let (dirfd, flags) = (a[0] as i32, a[4] as i32);
    let named = match (path.is_empty(), path.first() == Some(&b'/')) {
        (true, _) if flags & libc::AT_EMPTY_PATH != 0 => fd_path(dirfd),
        (false, true) => Some(path.clone()),
        (false, false) if dirfd == libc::AT_FDCWD => Some(path.clone()),
        (false, false) => fd_path(dirfd).map(|mut dir| {
            dir.push(b'/');
            dir.extend_from_slice(&path);
            dir
        }),
        (true, _) => return err(libc::ENOENT),
    };
    let file = named.filter(|p| std::fs::metadata(std::ffi::OsStr::from_bytes(p)).is_ok()).and_then(|p| CString::new(p).ok());
    let native = (libc::SYS_execveat as u64, a);
    let Some(file) = file else { return exec_natively(native) };
    if flags & libc::AT_SYMLINK_NOFOLLOW != 0
        && std::fs::symlink_metadata(std::ffi::OsStr::from_bytes(file.as_bytes())).is_ok_and(|m| m.is_symlink())
    {
        return err(libc::ELOOP);
    }
    exec(file, a[2], a[3], native)
}

/// True for one of Valgrind's tool engines (`.../valgrind/memcheck-amd64-linux`, which the
/// `valgrind` launcher execs): a binary translator of its own, run natively, so that
/// `valgrind` under rewire does what it does without rewire.
fn is_valgrind_engine(path: &std::path::Path) -> bool {
    path.parent().is_some_and(|d| d.file_name().is_some_and(|n| n == "valgrind"))
        && path.file_name().is_some_and(|n| n.to_string_lossy().ends_with("-amd64-linux"))
}

/// The path descriptor `fd` was opened by, if it names a file that is still there.
fn fd_path(fd: i32) -> Option<Vec<u8>> {
    let p = std::fs::read_link(format!("/proc/self/fd/{fd}")).ok()?;
    Some(p.into_os_string().into_vec()).filter(|p| p.first() == Some(&b'/'))
}

/// Runs the program's exec call `(nr, args)` as it made it, the tool's output flushed first.
fn exec_natively((nr, args): (u64, [u64; 6])) -> u64 {
    flush();
    let r = raw(nr, args);
    rearm();
    r
}

/// Follows an exec of `path` with the program's `argv` and `envp` (addresses in its memory);
/// `native` is the call that runs it without rewire.
fn exec(path: CString, argv_at: u64, envp: u64, native: (u64, [u64; 6])) -> u64 {
    let nr = libc::SYS_execve as u64;
    let Some(argv) = read_strings(argv_at) else { return err(libc::EFAULT) };
    let (no_follow, unprivileged) = {
        let eng = engine();
        (eng.opts.no_follow, eng.opts.unprivileged)
    };
    let program = std::path::Path::new(std::ffi::OsStr::from_bytes(path.as_bytes()));
    let gains = || credentials::gained_at_exec(program).is_some();
    let follow = !no_follow && !credentials::traced() && (unprivileged || !gains()) && !is_valgrind_engine(program);
    match loader::exec_check(std::path::Path::new(std::ffi::OsStr::from_bytes(path.as_bytes()))) {
        Err(e) => return err(e),
        Ok(runs_under_engine) if !runs_under_engine || !follow => return exec_natively(native),
        Ok(_) => {}
    }
    let (rewire, options) = {
        let eng = engine();
        (eng.rewire_exe.clone(), eng.opts.to_args())
    };
    let mut args: Vec<CString> = vec![rewire.clone(), c"run".into()];
    args.extend(options);
    if let Some(a0) = argv.first() {
        let mut flag = b"--argv0=".to_vec();
        flag.extend_from_slice(a0.as_bytes());
        args.push(CString::new(flag).expect("no NUL inside"));
    }
    args.push(c"--".into());
    // A name without a slash is relative to the working directory for execve (no PATH search).
    args.push(if path.as_bytes().contains(&b'/') {
        path
    } else {
        let mut p = b"./".to_vec();
        p.extend_from_slice(path.as_bytes());
        CString::new(p).expect("no NUL inside")
    });
    args.extend(argv.into_iter().skip(1));
    let mut ptrs: Vec<u64> = args.iter().map(|s| s.as_ptr() as u64).collect();
    ptrs.push(0);
    // The variables for the program's loader must not reach rewire's own.
    let Some(env) = read_strings(envp) else { return err(libc::EFAULT) };
    let env: Vec<CString> = env.iter().map(|v| CString::new(program_env::shielded(v.as_bytes())).expect("no NUL inside")).collect();
    let mut env_ptrs: Vec<u64> = env.iter().map(|s| s.as_ptr() as u64).collect();
    env_ptrs.push(0);
    flush();
    let r = raw(nr, [rewire.as_ptr() as u64, ptrs.as_ptr() as u64, env_ptrs.as_ptr() as u64, 0, 0, 0]);
    // Still here: the exec failed and the program goes on.
    rearm();
    r
}
