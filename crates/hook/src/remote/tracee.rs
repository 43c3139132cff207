//! A process under ptrace control: every thread stopped while this value lives, registers
//! read and written, and system calls or functions run in the target by borrowing a stopped
//! thread and restoring it exactly afterwards (registers, including the syscall-restart state).
//!
//! ptrace requests are only accepted from the thread that attached: use a `Tracee` from one
//! thread.

use crate::HookError;
use libc::user_regs_struct;
use nix::sys::ptrace;
use nix::sys::signal::Signal;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::Mutex;

/// Return address planted for remote calls: returning there faults, which stops the thread.
const CALL_RETURN: u64 = 0;

/// A traced process whose threads are all stopped.
#[derive(Debug)]
pub struct Tracee {
    pid: i32,
    threads: Mutex<Vec<i32>>,
    /// System calls made on the target (ptrace requests, waits, memory transfers).
    kernel_calls: AtomicU64,
}

fn thread_ids(pid: i32) -> Result<Vec<i32>, HookError> {
    let dir = std::fs::read_dir(format!("/proc/{pid}/task")).map_err(|_| HookError::NoSuchProcess(pid))?;
    Ok(dir.filter_map(|e| e.ok()?.file_name().to_str()?.parse().ok()).collect())
}

/// Why attaching to `pid` was refused, with what to do about it.
fn not_permitted(pid: i32) -> HookError {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let tracer = status.lines().find_map(|l| l.strip_prefix("TracerPid:")).and_then(|v| v.trim().parse::<i32>().ok()).unwrap_or(0);
    if tracer != 0 {
        return HookError::AlreadyTraced { pid, tracer };
    }
    let scope = std::fs::read_to_string("/proc/sys/kernel/yama/ptrace_scope").ok().and_then(|s| s.trim().parse::<u32>().ok()).unwrap_or(0);
    let why = match scope {
        1 => "kernel.yama.ptrace_scope = 1 only lets a process trace its descendants: run rewire as root, \
              set `sysctl kernel.yama.ptrace_scope=0`, or start the program with `rewire launch`"
            .to_string(),
        2 => "kernel.yama.ptrace_scope = 2 only lets root (CAP_SYS_PTRACE) trace: run rewire as root".to_string(),
        3 => "kernel.yama.ptrace_scope = 3 forbids ptrace entirely until reboot: use `rewire launch` is not possible either; \
              reboot with a lower setting"
            .to_string(),
        _ => "the process belongs to another user or is not dumpable: run rewire as that user or as root".to_string(),
    };
    HookError::NotPermitted { pid, why }
}

/// Waits until `tid` stops. Any traced thread of ours that exits means the process is exiting
/// (its leader is reported only after the others are reaped, so wait on all of them).
fn wait_stopped(tid: i32) -> Result<WaitStatus, HookError> {
    loop {
        match waitpid(None, Some(WaitPidFlag::__WALL)) {
            Ok(s @ (WaitStatus::Stopped(..) | WaitStatus::PtraceEvent(..) | WaitStatus::PtraceSyscall(_)))
                if s.pid() == Some(Pid::from_raw(tid)) =>
            {
                return Ok(s)
            }
            Ok(WaitStatus::Exited(..) | WaitStatus::Signaled(..)) => return Err(HookError::TargetExited(tid)),
            Ok(_) => continue,
            Err(nix::errno::Errno::EINTR) => continue,
            Err(_) => return Err(HookError::TargetExited(tid)),
        }
    }
}

impl Tracee {
    /// Attaches to every thread of `pid` (seize + interrupt) and waits until all are stopped.
    pub fn attach(pid: i32) -> Result<Tracee, HookError> {
        if pid <= 0 || !std::path::Path::new(&format!("/proc/{pid}")).exists() {
            return Err(HookError::NoSuchProcess(pid));
        }
        let tracee = Tracee { pid, threads: Mutex::new(Vec::new()), kernel_calls: AtomicU64::new(0) };
        tracee.seize_all()?;
        Ok(tracee)
    }

    /// Seizes and stops every thread not yet held, listing again until no new one appears.
    fn seize_all(&self) -> Result<(), HookError> {
        let pid = self.pid;
        loop {
            let mut added = false;
            for tid in thread_ids(pid)? {
                if self.threads().contains(&tid) {
                    continue;
                }
                self.count(3);
                match ptrace::seize(Pid::from_raw(tid), ptrace::Options::empty()) {
                    Ok(()) => {}
                    Err(nix::errno::Errno::EPERM) => {
                        self.detach();
                        return Err(not_permitted(pid));
                    }
                    Err(_) => continue, // the thread exited meanwhile
                }
                if ptrace::interrupt(Pid::from_raw(tid)).is_ok() && wait_stopped(tid).is_ok() {
                    self.threads.lock().unwrap_or_else(|p| p.into_inner()).push(tid);
                    added = true;
                }
            }
            if !added {
                break;
            }
        }
        if self.threads().is_empty() {
            return Err(HookError::NoSuchProcess(pid));
        }
        Ok(())
    }

