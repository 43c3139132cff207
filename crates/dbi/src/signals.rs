//! Signals, as far as the engine core goes: the program's dispositions are kept (it sees its
//! own handlers), faults in cache code are reported at the application address and end the
//! process with the status the program would have had. Running the program's own handlers
//! arrives with the process-model work; until then such a delivery stops with a message.

use crate::arch::{self, syscall6};
use crate::dispatch::{engine, try_engine};
use crate::{appmem, finish, modules, report};

const SIG_DFL: u64 = 0;
const SIG_IGN: u64 = 1;
const NSIG: usize = 65;
const SI_KERNEL_FAULTS: [i32; 5] = [libc::SIGSEGV, libc::SIGBUS, libc::SIGILL, libc::SIGFPE, libc::SIGTRAP];

/// The kernel's `struct sigaction` for `rt_sigaction`: handler, flags, restorer, mask.
type KernelSigaction = [u64; 4];

/// The program's signal dispositions, as it set them.
#[derive(Debug)]
pub struct AppSignals {
    actions: [KernelSigaction; NSIG],
}

impl AppSignals {
    /// The dispositions the program inherits: those of this process now (default or
    /// ignored, as `execve` leaves them).
    pub fn inherited() -> AppSignals {
        let mut actions = [[0u64; 4]; NSIG];
        for (sig, a) in actions.iter_mut().enumerate().skip(1) {
            // SAFETY: queries only (no new action); the kernel writes 32 bytes into `a`.
            unsafe { syscall6(libc::SYS_rt_sigaction as u64, [sig as u64, 0, a.as_mut_ptr() as u64, 8, 0, 0]) };
        }
        AppSignals { actions }
    }

    fn handler(&self, sig: usize) -> u64 {
        self.actions.get(sig).map_or(SIG_DFL, |a| a[0])
    }
}

/// Installs the runtime's handler for the fault signals, so that faults in the cache are
/// reported at the application's address.
pub fn install_fault_handlers() {
    for sig in SI_KERNEL_FAULTS {
        install_runtime_handler(sig as usize);
    }
}

fn install_runtime_handler(sig: usize) {
    // SAFETY: a zeroed sigaction is valid; the handler is our assembly entry, which follows
    // the SA_SIGINFO calling convention; libc supplies the restorer.
    unsafe {
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = arch::signal_entry_address();
        sa.sa_flags = libc::SA_SIGINFO;
        libc::sigaction(sig as i32, &sa, std::ptr::null_mut());
    }
}

/// The program's `rt_sigaction`: it sees and changes its own dispositions; the kernel gets
/// the runtime's handler where the program installs a function.
pub fn app_sigaction(a: [u64; 6]) -> u64 {
    let (sig, act, oldact, size) = (a[0] as usize, a[1], a[2], a[3]);
    let kernel_checks =
        sig == 0 || sig >= NSIG || size != 8 || (act != 0 && (sig == libc::SIGKILL as usize || sig == libc::SIGSTOP as usize));
    if kernel_checks {
        // SAFETY: the kernel rejects these arguments without changing anything.
        return unsafe { syscall6(libc::SYS_rt_sigaction as u64, a) };
    }
    let mut new: KernelSigaction = [0; 4];
    if act != 0 && !appmem::read(act, bytes_of_mut(&mut new)) {
        return (-libc::EFAULT) as i64 as u64;
    }
    let mut eng = engine();
    let old = eng.signals.actions[sig];
    if act != 0 {
        eng.signals.actions[sig] = new;
        let fault_signal = SI_KERNEL_FAULTS.contains(&(sig as i32));
        if new[0] == SIG_DFL || new[0] == SIG_IGN {
            if !fault_signal {
                // SAFETY: default or ignore, exactly as the program asked.
                unsafe { syscall6(libc::SYS_rt_sigaction as u64, [sig as u64, act, 0, 8, 0, 0]) };
            }
        } else {
            install_runtime_handler(sig);
        }
    }
    if oldact != 0 && !appmem::write(oldact, bytes_of(&old)) {
        return (-libc::EFAULT) as i64 as u64;
    }
    0
}

fn bytes_of(a: &KernelSigaction) -> &[u8] {
    // SAFETY: four u64s are 32 plain bytes.
    unsafe { std::slice::from_raw_parts(a.as_ptr().cast(), 32) }
}

fn bytes_of_mut(a: &mut KernelSigaction) -> &mut [u8] {
    // SAFETY: four u64s are 32 plain bytes; any bit pattern is valid.
    unsafe { std::slice::from_raw_parts_mut(a.as_mut_ptr().cast(), 32) }
}

