//! The runtime's master signal handler (entered through `arch::signal_entry`, which calls it
//! by its symbol name). A write to watched code invalidates the page and lets the write run
//! again; a fault of the runtime's own fault-resumed copy resumes past it. Otherwise the
//! signal is recorded for its thread ([`crate::os::signals`] delivers it) and the thread is
//! sent into the dispatcher: at once when it stopped at an instruction boundary in the cache
//! or faulted there, else at its next exit (its fragment unlinked and its lookup table
//! emptied). Faults with no program handler are reported and end the process as natively;
//! other signals left at a default action that ends the process are recorded the same way,
//! and the dispatcher ends the process with them after the tool's output is written (at a
//! point where the thread holds no lock of the runtime's).

use crate::arch::{self, context::ThreadCtx};
use crate::engine::state::{held_here, installed_engine, redirect_record, try_engine, Engine};
use crate::os::code_writes::WriteFault;
use crate::os::modules;
use crate::os::process_end::die;
use crate::os::report::{report, report_death};
use crate::os::signals::{action, instruction_at, signal_name, SignalsOf, DEFAULT_IGNORED, FAULT_SIGNALS, SEGV_ACCERR, SIG_DFL, SIG_IGN};
use std::sync::atomic::{AtomicU64, Ordering};

/// The current thread's context (GS base).
fn current_ctx() -> &'static mut ThreadCtx {
    // SAFETY: every thread that runs program code has its context at the GS base, and the
    // master handler is only installed once the main thread's is set.
    unsafe { &mut *(arch::gs_base() as *mut ThreadCtx) }
}

