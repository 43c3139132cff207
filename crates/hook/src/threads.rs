//! Stopping the other threads of this process while its code is patched, the way Detours
//! suspends threads: every thread that may be running user code is parked in a signal handler
//! at an instruction boundary, where its program counter can be read and moved (out of bytes
//! about to be overwritten, or out of a trampoline about to be released). Threads blocked in a
//! system call are not disturbed (no spurious `EINTR`) unless the place they return to lies in
//! one of the windows being changed.
//!
//! Nothing here allocates after the first thread is signalled: a parked thread may hold the
//! allocator's lock.

use crate::HookError;
use rustix::fs::{Mode, OFlags, RawDir};
use rustix::thread::futex;
use std::ffi::CStr;
use std::mem::MaybeUninit;
use std::ops::Range;
use std::sync::atomic::{AtomicI32, AtomicU32, AtomicUsize, Ordering::*};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

/// Most threads one stop can park.
const MAX_THREADS: usize = 4096;
/// How long a running thread may take to reach the handler.
const ARRIVAL_TIMEOUT: Duration = Duration::from_secs(2);

/// The signal that parks threads: the third-highest real-time signal, out of the way of
/// glibc's own and of programs that count up from `SIGRTMIN`.
pub fn stop_signal() -> i32 {
    libc::SIGRTMAX() - 2
}

struct Control {
    /// Generation being stopped; 0 when none.
    active: AtomicU32,
    /// Last generation released.
    released: AtomicU32,
    /// Handlers registered in the active generation.
    claimed: AtomicU32,
    /// Handlers that left after release.
    left: AtomicU32,
    /// Bumped by every handler that registers or leaves: the patcher sleeps on it.
    arrivals: AtomicU32,
    tids: [AtomicI32; MAX_THREADS],
    contexts: [AtomicUsize; MAX_THREADS],
}

static CONTROL: Control = Control {
    active: AtomicU32::new(0),
    released: AtomicU32::new(0),
    claimed: AtomicU32::new(0),
    left: AtomicU32::new(0),
    arrivals: AtomicU32::new(0),
    tids: [const { AtomicI32::new(0) }; MAX_THREADS],
    contexts: [const { AtomicUsize::new(0) }; MAX_THREADS],
};

/// Serialises stops; holds the last generation number and `/proc/self/task`, kept open.
static STOPS: Mutex<StopState> = Mutex::new(StopState { generation: 0, task_dir: None, seen: Vec::new(), signalled: Vec::new() });

struct StopState {
    generation: u32,
    /// The directory and the process it was opened in (a forked child reopens it).
    task_dir: Option<(i32, rustix::fd::OwnedFd)>,
    /// Threads listed and threads signalled by the current stop (allocated once, up front:
    /// nothing may allocate while a thread is parked).
    seen: Vec<i32>,
    signalled: Vec<i32>,
}

extern "C" fn park(_sig: libc::c_int, _info: *mut libc::siginfo_t, context: *mut libc::c_void) {
    // Async-signal-safe: atomics and raw system calls only.
    let generation = CONTROL.active.load(Acquire);
    if generation == 0 {
        return; // a late signal from a stop that already ended
    }
    let slot = CONTROL.claimed.fetch_add(1, AcqRel) as usize;
    if slot >= MAX_THREADS {
        CONTROL.left.fetch_add(1, AcqRel);
        return;
    }
    CONTROL.contexts[slot].store(context as usize, Release);
    CONTROL.tids[slot].store(rustix::thread::gettid().as_raw_nonzero().get(), Release);
    CONTROL.arrivals.fetch_add(1, AcqRel);
    let _ = futex::wake(&CONTROL.arrivals, futex::Flags::PRIVATE, 1);
    loop {
        // Wait on the value just compared, so a release in between is never slept through.
        let released = CONTROL.released.load(Acquire);
        if released == generation {
            break;
        }
        let _ = futex::wait(&CONTROL.released, futex::Flags::PRIVATE, released, None);
    }
    CONTROL.left.fetch_add(1, AcqRel);
    CONTROL.arrivals.fetch_add(1, AcqRel);
    let _ = futex::wake(&CONTROL.arrivals, futex::Flags::PRIVATE, 1);
}

