//! How the process ends. Whatever ends it (the program's `exit_group`, a fatal signal, an
//! `execve`, the engine stopping) first runs the flush the layer above registered at start-up
//! (the tool's output), once: a thread that ends the process while another one flushes waits
//! for that flush to finish. A failed `execve` re-arms it, since the program goes on. When the
//! flush could not write everything, an exit status of 0 becomes [`LOST_STATUS`]. A child on
//! its parent's memory (vfork) never flushes: the output is its parent's.

use crate::arch::syscall6;
use crate::os::report::report;
use crate::os::sigmask::{kernel_default, mask_of, sigprocmask};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicU8, Ordering};
use std::sync::OnceLock;

/// Exit status of rewire itself when it must stop the program (as `env` and `timeout` use).
pub const STOP_STATUS: i32 = 125;
/// Exit status of a program that exited with 0 when its tool output could not be written.
pub const LOST_STATUS: i32 = STOP_STATUS;

static FLUSH: OnceLock<fn()> = OnceLock::new();
/// Where the flush is: [`IDLE`], [`RUNNING`] (on thread [`FLUSHER`]) or [`DONE`].
static STATE: AtomicU8 = AtomicU8::new(IDLE);
static FLUSHER: AtomicI32 = AtomicI32::new(0);
static LOST: AtomicBool = AtomicBool::new(false);
const IDLE: u8 = 0;
const RUNNING: u8 = 1;
const DONE: u8 = 2;
/// The process whose memory this is (a vfork child borrows it).
static OWNER: AtomicI32 = AtomicI32::new(0);

/// Registers what runs before the process ends (once per process).
pub fn on_end(flush: fn()) {
    let _ = FLUSH.set(flush);
    forked();
}

/// In the child of a fork: this memory is its own.
pub fn forked() {
    // SAFETY: getpid has no effects.
    OWNER.store(unsafe { libc::getpid() }, Ordering::SeqCst);
}

/// False in a child that runs on its parent's memory until it execs or exits.
pub fn owns_memory() -> bool {
    // SAFETY: getpid has no effects.
    OWNER.load(Ordering::SeqCst) == unsafe { libc::getpid() }
}

/// Runs the registered flush, unless it ran already (or the memory is a parent's); if
/// another thread is running it, waits until it is done (the process must not end in the
/// middle of writing a file).
pub fn flush() {
    if !owns_memory() {
        return;
    }
    // SAFETY: gettid has no effects.
    let me = unsafe { libc::gettid() };
    match STATE.compare_exchange(IDLE, RUNNING, Ordering::SeqCst, Ordering::SeqCst) {
        Ok(_) => {
            FLUSHER.store(me, Ordering::SeqCst);
            if let Some(f) = FLUSH.get() {
                with_descriptors_to_spare(*f);
            }
            STATE.store(DONE, Ordering::SeqCst);
        }
        // The flush itself faulted, on this thread: end without it.
        Err(RUNNING) if FLUSHER.load(Ordering::SeqCst) == me => {}
        Err(_) => {
            while STATE.load(Ordering::SeqCst) == RUNNING {
                std::thread::sleep(std::time::Duration::from_millis(1));
            }
        }
    }
}

/// Runs `f` with the soft limit on open files raised to the hard one: a program that used up
/// its descriptors (`ulimit -n`) must not make the tool's output unwritable at its end. The
/// program's limit is put back afterwards (an `execve` that follows keeps it).
fn with_descriptors_to_spare(f: fn()) {
    let mut limit = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: reads this process's limit into `limit`.
    let known = unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } == 0;
    let raised = known && limit.rlim_cur < limit.rlim_max;
    if raised {
        let more = libc::rlimit { rlim_cur: limit.rlim_max, rlim_max: limit.rlim_max };
        // SAFETY: raises the soft limit within the hard one; nothing else changes.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &more) };
    }
    f();
    if raised {
        // SAFETY: restores the limit read above.
        unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &limit) };
    }
}

/// Lets the flush run again: the `execve` it ran for failed, and the program goes on.
pub fn rearm() {
    STATE.store(IDLE, Ordering::SeqCst);
}

/// Records that the flush could not write all of the tool's output (it said what and where).
pub fn output_lost() {
    LOST.store(true, Ordering::SeqCst);
}

/// The status the process exits with when the program asks for `status`: [`LOST_STATUS`]
/// instead of success when output was lost, the program's own otherwise.
pub fn exit_status(status: u64) -> u64 {
    if status as u8 == 0 && LOST.load(Ordering::SeqCst) {
        LOST_STATUS as u64
    } else {
        status
    }
}

/// Ends the process by `sig`, as the program would have ended, after the flush.
pub fn die(sig: i32) -> ! {
    flush();
    kernel_default(sig as usize);
    // SAFETY: unblocks and sends the signal to this thread: the process ends with the
    // signal's status (core dump included).
    unsafe {
        sigprocmask(libc::SIG_UNBLOCK, Some(mask_of(sig)));
        syscall6(libc::SYS_tgkill as u64, [libc::getpid() as u64, libc::gettid() as u64, sig as u64, 0, 0, 0]);
        syscall6(libc::SYS_exit_group as u64, [128 + sig as u64, 0, 0, 0, 0, 0]);
    }
    unreachable!("the process survived its own signal")
}

/// Prints why the engine stops, flushes, and exits with [`STOP_STATUS`].
pub fn stop(why: &str) -> ! {
    report(why);
    report("stopping");
    flush();
    // SAFETY: ends the process.
    unsafe { syscall6(libc::SYS_exit_group as u64, [STOP_STATUS as u64, 0, 0, 0, 0, 0]) };
    unreachable!("exit_group returned")
}
