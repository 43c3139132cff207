//! Signals. The program's dispositions are kept here (it sees its own handlers); the kernel
//! gets the runtime's master handler for every signal the program handles and for the fault
//! signals. The master handler records the signal for its thread and gets the thread into the
//! dispatcher: at once when it was at an instruction boundary in the cache or faulted there
//! (the interrupted state *is* the application state), else at the thread's next exit (its
//! fragment is unlinked and its lookup table emptied so that the exit comes soon). The
//! dispatcher then builds the frame the kernel would have built on the program's stack (or
//! alternate stack) and runs the program's handler from the cache; `rt_sigreturn` restores
//! the state the frame holds. Faults with no program handler are reported at the
//! application address and end the process with the program's status.
//!
//! Every signal whose default action ends the process gets the master handler too while the
//! program leaves it at its default, so that the tool's output is written before the process
//! dies of it (the dispatcher then ends the process with the same signal); the program still
//! sees `SIG_DFL` as its disposition.

use crate::arch::context::{reg, ThreadCtx, XSAVE_MAX};
use crate::arch::{self, syscall6};
use crate::os::process_end::{die, owns_memory};
use crate::os::report::report_death;
use crate::os::sigmask::{kernel_default, mask_of, sigprocmask};
use crate::os::{appmem, modules};
use std::sync::atomic::{AtomicU64, Ordering};

pub(crate) const SIG_DFL: u64 = 0;
pub(crate) const SIG_IGN: u64 = 1;
const NSIG: usize = 65;
pub(crate) const FAULT_SIGNALS: [i32; 5] = [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE, libc::SIGTRAP];
/// Signals whose default action is to do nothing.
pub(crate) const DEFAULT_IGNORED: [i32; 4] = [libc::SIGCHLD, libc::SIGURG, libc::SIGWINCH, libc::SIGCONT];
/// Signals whose default action stops the process.
const DEFAULT_STOPS: [i32; 4] = [libc::SIGSTOP, libc::SIGTSTP, libc::SIGTTIN, libc::SIGTTOU];

/// Whether the default action of `sig` ends the process (with or without a core dump), and
/// the runtime can catch it first.
fn default_ends_process(sig: i32) -> bool {
    sig != libc::SIGKILL && !DEFAULT_IGNORED.contains(&sig) && !DEFAULT_STOPS.contains(&sig)
}
/// si_code of a SIGSEGV for an access the page protection forbids.
pub(crate) const SEGV_ACCERR: i32 = 2;
/// RFLAGS bits a signal return may change (CF PF AF ZF SF TF DF OF AC… as the kernel's FIX_EFLAGS).
const USER_FLAGS: u64 = 0x0004_0dd5;

/// Whether `sa_flags` (as `rt_sigaction` takes them) hold `flag` (libc's `SA_*`, a C int:
/// SA_RESETHAND is its sign bit).
fn has_flag(flags: u64, flag: i32) -> bool {
    flags & u64::from(flag as u32) != 0
}

/// The program's dispositions (`struct sigaction` as `rt_sigaction` takes it: handler,
/// flags, restorer, mask), readable from the signal handler without locks.
static ACTIONS: [[AtomicU64; 4]; NSIG] = [const { [const { AtomicU64::new(0) }; 4] }; NSIG];

pub(crate) fn action(sig: usize) -> [u64; 4] {
    let a = &ACTIONS[sig];
    [0, 1, 2, 3].map(|i| a[i].load(Ordering::Acquire))
}

fn set_action(sig: usize, v: [u64; 4]) {
    for (slot, x) in ACTIONS[sig].iter().zip(v) {
        slot.store(x, Ordering::Release);
    }
}

/// The signals the program ignores and those it catches (its own dispositions), as bit
/// sets like the kernel's `SigIgn` and `SigCgt`.
pub fn program_signal_sets() -> (u64, u64) {
    let (mut ignored, mut caught) = (0, 0);
    for sig in 1..NSIG {
        match action(sig)[0] {
            SIG_DFL => {}
            SIG_IGN => ignored |= 1 << (sig - 1),
            _ => caught |= 1 << (sig - 1),
        }
    }
    (ignored, caught)
}

