//! `arch_prctl`: the program's FS and GS bases live in its thread context (the runtime
//! keeps its own FS base while it runs); a permission for more XSAVE components (AMX) makes
//! its signal frames larger.

use super::{err, raw, Call, Outcome};
use crate::arch::context::ThreadCtx;
use crate::os::appmem;

/// The thread-state calls.
pub(super) const CALLS: &[i64] = &[libc::SYS_arch_prctl];

pub(super) fn handle(call: &mut Call<'_>) -> Outcome {
    Outcome::Returns(arch_prctl(call.ctx, call.args))
}

fn arch_prctl(ctx: &mut ThreadCtx, a: [u64; 6]) -> u64 {
    const SET_GS: u64 = 0x1001;
    const SET_FS: u64 = 0x1002;
    const GET_FS: u64 = 0x1003;
    const GET_GS: u64 = 0x1004;
    const REQ_XCOMP_PERM: u64 = 0x1023;
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
                err(libc::EFAULT)
            }
        }
        REQ_XCOMP_PERM => {
            let r = raw(libc::SYS_arch_prctl as u64, a);
            crate::arch::xsave_permissions_changed();
            r
        }
        _ => raw(libc::SYS_arch_prctl as u64, a),
    }
}
