//! Signal calls the runtime owns: `rt_sigaction` (the program sees and changes its own
//! dispositions), `sigaltstack` (the program's alternate stack is emulated: the kernel's is
//! the runtime's) and `rt_sigreturn` (the state of the program's signal frame comes back).

use super::{Call, Outcome};
use crate::os::process_end::die;
use crate::os::report::report_death;
use crate::os::signals::{app_sigaction, app_sigaltstack, sigreturn};

/// The calls.
pub(super) const CALLS: &[i64] = &[libc::SYS_rt_sigaction, libc::SYS_sigaltstack, libc::SYS_rt_sigreturn];

pub(super) fn handle(call: &mut Call<'_>) -> Outcome {
    if call.nr as i64 == libc::SYS_rt_sigaction {
        return Outcome::Returns(app_sigaction(call.args));
    }
    if call.nr as i64 == libc::SYS_sigaltstack {
        return Outcome::Returns(app_sigaltstack(call.ctx, call.args[0], call.args[1]));
    }
    match sigreturn(call.ctx) {
        Some(pc) => Outcome::ContinuesAt(pc),
        None => {
            report_death("the program was killed by SIGSEGV: rt_sigreturn with no signal frame on its stack");
            die(libc::SIGSEGV)
        }
    }
}