/// Takes the dispositions the program inherits: those of this process now (default or
/// ignored, as `execve` leaves them).
pub fn inherit_dispositions() {
    for sig in 1..NSIG {
        let mut a = [0u64; 4];
        // SAFETY: a query only (no new action); the kernel writes 32 bytes into `a`.
        unsafe { syscall6(libc::SYS_rt_sigaction as u64, [sig as u64, 0, a.as_mut_ptr() as u64, 8, 0, 0]) };
        set_action(sig, a);
    }
}

/// Signals recorded for one thread, waiting for the dispatcher.
#[derive(Debug)]
pub struct ThreadSignals {
    pending: AtomicU64,
    info: [std::cell::UnsafeCell<[u8; 128]>; NSIG],
    /// The system call interrupted by a signal, for SA_RESTART: (number, its address).
    pub interrupted: std::cell::Cell<Option<(u64, u64)>>,
    /// The system call that did not start because a signal came first (its address): the
    /// thread makes it after the signal's handler, or at once if none runs.
    pub unstarted: std::cell::Cell<Option<u64>>,
    /// The temporary mask of an interrupted `rt_sigsuspend`, `ppoll`, `pselect6` or
    /// `epoll_pwait`: the signal was delivered under it, as natively.
    pub call_mask: std::cell::Cell<Option<u64>>,
    /// The program's alternate signal stack for this thread, as the kernel keeps it.
    alt_stack: std::cell::Cell<AltStack>,
}

/// A thread's alternate signal stack as the kernel keeps it (`sas_ss_*`): the runtime's own
/// signal stack is the kernel's, the program's is emulated.
#[derive(Debug, Clone, Copy)]
struct AltStack {
    sp: u64,
    size: u64,
    /// The flags as the program set them (`SS_DISABLE`, 0 or `SS_ONSTACK`, `SS_AUTODISARM`).
    flags: i32,
}

/// `SS_AUTODISARM`: the stack is disabled while a handler runs on it.
const SS_AUTODISARM: i32 = 1 << 31;
/// The smallest alternate stack the kernel takes (`MINSIGSTKSZ`).
const MINSIGSTKSZ: u64 = 2048;

impl AltStack {
    const DISABLED: AltStack = AltStack { sp: 0, size: 0, flags: libc::SS_DISABLE };

    /// Whether `sp` is on it (the kernel's `on_sig_stack`).
    fn holds(&self, sp: u64) -> bool {
        self.flags & SS_AUTODISARM == 0 && sp > self.sp && sp - self.sp <= self.size
    }

    /// The kernel's `sas_ss_flags`: disabled, on it, or neither.
    fn state(&self, sp: u64) -> i32 {
        if self.size == 0 {
            libc::SS_DISABLE
        } else if self.holds(sp) {
            libc::SS_ONSTACK
        } else {
            0
        }
    }

    /// As `stack_t`, for `sigaltstack`'s old value (`flags`) or a signal frame.
    fn as_stack_t(&self, flags: i32) -> libc::stack_t {
        libc::stack_t { ss_sp: self.sp as *mut _, ss_flags: flags, ss_size: self.size as usize }
    }

    /// The kernel's `do_sigaltstack` setting `ss` while the thread's stack pointer is `sp`.
    fn set(&mut self, ss: &libc::stack_t, sp: u64) -> Result<(), i32> {
        if self.holds(sp) {
            return Err(libc::EPERM);
        }
        let mode = ss.ss_flags & !SS_AUTODISARM;
        if mode != libc::SS_DISABLE && mode != libc::SS_ONSTACK && mode != 0 {
            return Err(libc::EINVAL);
        }
        *self = if mode == libc::SS_DISABLE {
            AltStack { sp: 0, size: 0, flags: ss.ss_flags }
        } else if (ss.ss_size as u64) < MINSIGSTKSZ {
            return Err(libc::ENOMEM);
        } else {
            AltStack { sp: ss.ss_sp as u64, size: ss.ss_size as u64, flags: ss.ss_flags }
        };
        Ok(())
    }
}

