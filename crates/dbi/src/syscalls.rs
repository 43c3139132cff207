//! The program's system calls. Each one leaves the cache; the few the runtime must own are
//! emulated (brk, arch_prctl, `/proc/self/exe`, signal dispositions) or followed (mapping
//! calls that change which code exists), the rest run unchanged with the program's
//! arguments and their results go back unchanged. Calls the engine cannot run yet stop it
//! with a message naming them.

use crate::arch::syscall6;
use crate::context::{reg, ThreadCtx};
use crate::dispatch::engine;
use crate::tool::Syscall;
use crate::{appmem, exec, finish, move_report_fd, report, report_fd, signals, threads};

const ENOSYS: u64 = (-libc::ENOSYS) as i64 as u64;
const EFAULT: u64 = (-libc::EFAULT) as i64 as u64;
const EBADF: u64 = (-libc::EBADF) as i64 as u64;
const EINVAL: u64 = (-libc::EINVAL) as i64 as u64;
const PAGE: u64 = 4096;
/// Exit status of rewire itself when it must stop the program (as `env` and `timeout` use).
pub const STOP_STATUS: i32 = 125;

/// The program's emulated brk: a region of its own just past its image, reserved up front
/// (inaccessible until the break moves over it) so that no mapping can take its room.
#[derive(Debug)]
pub struct Brk {
    start: u64,
    current: u64,
    mapped_end: u64,
}

/// Room reserved for the program's brk.
const BRK_ROOM: u64 = 1 << 30;

impl Brk {
    /// A brk starting (and ending) at `start`, page aligned, with its room reserved.
    pub fn new(start: u64) -> Brk {
        // SAFETY: an inaccessible reservation that replaces nothing (FIXED_NOREPLACE); if the
        // room is taken, the break simply cannot grow as far, as natively.
        unsafe {
            libc::mmap(
                start as *mut _,
                BRK_ROOM as usize,
                libc::PROT_NONE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED_NOREPLACE,
                -1,
                0,
            )
        };
        Brk { start, current: start, mapped_end: start }
    }

    /// The brk system call: moves the break to `want` if it can, returns the break.
    pub fn set(&mut self, want: u64) -> u64 {
        if want < self.start || want > self.start + BRK_ROOM {
            return self.current;
        }
        let end = want.next_multiple_of(PAGE);
        let (from, to, prot) = if end > self.mapped_end {
            (self.mapped_end, end, libc::PROT_READ | libc::PROT_WRITE)
        } else {
            (end, self.mapped_end, libc::PROT_NONE)
        };
        if from < to {
            let flags =
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_FIXED | if prot == libc::PROT_NONE { libc::MAP_NORESERVE } else { 0 };
            // SAFETY: within the brk room reserved in `new`: only the program's brk pages
            // (fresh zero pages when growing, given back when shrinking) change.
            let p = unsafe { libc::mmap(from as *mut _, (to - from) as usize, prot, flags, -1, 0) };
            if p == libc::MAP_FAILED {
                return self.current;
            }
            self.mapped_end = end;
        }
        self.current = want;
        want
    }
}