/// The master handler (entered through the assembly entry, which switched to the runtime's
/// FS base).
#[no_mangle]
pub(crate) extern "C" fn rewire_on_signal(sig: i32, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo and ucontext for SA_SIGINFO handlers.
    let (info_ref, uc) = unsafe { (&*info, &mut *(uc as *mut libc::ucontext_t)) };
    let code = info_ref.si_code;
    // SAFETY: si_addr is valid to read for every signal (meaningful for faults).
    let fault_addr = unsafe { info_ref.si_addr() } as u64;
    let pc = uc.uc_mcontext.gregs[libc::REG_RIP as usize] as u64;
    if let Some(resume) = arch::resume_after_copy_fault(pc).filter(|_| sig == libc::SIGSEGV || sig == libc::SIGBUS) {
        // The runtime read program memory that is not readable: the copy reports it.
        uc.uc_mcontext.gregs[libc::REG_RIP as usize] = resume as i64;
        return;
    }
    let handler = action(sig as usize)[0];
    let kernel_fault = FAULT_SIGNALS.contains(&sig) && code > 0;
    let mut eng = try_engine();
    // A fault of a thread running program code must be translated (or be a write to watched
    // code): wait for the lock, which a thread in the cache never holds.
    if kernel_fault && current_ctx().in_cache != 0 {
        while eng.is_none() {
            // Give the core to the holder: at a JVM safepoint every thread faults at once.
            // SAFETY: sched_yield has no effects on memory.
            unsafe { arch::syscall6(libc::SYS_sched_yield as u64, [0; 6]) };
            eng = try_engine();
        }
    }
    if sig == libc::SIGSEGV && code == SEGV_ACCERR {
        // A write to code the engine watches: forget the page's fragments, let the write run
        // again.
        if let Some(e) = eng.as_mut() {
            match e.code_writes.write_fault(fault_addr) {
                WriteFault::Unwatched(page) => {
                    e.invalidate(page);
                    // The write came from a fragment built from that very page (a trace that
                    // inlined the code it rewrites): run it again from a fresh block, so that
                    // nothing stale runs after it.
                    if let Some((app, true)) = e.frags.translate_point(pc).filter(|_| !e.frags.live_at(pc)) {
                        redirect(current_ctx(), uc, app, e.frags.correction_at(pc));
                    }
                    return;
                }
                WriteFault::Lifted => return,
                WriteFault::NotWatched => {}
            }
        }
    }
    if eng.is_none() && !held_here() {
        // Another thread holds the lock (briefly: never while it runs program code). Without
        // it this thread could not be sent to the dispatcher, and could run on in linked code
        // without ever taking its signal.
        eng = installed_engine();
    }
    let in_cache = eng.as_ref().and_then(|e| e.frags.translate_point(pc));
    if (handler == SIG_DFL || handler == SIG_IGN) && kernel_fault {
        let name = signal_name(sig);
        match in_cache {
            Some((app, _)) => report_death(&format!(
                "the program was killed by {name} at {app:#x} ({}): {} (fault address {fault_addr:#x})",
                modules::describe(app),
                instruction_at(app)
            )),
            None => report(&format!("internal error: {name} at {pc:#x} ({}), fault address {fault_addr:#x}", modules::describe(pc))),
        }
        drop(eng);
        die(sig);
    }
    if handler == SIG_IGN || (handler == SIG_DFL && DEFAULT_IGNORED.contains(&sig)) {
        return;
    }
    let ctx = current_ctx();
    ctx.signals().record(sig, info);
    ctx.signal_kick = 1;
    if let Some(skip) = arch::skip_unstarted_call(pc) {
        // On its way into a system call the kernel has not started: it does not start.
        uc.uc_mcontext.gregs[libc::REG_RIP as usize] = skip as i64;
    }
    match in_cache {
        // At an instruction boundary (or faulting there): the state is the program's.
        Some((app, clean)) if clean || kernel_fault => redirect(ctx, uc, app, eng.as_ref().and_then(|e| e.frags.correction_at(pc))),
        // The dispatcher's real jump to a non-executable address: the registers are the
        // program's, at the fault, as in the cache.
        _ if kernel_fault && pc != 0 && NATIVE_FAULT_AT.compare_exchange(pc, 0, Ordering::SeqCst, Ordering::SeqCst).is_ok() => {
            redirect(ctx, uc, pc, None)
        }
        _ if kernel_fault => {
            report(&format!("internal error: {} at {pc:#x} ({}) outside program code", signal_name(sig), modules::describe(pc)));
            drop(eng);
            die(sig);
        }
        // Mid-sequence or in the runtime: make the thread leave the cache soon.
        _ => {
            ctx.ibl_clear();
            if let Some(mut e) = eng {
                let target = if in_cache.is_some() { pc } else { ctx.next_pc };
                let Engine { frags, cache, .. } = &mut *e;
                frags.unlink_fragment_at(cache, target);
            }
        }
    }
}

/// The application address a traced thread jumps to for real to fault there (0: none):
/// see `dispatch`. Its SIGSEGV is the program's own fault at that address.
static NATIVE_FAULT_AT: AtomicU64 = AtomicU64::new(0);

/// The next SIGSEGV at `app` comes from a jump the dispatcher makes for real there.
pub(crate) fn expect_native_fault(app: u64) {
    NATIVE_FAULT_AT.store(app, Ordering::SeqCst);
}

/// Makes the interrupted thread, stopped at the start of the translation of application
/// instruction `app`, continue there through the dispatcher; it counts `correction` (see
/// `Fragments::correction_at`) as it leaves.
fn redirect(ctx: &mut ThreadCtx, uc: &mut libc::ucontext_t, app: u64, correction: Option<u32>) {
    if let Some(counter) = correction {
        ctx.count(counter);
    }
    ctx.scratch_rax = uc.uc_mcontext.gregs[libc::REG_RAX as usize] as u64;
    ctx.ibl_target = app;
    uc.uc_mcontext.gregs[libc::REG_RAX as usize] = redirect_record() as i64;
    uc.uc_mcontext.gregs[libc::REG_RIP as usize] = arch::fcache_return_address() as i64;
}
