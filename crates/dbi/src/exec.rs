//! Following `execve`: the new program runs under rewire too, with the same options. The
//! call becomes an `execve` of rewire itself (`rewire run OPTIONS --argv0=ARGV0 -- PATH
//! ARGS...`) with the program's environment passed unchanged. Errors the kernel would give
//! for the program itself (missing, not executable, not a format it runs) are checked first
//! and returned to the program with nothing changed.

use crate::dispatch::engine;
use crate::{appmem, finish, FINISHED};
use std::ffi::CString;
use std::sync::atomic::Ordering;

const ELF_MAGIC: &[u8] = b"\x7fELF";
/// Most arguments read from the program's argv.
const MAX_ARGS: usize = 1 << 17;

fn err(e: i32) -> u64 {
    (-e) as i64 as u64
}

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

/// The errno `execve(path)` would fail with before replacing the process, or `Ok(true)` when
/// the file is a program the engine runs (x86-64 ELF or `#!` script), `Ok(false)` when the
/// kernel runs it but the engine cannot (it then runs natively).
fn precheck(path: &CString) -> Result<bool, i32> {
    // SAFETY: access() reads the NUL-terminated path.
    if unsafe { libc::access(path.as_ptr(), libc::X_OK) } != 0 {
        return Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(libc::EACCES));
    }
    let p = std::path::Path::new(std::ffi::OsStr::from_bytes_compat(path.as_bytes()));
    let meta = std::fs::metadata(p).map_err(|e| e.raw_os_error().unwrap_or(libc::EACCES))?;
    if !meta.is_file() {
        return Err(libc::EACCES);
    }
    let mut head = [0u8; 20];
    let n = std::fs::File::open(p)
        .and_then(|mut f| std::io::Read::read(&mut f, &mut head))
        .map_err(|e| e.raw_os_error().unwrap_or(libc::EACCES))?;
    let head = &head[..n];
    if head.starts_with(b"#!") {
        return Ok(true);
    }
    if !head.starts_with(ELF_MAGIC) {
        return Err(libc::ENOEXEC);
    }
    let is_x86_64 = head.len() >= 20 && head[4] == 2 && u16::from_le_bytes([head[18], head[19]]) == 62;
    Ok(is_x86_64)
}

trait FromBytesCompat {
    fn from_bytes_compat(b: &[u8]) -> &Self;
}

impl FromBytesCompat for std::ffi::OsStr {
    fn from_bytes_compat(b: &[u8]) -> &Self {
        std::os::unix::ffi::OsStrExt::from_bytes(b)
    }
}

/// The program's `execve(path, argv, envp)`.
pub fn execve(a: [u64; 6], raw: impl Fn(u64, [u64; 6]) -> u64) -> u64 {
    let nr = libc::SYS_execve as u64;
    let Some(path) = appmem::read_cstr(a[0], 4096).and_then(|p| CString::new(p).ok()) else { return err(libc::EFAULT) };
    let Some(argv) = read_strings(a[1]) else { return err(libc::EFAULT) };
    let path = if crate::syscalls::names_exe(a[0]) { engine().exe.clone() } else { path };
    let follow = !engine().opts.no_follow;
    match precheck(&path) {
        Err(e) => return err(e),
        Ok(runs_under_engine) if !runs_under_engine || !follow => {
            finish();
            let r = raw(nr, a);
            FINISHED.store(false, Ordering::SeqCst);
            return r;
        }
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
    finish();
    let r = raw(nr, [rewire.as_ptr() as u64, ptrs.as_ptr() as u64, a[2], 0, 0, 0]);
    // Still here: the exec failed and the program goes on.
    FINISHED.store(false, Ordering::SeqCst);
    r
}
