//! The AFL++ fork server (`-t afl`). When the program first reaches its entry point (the
//! dynamic loader is done) or `AFL_ENTRYPOINT`, the process becomes the fork server: it
//! greets the fuzzer ([`handshake`]), then for every request forks a child that runs the
//! program on from there, reports the child's pid and, when it ends, its wait status, which
//! is the program's own (a crash is the same signal as natively).
//!
//! The cache stays warm: a child starts with every fragment its server has, in cache units
//! it shares with the server and does not write (`CodeCache::freeze`: it builds into units
//! of its own, and copies a shared unit only if it must change code there). The tags of the
//! blocks a child builds, and of the indirect-branch targets it looks up and misses, go into
//! memory shared with the server, which builds those blocks too and puts the targets in its
//! lookup table once the child is gone, so later children find both.

pub mod handshake;
pub mod options;
pub mod persistent;
pub mod report;

use crate::arch::context::ThreadCtx;
use crate::arch::syscall6;
use crate::engine::fork_server::handshake::{read_word, write_word, CONTROL_FD, STATUS_FD};
use crate::engine::fork_server::report::BuiltBlocks;
use crate::engine::state::{Engine, EngineGuard};
use crate::os::process_end::stop;

/// Becomes the fork server, on the dispatcher of the only thread, as the program is about
/// to run its code at the start address. Returns in each child (which runs the program on);
/// the server itself never returns. Returns at once, with nothing changed, when no fuzzer
/// listens: the program then runs once.
pub fn serve(ctx: &mut ThreadCtx, eng: &mut EngineGuard) {
    let map_size = eng.fork_server.as_ref().map_or(0, |f| f.map_size) as u32;
    let cmplog = eng.fork_server.as_ref().is_some_and(|f| f.cmplog);
    eng.fork_server = None;
    let shared_input = eng.persistent.as_ref().is_some_and(|p| p.wants_shared_input());
    let offer = handshake::Offer { map_size, shared_input, cmplog };
    let started = match handshake::start(offer, handshake::expected_protocol()) {
        Ok(Some(s)) => s,
        Ok(None) => return,
        Err(e) => stop(&format!("afl: the fuzzer broke off the fork-server handshake: {e}")),
    };
    if !started.shared_input {
        if let Some(p) = eng.persistent.as_mut() {
            p.no_shared_input();
        }
    }
    if eng.opts.verbose {
        crate::os::report::report(&format!("afl: fork server up ({:?} handshake)", started.protocol));
    }
    let Some(mut built) = BuiltBlocks::new() else { stop("afl: cannot map memory shared with the fork server's children") };
    let mut request = started.first_request;
    // A child of the persistent loop that stopped after an iteration, waiting for the next.
    let mut stopped: Option<i32> = None;
    loop {
        let was_killed = match request.take().map_or_else(|| read_word(CONTROL_FD), |r| Ok(Some(r))) {
            Ok(Some(v)) => v,
            // The fuzzer is gone: so is its fork server (as AFL++'s own), and a child
            // stopped between iterations.
            _ => {
                if let Some(pid) = stopped {
                    // SAFETY: ends our own stopped child.
                    unsafe { libc::kill(pid, libc::SIGKILL) };
                    wait(pid, 0);
                }
                exit_server()
            }
        };
        if let Some(pid) = stopped.filter(|_| was_killed != 0) {
            // The fuzzer killed the stopped child (a time-out): reap it, fork anew.
            wait(pid, 0);
            stopped = None;
        }
        let pid = match stopped.take() {
            Some(pid) => {
                // SAFETY: wakes our own stopped child for its next iteration.
                unsafe { libc::kill(pid, libc::SIGCONT) };
                pid
            }
            None => {
                // SAFETY: a plain fork (SIGCHLD, no shared memory): the child is a copy of
                // this single-threaded process, the engine lock held by this thread included.
                let pid = unsafe { syscall6(libc::SYS_clone as u64, [libc::SIGCHLD as u64, 0, 0, 0, 0, 0]) } as i64;
                if pid == 0 {
                    become_child(ctx, eng, built);
                    return;
                }
                if pid < 0 {
                    exit_server();
                }
                pid as i32
            }
        };
        if write_word(STATUS_FD, pid as u32).is_err() {
            exit_server();
        }
        let status = wait(pid, libc::WUNTRACED);
        if libc::WIFSTOPPED(status) {
            stopped = Some(pid);
        }
        if write_word(STATUS_FD, status as u32).is_err() {
            exit_server();
        }
        if stopped.is_none() {
            learn(ctx, eng, &mut built);
        }
    }
}

/// Waits for our child `pid` (`flags` as `waitpid` takes them); its status.
fn wait(pid: i32, flags: i32) -> i32 {
    let mut status = 0;
    // SAFETY: waits for our own child.
    while unsafe { libc::waitpid(pid, &mut status, flags) } < 0 {
        if std::io::Error::last_os_error().kind() != std::io::ErrorKind::Interrupted {
            exit_server();
        }
    }
    status
}

/// The child's side of a fork: its own thread id, the server's cache units frozen, its new
/// blocks reported, the fuzzer's descriptors closed (the program must not see them).
fn become_child(ctx: &mut ThreadCtx, eng: &mut Engine, built: BuiltBlocks) {
    // SAFETY: gettid has no effects.
    ctx.tid = unsafe { libc::gettid() } as u64;
    crate::os::process_end::forked();
    crate::os::report::forked();
    eng.cache.freeze();
    eng.built_blocks = Some(built);
    // SAFETY: closes the fuzzer's pipes in this child only.
    unsafe {
        libc::close(CONTROL_FD);
        libc::close(STATUS_FD);
    }
    eng.tool.on_fork_child();
}

/// Builds the blocks the last child built and puts them in the lookup table, so that the
/// next child has them (it inherits this thread's table).
fn learn(ctx: &mut ThreadCtx, eng: &mut Engine, built: &mut BuiltBlocks) {
    for tag in built.take() {
        if eng.exec.end_of(tag).is_some() {
            if let Ok(id) = eng.fragment_for(tag) {
                ctx.ibl_insert(tag, eng.frags.get(id).lookup_entry());
            }
        }
    }
}

fn exit_server() -> ! {
    // SAFETY: ends the fork server; its children are the fuzzer's to reap.
    unsafe { syscall6(libc::SYS_exit_group as u64, [0; 6]) };
    unreachable!("exit_group returned")
}