impl Default for ThreadSignals {
    fn default() -> ThreadSignals {
        ThreadSignals {
            pending: AtomicU64::new(0),
            info: std::array::from_fn(|_| std::cell::UnsafeCell::new([0; 128])),
            interrupted: Default::default(),
            unstarted: Default::default(),
            call_mask: Default::default(),
            alt_stack: std::cell::Cell::new(AltStack::DISABLED),
        }
    }
}

impl ThreadSignals {
    pub(crate) fn record(&self, sig: i32, info: *const libc::siginfo_t) {
        // SAFETY: the kernel's siginfo is 128 bytes; the slot belongs to this thread, which is
        // the one running this handler (the dispatcher reads it on the same thread).
        unsafe { std::ptr::copy_nonoverlapping(info as *const u8, self.info[sig as usize].get() as *mut u8, 128) };
        self.pending.fetch_or(1 << (sig - 1), Ordering::SeqCst);
    }

    /// True when a signal waits for delivery.
    pub fn any_pending(&self) -> bool {
        self.pending.load(Ordering::SeqCst) != 0
    }
}

/// A thread context's signal state, which the context stores as an opaque pointer.
pub trait SignalsOf {
    /// The thread's signal state.
    fn signals(&self) -> &ThreadSignals;
}

impl SignalsOf for ThreadCtx {
    fn signals(&self) -> &ThreadSignals {
        // SAFETY: set by `attach` to a leaked box before the thread first runs, freed only
        // by `release` once nothing can read it.
        unsafe { &*(self.signal_state as *const ThreadSignals) }
    }
}

/// Gives a new thread context its (empty) signal state.
pub fn attach(ctx: &mut ThreadCtx) {
    ctx.signal_state = Box::into_raw(Box::<ThreadSignals>::default()) as u64;
}

/// Gives `child` the program's alternate stack of `parent` (a vfork child keeps it, as the
/// kernel's does).
pub fn inherit_alt_stack(parent: &ThreadCtx, child: &ThreadCtx) {
    child.signals().alt_stack.set(parent.signals().alt_stack.get());
}

/// Frees the signal state of a thread that is exiting.
///
/// # Safety
/// Every signal must be blocked on the thread and nothing may read the state any more.
pub unsafe fn release(ctx: &mut ThreadCtx) {
    // SAFETY: the box `attach` made; per the contract, no reader is left.
    drop(unsafe { Box::from_raw(ctx.signal_state as *mut ThreadSignals) });
    ctx.signal_state = 0;
}

/// Installs the runtime's handler for the fault signals and for every signal the program
/// inherited at its default action where that ends the process.
pub fn install_handlers() {
    for sig in 1..NSIG as i32 {
        if FAULT_SIGNALS.contains(&sig) || (default_ends_process(sig) && action(sig as usize)[0] == SIG_DFL) {
            install_master(sig as usize);
        }
    }
}

/// The master handler for `sig`, without SA_RESTART (a system call the runtime runs for the
/// program must come back with EINTR, so that the program's handler runs), on the thread's
/// signal stack (the program's stack may be exhausted).
fn install_master(sig: usize) {
    // SAFETY: a zeroed sigaction is valid; the handler is our assembly entry, which follows
    // the SA_SIGINFO calling convention; libc supplies the restorer.
    let refused = unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = arch::signal_entry_address();
        sa.sa_flags = libc::SA_SIGINFO | libc::SA_ONSTACK;
        libc::sigaction(sig as i32, &sa, std::ptr::null_mut()) != 0
    };
    if refused && sig != libc::SIGSEGV as usize {
        // glibc keeps signals 32 and 33 for itself: give the kernel the same action as it
        // holds for SIGSEGV (always the master handler, restorer included).
        let mut kernel_action = [0u64; 4];
        // SAFETY: reads SIGSEGV's action into 32 bytes, then sets the same for `sig`.
        unsafe {
            syscall6(libc::SYS_rt_sigaction as u64, [libc::SIGSEGV as u64, 0, kernel_action.as_mut_ptr() as u64, 8, 0, 0]);
            syscall6(libc::SYS_rt_sigaction as u64, [sig as u64, kernel_action.as_ptr() as u64, 0, 8, 0, 0]);
        }
    }
}

