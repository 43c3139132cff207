//! The program's system calls, as a table of handlers. Each call leaves the cache; the tool
//! sees it first (and may skip it with a result), then the handler of its family runs it:
//! the few the runtime must own are emulated (brk, arch_prctl, `/proc/self/exe`, signal
//! dispositions) or followed (mapping calls that change which code exists, processes,
//! threads, `execve`), every other call runs unchanged with the program's arguments and its
//! result goes back unchanged.

mod descriptors;
mod exec;
mod memory;
mod proc_self;
mod process;
mod signals;
mod thread_state;

use crate::arch;
use crate::arch::context::{reg, ThreadCtx};
use crate::engine::state::{engine, Engine};
use crate::os::appmem;
use crate::os::code_writes::WriteFault;
use crate::os::signals::SignalsOf;
use crate::tool::Syscall;

/// A system call of the program, as its handler sees it.
pub(crate) struct Call<'a> {
    /// The calling thread's context (the registers are those of the `syscall`).
    pub ctx: &'a mut ThreadCtx,
    /// The call's number, as the tool left it.
    pub nr: u64,
    /// Its six arguments, as the tool left them.
    pub args: [u64; 6],
    /// The address of the instruction after the `syscall`.
    pub next: u64,
    /// The calling thread's id.
    pub tid: u32,
}

/// How the program goes on after a handler.
pub(crate) enum Outcome {
    /// The call returns this result (raw: `-errno` on error) to the next instruction.
    Returns(u64),
    /// The thread continues at this application address with the registers its context
    /// holds (`rt_sigreturn`).
    ContinuesAt(u64),
}

/// A family's handler.
type Handler = fn(&mut Call<'_>) -> Outcome;

/// The families: the calls each one owns, and its handler.
const FAMILIES: &[(&[i64], Handler)] = &[
    (memory::CALLS, memory::handle),
    (memory::BRK_CALLS, memory::brk),
    (signals::CALLS, signals::handle),
    (process::CALLS, process::handle),
    (process::EXIT_CALLS, process::exit),
    (exec::CALLS, exec::handle),
    (proc_self::CALLS, proc_self::handle),
    (descriptors::CALLS, descriptors::handle),
    (thread_state::CALLS, thread_state::handle),
];

/// System call numbers the table covers (x86-64 numbers are below 512).
const TABLE_LEN: usize = 512;

/// The handler of each call number; `None`: the call runs unchanged.
static HANDLERS: [Option<Handler>; TABLE_LEN] = table();

const fn table() -> [Option<Handler>; TABLE_LEN] {
    let mut t: [Option<Handler>; TABLE_LEN] = [None; TABLE_LEN];
    let mut f = 0;
    while f < FAMILIES.len() {
        let (calls, handler) = FAMILIES[f];
        let mut c = 0;
        while c < calls.len() {
            assert!(t[calls[c] as usize].is_none(), "a system call in two families");
            t[calls[c] as usize] = Some(handler);
            c += 1;
        }
        f += 1;
    }
    t
}

/// Runs the system call the program stopped at; `next` is the instruction after it.
/// Returns where the program goes on (`next`, unless the call was `rt_sigreturn`).
pub fn handle(ctx: &mut ThreadCtx, next: u64) -> u64 {
    let g = &ctx.regs.gpr;
    let a = [g[reg::RDI], g[reg::RSI], g[reg::RDX], g[reg::R10], g[reg::R8], g[reg::R9]];
    let mut syscall = Syscall { tid: ctx.tid as u32, nr: g[reg::RAX], args: a };
    let skipped = {
        let mut eng = engine();
        eng.stats.syscalls += 1;
        let skipped = eng.tool.on_syscall(&mut syscall);
        lift_code_pages(&mut eng, syscall.args);
        skipped
    };
    let (nr, a) = (syscall.nr, syscall.args);
    let outcome = match skipped {
        Some(result) => Outcome::Returns(result),
        None => match HANDLERS.get(nr as usize).copied().flatten() {
            Some(handler) => handler(&mut Call { ctx, nr, args: a, next, tid: syscall.tid }),
            None => Outcome::Returns(raw(nr, a)),
        },
    };
    let mut result = match outcome {
        Outcome::Returns(r) => r,
        Outcome::ContinuesAt(pc) => return pc,
    };
    if result == arch::NOT_STARTED {
        // A signal came first: the registers stay as they were, the call is made again at
        // its own address once the signal is delivered.
        ctx.signals().unstarted.set(Some(next - 2));
        return next;
    }
    engine().tool.on_syscall_result(&syscall, &mut result);
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

/// Gives write permission back to the code pages the engine protected that a call's
/// pointer arguments reach (`read()` into a JIT's page): the kernel would fail the call with
/// EFAULT where the program natively succeeds. A pointer reaches as far as the largest
/// other argument below 1 GiB (a buffer's length, in practice); the page's fragments go, as
/// for a write fault.
fn lift_code_pages(eng: &mut Engine, a: [u64; 6]) {
    if !eng.code_writes.any_protected() {
        return;
    }
    let len = a.iter().copied().filter(|&v| v < 1 << 30).max().unwrap_or(0).max(1);
    for &v in &a {
        for page in eng.code_writes.protected_in(v..v.saturating_add(len)) {
            if let WriteFault::Unwatched(range) = eng.code_writes.write_fault(page) {
                eng.invalidate(range);
            }
        }
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

/// Runs the call as the program made it.
fn raw(nr: u64, a: [u64; 6]) -> u64 {
    // SAFETY: the program asked for exactly this call; its effects on memory and on the
    // process are the program's own, as they would be natively. Calls that would break the
    // engine are intercepted before this point.
    unsafe { arch::program_syscall(nr, a) }
}

/// A negative errno as a raw result.
const fn err(errno: i32) -> u64 {
    (-errno) as i64 as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_family_owns_its_calls_in_the_table() {
        for (calls, handler) in FAMILIES {
            for &nr in *calls {
                assert!(HANDLERS[nr as usize].is_some_and(|h| std::ptr::fn_addr_eq(h, *handler)), "call {nr}");
            }
        }
        assert!(HANDLERS[libc::SYS_read as usize].is_none() && HANDLERS[libc::SYS_getpid as usize].is_none());
    }
}