fn install_handler() -> Result<(), HookError> {
    static INSTALLED: Mutex<bool> = Mutex::new(false);
    let mut done = INSTALLED.lock().unwrap_or_else(|p| p.into_inner());
    if *done {
        return Ok(());
    }
    let sig = stop_signal();
    // SAFETY: sigaction with valid pointers; `park` is async-signal-safe and has the
    // SA_SIGINFO signature. The previous action is only inspected.
    unsafe {
        let mut old: libc::sigaction = std::mem::zeroed();
        libc::sigaction(sig, std::ptr::null(), &mut old);
        if old.sa_sigaction != libc::SIG_DFL && old.sa_sigaction != libc::SIG_IGN {
            return Err(HookError::StopSignalTaken(sig));
        }
        let mut act: libc::sigaction = std::mem::zeroed();
        act.sa_sigaction = park as *const () as usize;
        act.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_ONSTACK;
        libc::sigfillset(&mut act.sa_mask);
        if libc::sigaction(sig, &act, std::ptr::null_mut()) != 0 {
            return Err(HookError::StopSignalTaken(sig));
        }
    }
    *done = true;
    Ok(())
}

/// The other threads of this process, parked until this value is dropped.
pub(crate) struct StoppedThreads {
    serial: MutexGuard<'static, StopState>,
    generation: u32,
    parked: usize,
    /// Every other thread is parked: nothing else can run while this value lives.
    exclusive: bool,
}

impl StoppedThreads {
    /// Parks every other thread that is running, or whose return point from the system call
    /// it is blocked in (or restart point) lies in one of `windows`.
    pub(crate) fn stop_others(windows: &[Range<u64>]) -> Result<StoppedThreads, HookError> {
        install_handler()?;
        let mut serial = STOPS.lock().unwrap_or_else(|p| p.into_inner());
        serial.generation = serial.generation.wrapping_add(1).max(1);
        let generation = serial.generation;
        let me = rustix::thread::gettid().as_raw_nonzero().get();
        let pid = rustix::process::getpid().as_raw_nonzero().get();
        if serial.task_dir.as_ref().is_none_or(|(p, _)| *p != pid) {
            let dir = rustix::fs::open("/proc/self/task", OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC, Mode::empty())
                .map_err(|e| rewire_mem::MemError::Sys { call: "open(/proc/self/task)".into(), errno: e.to_string() })?;
            serial.task_dir = Some((pid, dir));
        }
        let mut exclusive = true;
        let mut seen = std::mem::take(&mut serial.seen);
        let mut signalled = std::mem::take(&mut serial.signalled);
        seen.clear();
        signalled.clear();
        seen.reserve(MAX_THREADS);
        signalled.reserve(MAX_THREADS);
        CONTROL.claimed.store(0, Release);
        CONTROL.left.store(0, Release);
        CONTROL.active.store(generation, Release);
        let mut stop = StoppedThreads { serial, generation, parked: 0, exclusive: false };
        // procfs counts a process's threads in the task directory's link count (threads + 2):
        // alone, the caller has nothing to park and nobody can start a thread meanwhile.
        let dir = &stop.serial.task_dir.as_ref().expect("opened above").1;
        if rustix::fs::fstat(dir).is_ok_and(|st| st.st_nlink == 3) {
            stop.exclusive = true;
            return Ok(stop);
        }
        // Threads can be created by threads not yet parked: list again until nothing is new.
        loop {
            let before = seen.len();
            let dir = &stop.serial.task_dir.as_ref().expect("opened above").1;
            for_each_thread(dir, |tid| {
                if tid != me && !seen.contains(&tid) && seen.len() < MAX_THREADS {
                    seen.push(tid);
                    if !must_park(tid, windows) {
                        exclusive = false;
                    } else if tgkill(pid, tid) {
                        signalled.push(tid);
                    }
                }
            });
            if let Err(e) = stop.wait_for_arrivals(pid, &mut signalled, windows) {
                stop.serial.seen = seen;
                stop.serial.signalled = signalled;
                return Err(e);
            }
            if seen.len() == before {
                break;
            }
        }
        stop.parked = CONTROL.claimed.load(Acquire).min(MAX_THREADS as u32) as usize;
        stop.exclusive = exclusive && stop.parked >= signalled.len();
        stop.serial.seen = seen;
        stop.serial.signalled = signalled;
        Ok(stop)
    }