/// The program's `rt_sigaction`: it sees and changes its own dispositions; the kernel gets
/// the master handler where the program installs a function.
pub fn app_sigaction(a: [u64; 6]) -> u64 {
    let (sig, act, oldact, size) = (a[0] as usize, a[1], a[2], a[3]);
    let kernel_checks =
        sig == 0 || sig >= NSIG || size != 8 || (act != 0 && (sig == libc::SIGKILL as usize || sig == libc::SIGSTOP as usize));
    if kernel_checks {
        // SAFETY: the kernel rejects these arguments without changing anything.
        return unsafe { syscall6(libc::SYS_rt_sigaction as u64, a) };
    }
    let mut new = [0u64; 4];
    if act != 0 && !appmem::read(act, bytes_of_mut(&mut new)) {
        return (-libc::EFAULT) as i64 as u64;
    }
    let old = action(sig);
    let fault_signal = FAULT_SIGNALS.contains(&(sig as i32));
    if act != 0 && !owns_memory() {
        // A child on this memory (vfork: glibc's posix_spawn child resets handled signals to
        // SIG_DFL; a child beside its parent, as LeakSanitizer's tracer): the
        // kernel gave it a table of its own, but this one is its parent's memory. Only the
        // kernel's changes; a handler function keeps the master handler it inherited.
        if (new[0] == SIG_DFL || new[0] == SIG_IGN) && !fault_signal {
            // SAFETY: default or ignore in the child's own table, as the program asked.
            unsafe { syscall6(libc::SYS_rt_sigaction as u64, [sig as u64, act, 0, 8, 0, 0]) };
        }
    } else if act != 0 {
        set_action(sig, new);
        let caught_at_default = new[0] == SIG_DFL && default_ends_process(sig as i32);
        let plain = new[0] == SIG_DFL || new[0] == SIG_IGN;
        if plain && !fault_signal && !caught_at_default {
            // SAFETY: default or ignore, exactly as the program asked.
            unsafe { syscall6(libc::SYS_rt_sigaction as u64, [sig as u64, act, 0, 8, 0, 0]) };
        }
        if !plain || caught_at_default {
            install_master(sig);
        }
    }
    if oldact != 0 && !appmem::write(oldact, bytes_of(&old)) {
        return (-libc::EFAULT) as i64 as u64;
    }
    0
}

/// The program's `sigaltstack(ss, old)` on the thread of `ctx`, answered as the kernel would
/// from the thread's emulated alternate stack.
pub fn app_sigaltstack(ctx: &ThreadCtx, ss: u64, old: u64) -> u64 {
    let sp = ctx.regs.gpr[reg::RSP];
    let cell = &ctx.signals().alt_stack;
    let mut alt = cell.get();
    let before = alt.as_stack_t(alt.state(sp) | (alt.flags & SS_AUTODISARM));
    if ss != 0 {
        // SAFETY: an all-zero stack_t is valid plain data.
        let mut new: libc::stack_t = unsafe { std::mem::zeroed() };
        if !appmem::read(ss, bytes_of_mut(&mut new)) {
            return (-libc::EFAULT) as i64 as u64;
        }
        if let Err(errno) = alt.set(&new, sp) {
            return (-errno) as i64 as u64;
        }
        cell.set(alt);
    }
    if old != 0 && !appmem::write(old, bytes_of(&before)) {
        return (-libc::EFAULT) as i64 as u64;
    }
    0
}