/// Runs the system call the program stopped at; `next` is the instruction after it.
/// Returns where the program goes on (`next`, unless the call was `rt_sigreturn`).
pub fn handle(ctx: &mut ThreadCtx, next: u64) -> u64 {
    let g = &ctx.regs.gpr;
    let nr = g[reg::RAX];
    let a = [g[reg::RDI], g[reg::RSI], g[reg::RDX], g[reg::R10], g[reg::R8], g[reg::R9]];
    let mut call = Syscall { tid: ctx.tid as u32, nr, args: a };
    let skipped = {
        let mut eng = engine();
        eng.stats.syscalls += 1;
        eng.tool.on_syscall(&mut call)
    };
    let (nr, a) = (call.nr, call.args);
    let mut result = match nr as i64 {
        _ if skipped.is_some() => skipped.unwrap_or(0),
        libc::SYS_brk => engine().brk.set(a[0]),
        libc::SYS_arch_prctl => arch_prctl(ctx, a),
        libc::SYS_exit if !threads::exiting() => {
            engine().tool.on_thread_exit(call.tid);
            threads::exit_thread(ctx, a[0])
        }
        libc::SYS_exit_group | libc::SYS_exit => {
            finish();
            // SAFETY: the program ends itself; nothing of ours needs to outlive it.
            unsafe { syscall6(nr, a) }
        }
        libc::SYS_readlink => readlink(a[0], a[1], a[2]).unwrap_or_else(|| raw(nr, a)),
        libc::SYS_readlinkat if is_absolute(a[1]) => readlink(a[1], a[2], a[3]).unwrap_or_else(|| raw(nr, a)),
        libc::SYS_execve => exec::execve(a, raw),
        libc::SYS_open | libc::SYS_stat | libc::SYS_access => with_exe_path(nr, a, 0),
        libc::SYS_openat | libc::SYS_newfstatat | libc::SYS_statx | libc::SYS_faccessat | libc::SYS_faccessat2 | libc::SYS_openat2 => {
            with_exe_path(nr, a, 1)
        }
        libc::SYS_mmap | libc::SYS_mprotect | libc::SYS_pkey_mprotect | libc::SYS_munmap | libc::SYS_mremap => memory(nr, a),
        libc::SYS_clone if a[0] & libc::CLONE_THREAD as u64 != 0 => threads::clone_thread(ctx, a, next),
        // A process (posix_spawn's CLONE_VM|CLONE_VFORK included) gets a copy of memory.
        libc::SYS_clone => fork(ctx, a),
        // glibc falls back to clone, which the engine knows how to follow.
        libc::SYS_clone3 => ENOSYS,
        // The child runs on a copy of the runtime's memory, so vfork is a fork here.
        libc::SYS_fork | libc::SYS_vfork => fork(ctx, [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]),
        libc::SYS_execveat => stop("the program called execveat, which rewire cannot follow yet"),
        libc::SYS_rt_sigaction => signals::app_sigaction(a),
        // The runtime's report descriptor does not exist for the program.
        libc::SYS_close if a[0] as i32 == report_fd() => EBADF,
        libc::SYS_close_range => close_range(a),
        libc::SYS_dup2 | libc::SYS_dup3 if a[1] as i32 == report_fd() => {
            move_report_fd();
            raw(nr, a)
        }
        libc::SYS_rt_sigreturn => match signals::sigreturn(ctx) {
            Some(pc) => return pc,
            None => {
                report("the program was killed by SIGSEGV: rt_sigreturn with no signal frame on its stack");
                signals::die(libc::SIGSEGV)
            }
        },
        _ => raw(nr, a),
    };
    engine().tool.on_syscall_result(&call, &mut result);
    if result as i64 == -(libc::EINTR as i64) && ctx.signals().any_pending() {
        ctx.signals().interrupted.set(Some((nr, next - 2)));
        ctx.signals().call_mask.set(temporary_mask(nr, a));
    }
    let r = &mut ctx.regs;
    r.gpr[reg::RAX] = result;
    r.gpr[reg::RCX] = next;
    r.gpr[reg::R11] = r.rflags;
    next
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

/// The signal mask a call installs while it waits, if it takes one.
fn temporary_mask(nr: u64, a: [u64; 6]) -> Option<u64> {
    let at = match nr as i64 {
        libc::SYS_rt_sigsuspend => a[0],
        libc::SYS_ppoll => a[3],
        libc::SYS_epoll_pwait => a[4],
        libc::SYS_pselect6 => {
            let mut p = [0u8; 8];
            (a[5] != 0 && appmem::read(a[5], &mut p)).then(|| u64::from_le_bytes(p))?
        }
        _ => return None,
    };
    let mut m = [0u8; 8];
    (at != 0 && appmem::read(at, &mut m)).then(|| u64::from_le_bytes(m))
}

fn raw(nr: u64, a: [u64; 6]) -> u64 {
    // SAFETY: the program asked for exactly this call; its effects on memory and on the
    // process are the program's own, as they would be natively. Calls that would break the
    // engine are intercepted before this point.
    unsafe { syscall6(nr, a) }
}

/// Prints why the engine stops, flushes tool output, and exits with [`STOP_STATUS`].
pub fn stop(why: &str) -> ! {
    report(why);
    report("stopping");
    finish();
    // SAFETY: ends the process.
    unsafe { syscall6(libc::SYS_exit_group as u64, [STOP_STATUS as u64, 0, 0, 0, 0, 0]) };
    unreachable!("exit_group returned")
}

fn arch_prctl(ctx: &mut ThreadCtx, a: [u64; 6]) -> u64 {
    const SET_GS: u64 = 0x1001;
    const SET_FS: u64 = 0x1002;
    const GET_FS: u64 = 0x1003;
    const GET_GS: u64 = 0x1004;
    match a[0] {
        SET_FS => {
            ctx.app_fs = a[1];
            0
        }
        SET_GS => {
            ctx.app_gs = a[1];
            0
        }
        GET_FS | GET_GS => {
            let v = if a[0] == GET_FS { ctx.app_fs } else { ctx.app_gs };
            if appmem::write(a[1], &v.to_le_bytes()) {
                0
            } else {
                EFAULT
            }
        }
        _ => raw(libc::SYS_arch_prctl as u64, a),
    }
}

fn is_absolute(path: u64) -> bool {
    let mut b = [0u8; 1];
    appmem::read(path, &mut b) && b[0] == b'/'
}

/// True when the program's string at `path` names this process's executable link.
pub(crate) fn names_exe(path: u64) -> bool {
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
        return Some(EINVAL);
    }
    let exe = engine().exe.as_bytes().to_vec();
    let n = exe.len().min(size as usize);
    Some(if appmem::write(buf, &exe[..n]) { n as u64 } else { EFAULT })
}