    fn wait_for_arrivals(&mut self, pid: i32, signalled: &mut Vec<i32>, windows: &[Range<u64>]) -> Result<(), HookError> {
        let start = Instant::now();
        loop {
            let arrived = CONTROL.claimed.load(Acquire) as usize;
            let registered = (0..arrived.min(MAX_THREADS)).filter(|&i| CONTROL.tids[i].load(Acquire) != 0).count();
            if registered >= signalled.len() {
                return Ok(());
            }
            if start.elapsed() > ARRIVAL_TIMEOUT {
                // Keep only threads that exist, have not arrived, and may run in a window.
                let parked: Vec<i32> = (0..arrived.min(MAX_THREADS)).map(|i| CONTROL.tids[i].load(Acquire)).collect();
                signalled.retain(|&t| !parked.contains(&t) && alive(pid, t) && must_park(t, windows));
                if let Some(&tid) = signalled.first() {
                    return Err(HookError::ThreadDidNotStop { tid, signal: stop_signal() });
                }
                return Ok(());
            }
            wait_for_handlers();
        }
    }

    /// True when every other thread is parked, so memory can be changed in any order.
    pub(crate) fn exclusive(&self) -> bool {
        self.exclusive
    }

    /// Moves the program counter of each parked thread for which `relocate` gives a new one.
    pub(crate) fn move_pcs(&mut self, mut relocate: impl FnMut(u64) -> Option<u64>) {
        for i in 0..self.parked {
            let ctx = CONTROL.contexts[i].load(Acquire) as *mut libc::ucontext_t;
            if ctx.is_null() {
                continue;
            }
            // SAFETY: the thread that owns this ucontext is parked in `park` until released,
            // so its signal frame is live and nobody else touches it.
            unsafe {
                let rip = &mut (*ctx).uc_mcontext.gregs[libc::REG_RIP as usize];
                if let Some(new) = relocate(*rip as u64) {
                    *rip = new as i64;
                }
            }
        }
    }
}

impl Drop for StoppedThreads {
    fn drop(&mut self) {
        CONTROL.released.store(self.generation, Release);
        if CONTROL.claimed.load(Acquire) > 0 {
            let _ = futex::wake(&CONTROL.released, futex::Flags::PRIVATE, i32::MAX as u32);
        }
        let claimed = || CONTROL.claimed.load(Acquire);
        while CONTROL.left.load(Acquire) < claimed() {
            wait_for_handlers();
        }
        CONTROL.active.store(0, Release);
        for i in 0..(claimed() as usize).min(MAX_THREADS) {
            CONTROL.tids[i].store(0, Release);
            CONTROL.contexts[i].store(0, Release);
        }
    }
}

/// Sleeps until a handler registers or leaves (or a millisecond passes), leaving the CPU to
/// the threads being waited for.
fn wait_for_handlers() {
    let seen = CONTROL.arrivals.load(Acquire);
    let timeout = futex::Timespec { tv_sec: 0, tv_nsec: 1_000_000 };
    let _ = futex::wait(&CONTROL.arrivals, futex::Flags::PRIVATE, seen, Some(&timeout));
}

fn tgkill(pid: i32, tid: i32) -> bool {
    // SAFETY: plain system call; no memory is passed.
    unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, stop_signal()) == 0 }
}

fn alive(pid: i32, tid: i32) -> bool {
    // SAFETY: signal 0 only checks that the thread exists.
    unsafe { libc::syscall(libc::SYS_tgkill, pid, tid, 0) == 0 }
}

/// Calls `f` with the id of every thread of this process, read afresh from the open
/// `/proc/self/task` directory (no allocation).
fn for_each_thread(dir: &rustix::fd::OwnedFd, mut f: impl FnMut(i32)) {
    if rustix::fs::seek(dir, rustix::fs::SeekFrom::Start(0)).is_err() {
        return;
    }
    let mut buf = [MaybeUninit::<u8>::uninit(); 4096];
    let mut entries = RawDir::new(dir, &mut buf);
    while let Some(Ok(entry)) = entries.next() {
        if let Some(tid) = parse_decimal(entry.file_name().to_bytes()) {
            f(tid);
        }
    }
}