fn bytes_of<T>(v: &T) -> &[u8] {
    // SAFETY: plain-data values (integer arrays, libc structs) viewed as their bytes.
    unsafe { std::slice::from_raw_parts(v as *const T as *const u8, std::mem::size_of::<T>()) }
}

fn bytes_of_mut<T>(v: &mut T) -> &mut [u8] {
    // SAFETY: plain-data values for which every bit pattern is valid.
    unsafe { std::slice::from_raw_parts_mut(v as *mut T as *mut u8, std::mem::size_of::<T>()) }
}

pub(crate) fn signal_name(sig: i32) -> String {
    match sig {
        libc::SIGSEGV => "SIGSEGV".into(),
        libc::SIGBUS => "SIGBUS".into(),
        libc::SIGILL => "SIGILL".into(),
        libc::SIGFPE => "SIGFPE".into(),
        libc::SIGTRAP => "SIGTRAP".into(),
        _ => format!("signal {sig}"),
    }
}

/// The instruction at application address `pc`, disassembled.
pub(crate) fn instruction_at(pc: u64) -> String {
    let mut bytes = [0u8; 15];
    let n = (1..=15).rev().find(|&n| appmem::read(pc, &mut bytes[..n])).unwrap_or(0);
    if n == 0 {
        return "(unreadable)".into();
    }
    let mut d = iced_x86::Decoder::with_ip(64, &bytes[..n], pc, iced_x86::DecoderOptions::NONE);
    rewire_x86::decode::format_instruction(&d.decode())
}

/// True when the program's SIGSEGV is at its default action, its tracer (if any) the only
/// one to see the fault: a jump to memory that is not executable can then be made for real,
/// from the program's own registers (see `engine::dispatch`).
pub fn fault_ends_the_program() -> bool {
    action(libc::SIGSEGV as usize)[0] == SIG_DFL
}

/// The program jumped to `target`, which is not executable: natively a SIGSEGV there.
pub fn bad_jump(target: u64, sp: u64) -> ! {
    report_death(&format!(
        "the program was killed by SIGSEGV: it jumped to {target:#x} ({}), which is not executable memory (stack pointer {sp:#x})",
        modules::describe(target)
    ));
    die(libc::SIGSEGV)
}

/// `mcontext` general-register slots and the engine's register numbers.
const GREGS: [(i32, usize); 16] = [
    (libc::REG_R8, 8),
    (libc::REG_R9, 9),
    (libc::REG_R10, 10),
    (libc::REG_R11, 11),
    (libc::REG_R12, 12),
    (libc::REG_R13, 13),
    (libc::REG_R14, 14),
    (libc::REG_R15, 15),
    (libc::REG_RDI, 7),
    (libc::REG_RSI, 6),
    (libc::REG_RBP, 5),
    (libc::REG_RBX, 3),
    (libc::REG_RDX, 2),
    (libc::REG_RAX, 0),
    (libc::REG_RCX, 1),
    (libc::REG_RSP, 4),
];

/// The kernel's x86-64 `rt_sigframe`: return address (the restorer), ucontext, siginfo.
#[repr(C)]
struct Frame {
    pretcode: u64,
    uc: libc::ucontext_t,
    info: [u8; 128],
}