fn signal_name(sig: i32) -> String {
    // SAFETY: strsignal returns a pointer to a static or thread-local string.
    let p = unsafe { libc::strsignal(sig) };
    let name = match sig {
        libc::SIGSEGV => "SIGSEGV",
        libc::SIGBUS => "SIGBUS",
        libc::SIGILL => "SIGILL",
        libc::SIGFPE => "SIGFPE",
        libc::SIGTRAP => "SIGTRAP",
        _ => "",
    };
    if !name.is_empty() || p.is_null() {
        return if name.is_empty() { format!("signal {sig}") } else { name.to_string() };
    }
    // SAFETY: non-null, NUL-terminated.
    let text = unsafe { std::ffi::CStr::from_ptr(p) }.to_string_lossy().into_owned();
    format!("signal {sig} ({text})")
}

/// The instruction at application address `pc`, disassembled.
fn instruction_at(pc: u64) -> String {
    let mut bytes = [0u8; 15];
    let n = (1..=15).rev().find(|&n| appmem::read(pc, &mut bytes[..n])).unwrap_or(0);
    if n == 0 {
        return "(unreadable)".into();
    }
    let mut d = iced_x86::Decoder::with_ip(64, &bytes[..n], pc, iced_x86::DecoderOptions::NONE);
    rewire_x86::decode::format_instruction(&d.decode())
}

/// Ends the process by `sig`, as the program would have ended, after flushing tool output.
pub fn die(sig: i32) -> ! {
    finish();
    // SAFETY: restores the default action, unblocks and sends the signal to this thread:
    // the process ends with the signal's status (core dump included).
    unsafe {
        let dfl: KernelSigaction = [SIG_DFL, 0, 0, 0];
        syscall6(libc::SYS_rt_sigaction as u64, [sig as u64, dfl.as_ptr() as u64, 0, 8, 0, 0]);
        let set: u64 = 1 << (sig - 1);
        syscall6(libc::SYS_rt_sigprocmask as u64, [libc::SIG_UNBLOCK as u64, &raw const set as u64, 0, 8, 0, 0]);
        syscall6(libc::SYS_tgkill as u64, [libc::getpid() as u64, libc::gettid() as u64, sig as u64, 0, 0, 0]);
        syscall6(libc::SYS_exit_group as u64, [128 + sig as u64, 0, 0, 0, 0, 0]);
    }
    unreachable!("the process survived its own signal")
}

/// The program jumped to `target`, which is not executable: natively a SIGSEGV there.
pub fn bad_jump(target: u64, sp: u64) -> ! {
    report(&format!(
        "the program was killed by SIGSEGV: it jumped to {target:#x} ({}), which is not executable memory (stack pointer {sp:#x})",
        modules::describe(target)
    ));
    die(libc::SIGSEGV)
}

/// The runtime's handler for every signal it catches (entered through the assembly entry,
/// which switched to the runtime's FS base).
pub(crate) extern "C" fn rewire_on_signal(sig: i32, info: *mut libc::siginfo_t, uc: *mut libc::c_void) {
    // SAFETY: the kernel passes a valid siginfo and ucontext for SA_SIGINFO handlers.
    let (code, fault_addr, pc) = unsafe {
        let uc = &*(uc as *const libc::ucontext_t);
        ((*info).si_code, (*info).si_addr() as u64, uc.uc_mcontext.gregs[libc::REG_RIP as usize] as u64)
    };
    let eng = try_engine();
    let app_handler = eng.as_ref().map_or(SIG_DFL, |e| e.signals.handler(sig as usize));
    let is_fault = SI_KERNEL_FAULTS.contains(&sig) && code > 0;
    if is_fault {
        let app_pc = eng.as_ref().and_then(|e| e.frags.translate(pc));
        drop(eng);
        let name = signal_name(sig);
        match app_pc {
            Some(app) => report(&format!(
                "the program was killed by {name} at {app:#x} ({}): {} (fault address {fault_addr:#x})",
                modules::describe(app),
                instruction_at(app)
            )),
            None => report(&format!("internal error: {name} at {pc:#x} ({}), fault address {fault_addr:#x}", modules::describe(pc))),
        }
        if app_handler > SIG_IGN {
            report(&format!("(the program's own {name} handler cannot run yet: signal delivery arrives with the process-model work)"));
        }
        die(sig);
    }
    drop(eng);
    if app_handler > SIG_IGN {
        report(&format!(
            "{} arrived for the program's handler; delivering signals to program handlers arrives with the process-model work",
            signal_name(sig)
        ));
        die(sig);
    }
    if app_handler == SIG_DFL {
        die(sig);
    }
}