/// A call taking a path in argument `i`: `/proc/self/exe` is replaced by the program.
fn with_exe_path(nr: u64, mut a: [u64; 6], i: usize) -> u64 {
    if names_exe(a[i]) {
        a[i] = engine().exe.as_ptr() as u64;
    }
    raw(nr, a)
}

/// Mapping calls: run them, then keep the executable ranges and the fragments in step.
fn memory(nr: u64, mut a: [u64; 6]) -> u64 {
    let mut eng = engine();
    let prot_arg = matches!(nr as i64, libc::SYS_mmap | libc::SYS_mprotect | libc::SYS_pkey_mprotect).then_some(2);
    let wants_exec = prot_arg.is_some_and(|i| a[i] & libc::PROT_EXEC as u64 != 0);
    if eng.opts.strip_exec && wants_exec {
        a[2] &= !(libc::PROT_EXEC as u64);
    }
    let was_exec = nr as i64 == libc::SYS_mremap && eng.exec.end_of(a[0]).is_some();
    let ret = raw(nr, a);
    if (ret as i64) < 0 && (ret as i64) > -4096 {
        return ret;
    }
    let len = |n: u64| n.next_multiple_of(PAGE);
    match nr as i64 {
        libc::SYS_mmap => {
            let range = ret..ret + len(a[1]);
            if a[3] & libc::MAP_FIXED as u64 != 0 {
                eng.invalidate(range.clone());
            }
            eng.code_writes.mapped(range.clone(), a[2]);
            if wants_exec {
                eng.exec.add(range);
            } else {
                eng.exec.remove(range);
            }
        }
        libc::SYS_mprotect | libc::SYS_pkey_mprotect => {
            let range = a[0]..a[0] + len(a[1]);
            eng.code_writes.mapped(range.clone(), a[2]);
            if wants_exec {
                eng.exec.add(range);
            } else {
                eng.exec.remove(range.clone());
                eng.invalidate(range);
            }
        }
        libc::SYS_munmap => {
            let range = a[0]..a[0] + len(a[1]);
            eng.code_writes.unmapped(range.clone());
            eng.exec.remove(range.clone());
            eng.invalidate(range);
        }
        _ => {
            let old = a[0]..a[0] + len(a[1]);
            eng.code_writes.unmapped(old.clone());
            eng.exec.remove(old.clone());
            eng.invalidate(old);
            if was_exec {
                eng.exec.add(ret..ret + len(a[2]));
            }
        }
    }
    ret
}

/// `clone` of a process (fork and its variants): the child continues in a copy of the
/// runtime, with its own copy of the code cache, on the stack the call names if any. A
/// shared address space without a new thread (`posix_spawn`'s CLONE_VM|CLONE_VFORK) becomes
/// a copy too: the child only runs until it execs, and the parent does not wait for that.
fn fork(ctx: &mut ThreadCtx, a: [u64; 6]) -> u64 {
    let flags = a[0] & !((libc::CLONE_VM | libc::CLONE_VFORK) as u64);
    // Held across the fork: the child must not inherit the engine in the middle of a change.
    let mut eng = engine();
    let snap = match eng.cache.snapshot() {
        Ok(s) => s,
        Err(e) => stop(&format!("cannot copy the code cache for a new process: {e}")),
    };
    // The child's runtime keeps the runtime's thread pointer; the program's goes to the context.
    let settls = flags & libc::CLONE_SETTLS as u64 != 0;
    let ret = raw(libc::SYS_clone as u64, [flags & !(libc::CLONE_SETTLS as u64), 0, a[2], a[3], 0, 0]);
    if ret == 0 {
        // SAFETY: gettid has no effects.
        ctx.tid = unsafe { libc::gettid() } as u64;
        eng.tool.on_fork_child();
        if a[1] != 0 {
            ctx.regs.gpr[reg::RSP] = a[1];
        }
        if settls {
            ctx.app_fs = a[4];
        }
        if let Err(e) = eng.cache.adopt(snap) {
            stop(&format!("cannot give the new process its own code cache: {e}"));
        }
    }
    ret
}