/// Delivers a pending signal (if any is unblocked) before the thread goes on at `tag`:
/// builds the frame and returns the handler's address, with the thread's registers set for
/// it. Returns `tag` when nothing is delivered.
pub fn deliver_pending(ctx: &mut ThreadCtx, tag: u64) -> u64 {
    ctx.signal_kick = 0;
    let sigs = ctx.signals();
    // Only the exit that just happened can be an interrupted system call.
    let interrupted = sigs.interrupted.take();
    // A call that did not start is made after the handler, or now.
    let tag = sigs.unstarted.take().unwrap_or(tag);
    let pending = sigs.pending.load(Ordering::SeqCst);
    if pending == 0 {
        return tag;
    }
    let blocked = sigprocmask(libc::SIG_BLOCK, None);
    // After a call with a temporary mask, the handler runs under that mask; the frame keeps
    // the mask the call restored.
    let selecting = sigs.call_mask.take().unwrap_or(blocked);
    let ready = pending & !selecting;
    // Fault signals first: they belong to the instruction at `tag`.
    let Some(sig) =
        FAULT_SIGNALS.iter().copied().find(|&s| ready & mask_of(s) != 0).or_else(|| (1..NSIG as i32).find(|&s| ready & mask_of(s) != 0))
    else {
        return tag;
    };
    sigs.pending.fetch_and(!mask_of(sig), Ordering::SeqCst);
    // SAFETY: written by this thread's master handler (see `record`).
    let info = unsafe { *sigs.info[sig as usize].get() };
    let act = action(sig as usize);
    if act[0] == SIG_IGN || (act[0] == SIG_DFL && DEFAULT_IGNORED.contains(&sig)) {
        return deliver_pending(ctx, tag);
    }
    if act[0] == SIG_DFL {
        die(sig);
    }
    let mut pc = tag;
    if let Some((nr, at)) = interrupted {
        if at + 2 == tag && has_flag(act[1], libc::SA_RESTART) && restartable(nr) {
            pc = at;
            ctx.regs.gpr[reg::RAX] = nr;
        }
    }
    let frame = match build_frame(ctx, sig, &info, &act, pc, blocked) {
        Some(f) => f,
        None => {
            report_death(&format!("the program was killed by SIGSEGV: no room on its stack for the frame of {}", signal_name(sig)));
            die(libc::SIGSEGV)
        }
    };
    let mut mask = selecting | act[3];
    if !has_flag(act[1], libc::SA_NODEFER) {
        mask |= mask_of(sig);
    }
    sigprocmask(libc::SIG_SETMASK, Some(mask));
    if has_flag(act[1], libc::SA_RESETHAND) {
        set_action(sig as usize, [SIG_DFL, 0, 0, 0]);
        if !FAULT_SIGNALS.contains(&sig) && !default_ends_process(sig) {
            kernel_default(sig as usize);
        }
    }
    let r = &mut ctx.regs;
    r.gpr[reg::RDI] = sig as u64;
    r.gpr[reg::RSI] = frame + std::mem::offset_of!(Frame, info) as u64;
    r.gpr[reg::RDX] = frame + std::mem::offset_of!(Frame, uc) as u64;
    r.gpr[reg::RAX] = 0;
    r.gpr[reg::RSP] = frame;
    r.rflags &= !0x0400; // DF clear, as the ABI promises a handler
    act[0]
}

/// Calls the kernel restarts after a handler with SA_RESTART (the rest return EINTR).
fn restartable(nr: u64) -> bool {
    !matches!(
        nr as i64,
        libc::SYS_poll
            | libc::SYS_ppoll
            | libc::SYS_select
            | libc::SYS_pselect6
            | libc::SYS_epoll_wait
            | libc::SYS_epoll_pwait
            | libc::SYS_nanosleep
            | libc::SYS_clock_nanosleep
            | libc::SYS_rt_sigsuspend
            | libc::SYS_rt_sigtimedwait
            | libc::SYS_pause
            | libc::SYS_msgrcv
            | libc::SYS_msgsnd
            | libc::SYS_semop
            | libc::SYS_semtimedop
    )
}