fn parse_decimal(s: &[u8]) -> Option<i32> {
    if s.is_empty() || !s.iter().all(u8::is_ascii_digit) {
        return None;
    }
    s.iter().try_fold(0i32, |n, &d| n.checked_mul(10)?.checked_add((d - b'0') as i32))
}

/// False only for a thread blocked in the kernel whose return and restart points are outside
/// every window: it cannot run user code in them, and signalling it could make its system
/// call fail with `EINTR`.
fn must_park(tid: i32, windows: &[Range<u64>]) -> bool {
    match blocked_pc(tid) {
        Some(pc) => windows.iter().any(|w| w.contains(&pc) || w.contains(&pc.wrapping_sub(2))),
        None => true,
    }
}

/// The user program counter of a thread blocked in the kernel, from
/// `/proc/self/task/TID/syscall` ("NR args… sp pc"), or `None` when it is running.
fn blocked_pc(tid: i32) -> Option<u64> {
    let mut path = [0u8; 48];
    let prefix = b"/proc/self/task/";
    path[..prefix.len()].copy_from_slice(prefix);
    let mut at = prefix.len();
    let digits = tid.to_string_noalloc();
    path[at..at + digits.1].copy_from_slice(&digits.0[..digits.1]);
    at += digits.1;
    path[at..at + 8].copy_from_slice(b"/syscall");
    let path = CStr::from_bytes_with_nul(&path[..at + 9]).ok()?;
    let fd = rustix::fs::open(path, OFlags::RDONLY | OFlags::CLOEXEC, Mode::empty()).ok()?;
    let mut text = [0u8; 256];
    let n = rustix::io::read(&fd, &mut text).ok()?;
    let text = std::str::from_utf8(&text[..n]).ok()?.trim_end();
    if text.starts_with("running") {
        return None;
    }
    u64::from_str_radix(text.rsplit(' ').next()?.trim_start_matches("0x"), 16).ok()
}

trait DecimalNoAlloc {
    fn to_string_noalloc(self) -> ([u8; 12], usize);
}

impl DecimalNoAlloc for i32 {
    fn to_string_noalloc(self) -> ([u8; 12], usize) {
        let mut out = [0u8; 12];
        let mut digits = [0u8; 12];
        let (mut n, mut len) = (self.unsigned_abs(), 0);
        loop {
            digits[len] = b'0' + (n % 10) as u8;
            len += 1;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for i in 0..len {
            out[i] = digits[len - 1 - i];
        }
        (out, len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimal_round_trip() {
        for n in [0, 7, 42, 123456, i32::MAX] {
            let (d, len) = n.to_string_noalloc();
            assert_eq!(parse_decimal(&d[..len]), Some(n));
        }
        assert_eq!(parse_decimal(b"12a"), None);
    }

    #[test]
    fn parks_running_threads_and_leaves_blocked_ones() {
        use std::sync::atomic::AtomicBool;
        use std::sync::Arc;
        let stop = Arc::new(AtomicBool::new(false));
        let spinner = {
            let stop = stop.clone();
            std::thread::spawn(move || {
                while !stop.load(Relaxed) {
                    std::hint::spin_loop()
                }
            })
        };
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let sleeper = std::thread::spawn(move || rx.recv().ok());
        std::thread::sleep(Duration::from_millis(50));
        let mut stopped = StoppedThreads::stop_others(&[]).unwrap();
        assert!(stopped.parked >= 1, "the spinning thread is parked");
        let mut pcs = 0;
        stopped.move_pcs(|_| {
            pcs += 1;
            None
        });
        assert_eq!(pcs, stopped.parked, "every parked thread's pc is offered");
        let parked = stopped.parked;
        drop(stopped);
        stop.store(true, Relaxed);
        spinner.join().unwrap();
        tx.send(()).unwrap();
        sleeper.join().unwrap();
        assert!(parked <= 2, "the thread blocked in recv was left alone (parked {parked})");
    }
}