    /// Lets the process run untraced for `pause`, then stops every thread again.
    pub fn let_run(&self, pause: std::time::Duration) -> Result<(), HookError> {
        self.detach();
        std::thread::sleep(pause);
        self.seize_all()
    }

    /// Takes over a child that called `PTRACE_TRACEME` and is stopped (one thread).
    pub fn from_stopped_child(pid: i32) -> Tracee {
        Tracee { pid, threads: Mutex::new(vec![pid]), kernel_calls: AtomicU64::new(0) }
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.pid
    }

    /// The stopped threads.
    pub fn threads(&self) -> Vec<i32> {
        self.threads.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Counts `n` system calls made on the target.
    pub(crate) fn count(&self, n: u64) {
        self.kernel_calls.fetch_add(n, Relaxed);
    }

    /// System calls made on the target so far.
    pub fn kernel_calls(&self) -> u64 {
        self.kernel_calls.load(Relaxed)
    }

    /// A thread's registers.
    pub fn regs(&self, tid: i32) -> Result<user_regs_struct, HookError> {
        self.count(1);
        ptrace::getregs(Pid::from_raw(tid)).map_err(|_| HookError::TargetExited(self.pid))
    }

    /// Sets a thread's registers.
    pub fn set_regs(&self, tid: i32, regs: user_regs_struct) -> Result<(), HookError> {
        self.count(1);
        ptrace::setregs(Pid::from_raw(tid), regs).map_err(|_| HookError::TargetExited(self.pid))
    }

    /// The thread borrowed for system calls and calls: the main thread when stopped here.
    fn worker(&self) -> Result<i32, HookError> {
        let threads = self.threads();
        threads.iter().copied().find(|&t| t == self.pid).or(threads.first().copied()).ok_or(HookError::TargetExited(self.pid))
    }

    /// Runs system call `nr` with `args` in the target, at the `syscall` instruction `insn`
    /// of its code; returns the raw result (negative errno on failure).
    pub fn syscall(&self, insn: u64, nr: i64, args: [u64; 6]) -> Result<i64, HookError> {
        let tid = self.worker()?;
        let saved = self.regs(tid)?;
        let mut regs = saved;
        regs.rip = insn;
        regs.rax = nr as u64;
        regs.orig_rax = u64::MAX; // not inside a system call: no restart handling
        (regs.rdi, regs.rsi, regs.rdx, regs.r10, regs.r8, regs.r9) = (args[0], args[1], args[2], args[3], args[4], args[5]);
        self.set_regs(tid, regs)?;
        self.count(2); // step and wait
        let outcome =
            ptrace::step(Pid::from_raw(tid), None).map_err(|_| HookError::TargetExited(self.pid)).and_then(|()| wait_stopped(tid));
        let result = self.regs(tid).map(|r| r.rax as i64);
        self.set_regs(tid, saved)?;
        outcome?;
        result
    }

    /// Calls the function at `func` in the target with up to six integer arguments, on the
    /// borrowed thread's stack below its red zone; returns `rax`.
    pub fn call(&self, func: u64, args: &[u64]) -> Result<u64, HookError> {
        let tid = self.worker()?;
        let saved = self.regs(tid)?;
        let mut regs = saved;
        let sp = ((saved.rsp - 256) & !0xf) - 8; // as after a call: rsp ≡ 8 (mod 16)
        self.count(1);
        ptrace::write(Pid::from_raw(tid), sp as ptrace::AddressType, CALL_RETURN as libc::c_long)
            .map_err(|_| HookError::TargetExited(self.pid))?;
        regs.rsp = sp;
        regs.rip = func;
        regs.rax = 0;
        regs.orig_rax = u64::MAX;
        let mut a = [0u64; 6];
        a[..args.len().min(6)].copy_from_slice(&args[..args.len().min(6)]);
        (regs.rdi, regs.rsi, regs.rdx, regs.rcx, regs.r8, regs.r9) = (a[0], a[1], a[2], a[3], a[4], a[5]);
        self.set_regs(tid, regs)?;
        let result = loop {
            self.count(2); // continue and wait
            ptrace::cont(Pid::from_raw(tid), None).map_err(|_| HookError::TargetExited(self.pid))?;
            match wait_stopped(tid)? {
                WaitStatus::Stopped(_, Signal::SIGSEGV) => {
                    let r = self.regs(tid)?;
                    if r.rip == CALL_RETURN {
                        break Ok(r.rax);
                    }
                    break Err(HookError::RemoteCallFaulted { pid: self.pid, function: func, at: r.rip });
                }
                WaitStatus::Stopped(_, sig) => break Err(HookError::RemoteCallInterrupted { pid: self.pid, signal: sig as i32 }),
                _ => continue,
            }
        };
        self.set_regs(tid, saved)?;
        result
    }

    /// Lets every thread run again, exactly where it was.
    pub fn detach(&self) {
        for tid in self.threads.lock().unwrap_or_else(|p| p.into_inner()).drain(..) {
            let _ = ptrace::detach(Pid::from_raw(tid), None);
        }
    }
}

impl Drop for Tracee {
    fn drop(&mut self) {
        self.detach();
    }
}