fn build_frame(ctx: &mut ThreadCtx, sig: i32, info: &[u8; 128], act: &[u64; 4], pc: u64, blocked: u64) -> Option<u64> {
    let rsp = ctx.regs.gpr[reg::RSP];
    let cell = &ctx.signals().alt_stack;
    let mut alt = cell.get();
    let top = if has_flag(act[1], libc::SA_ONSTACK) && alt.state(rsp) == 0 { alt.sp + alt.size } else { rsp - 128 };
    // The frame keeps the stack as the thread had it; SS_AUTODISARM disables it meanwhile.
    let ss = alt.as_stack_t(alt.flags);
    if alt.flags & SS_AUTODISARM != 0 {
        alt = AltStack::DISABLED;
        cell.set(alt);
    }
    let xsave_len = arch::signal_xsave_size().min(XSAVE_MAX) as u64;
    let fp = (top - xsave_len) & !63;
    if !appmem::write_stack(fp, &ctx.simd_image()[..xsave_len as usize]) {
        return None;
    }
    let frame = ((fp - std::mem::size_of::<Frame>() as u64) & !15) - 8;
    // SAFETY: an all-zero Frame is valid plain data.
    let mut f: Frame = unsafe { std::mem::zeroed() };
    f.pretcode = act[2];
    f.info = *info;
    f.uc.uc_stack = ss;
    let g = &mut f.uc.uc_mcontext.gregs;
    let regs = &ctx.regs;
    use libc::{REG_CR2, REG_CSGSFS, REG_EFL, REG_RIP};
    for (slot, n) in GREGS {
        g[slot as usize] = regs.gpr[n] as i64;
    }
    g[REG_RIP as usize] = pc as i64;
    g[REG_EFL as usize] = regs.rflags as i64;
    g[REG_CSGSFS as usize] = 0x33 | (0x2b << 48);
    if FAULT_SIGNALS.contains(&sig) {
        let si_addr = u64::from_le_bytes(info[16..24].try_into().expect("8 bytes"));
        g[REG_CR2 as usize] = si_addr as i64;
    }
    f.uc.uc_mcontext.fpregs = fp as *mut _;
    // The kernel's sigset is 8 bytes at the start of glibc's larger one.
    // SAFETY: sigset_t is plain data of at least 8 bytes.
    unsafe { std::ptr::write(&raw mut f.uc.uc_sigmask as *mut u64, blocked) };
    appmem::write_stack(frame, bytes_of(&f)).then_some(frame)
}

/// The program's `rt_sigreturn`: restores the state saved in the frame at its stack pointer
/// and returns the address to continue at.
pub fn sigreturn(ctx: &mut ThreadCtx) -> Option<u64> {
    let frame = ctx.regs.gpr[reg::RSP] - 8;
    // SAFETY: an all-zero Frame is valid plain data.
    let mut f: Frame = unsafe { std::mem::zeroed() };
    if !appmem::read(frame, bytes_of_mut(&mut f)) {
        return None;
    }
    let g = &f.uc.uc_mcontext.gregs;
    use libc::{REG_EFL, REG_RIP};
    for (slot, n) in GREGS {
        ctx.regs.gpr[n] = g[slot as usize] as u64;
    }
    ctx.regs.rflags = (ctx.regs.rflags & !USER_FLAGS) | (g[REG_EFL as usize] as u64 & USER_FLAGS);
    let fp = f.uc.uc_mcontext.fpregs as u64;
    if fp != 0 {
        let len = arch::signal_xsave_size().min(XSAVE_MAX);
        let mut state = vec![0u8; len];
        if appmem::read(fp, &mut state) {
            arch::sanitize_xsave(&mut state);
            ctx.set_simd_image(&state);
        }
    }
    // SAFETY: sigset_t is plain data of at least 8 bytes.
    let mask = unsafe { std::ptr::read(&raw const f.uc.uc_sigmask as *const u64) };
    sigprocmask(libc::SIG_SETMASK, Some(mask & !(mask_of(libc::SIGKILL) | mask_of(libc::SIGSTOP))));
    // The alternate stack comes back from the frame too (the kernel's `restore_altstack`,
    // whose errors are ignored), checked against the restored stack pointer.
    let mut alt = ctx.signals().alt_stack.get();
    if alt.set(&f.uc.uc_stack, ctx.regs.gpr[reg::RSP]).is_ok() {
        ctx.signals().alt_stack.set(alt);
    }
    Some(g[REG_RIP as usize] as u64)
}
