//! Memory calls: `mmap`, `mprotect`, `munmap`, `mremap`, `shmat` and `shmdt` run as the
//! program asked, and the engine follows what they change (the program's mappings,
//! executable regions, watched code pages, fragments of code that went away); `brk` moves
//! the emulated break.

use super::{raw, Call, Outcome};
use crate::engine::state::{engine, Engine};

const PAGE: u64 = 4096;
/// `shmat`'s flag for an executable attachment (not in the libc crate for glibc).
const SHM_EXEC: u64 = 0o100000;

/// The mapping calls.
pub(super) const CALLS: &[i64] =
    &[libc::SYS_mmap, libc::SYS_mprotect, libc::SYS_pkey_mprotect, libc::SYS_munmap, libc::SYS_mremap, libc::SYS_shmat, libc::SYS_shmdt];
/// The break.
pub(super) const BRK_CALLS: &[i64] = &[libc::SYS_brk];

/// Mapping calls: run them, then keep the executable ranges and the fragments in step.
pub(super) fn handle(call: &mut Call<'_>) -> Outcome {
    Outcome::Returns(map_call(call.nr, call.args))
}

/// The program's `brk`, on the emulated break.
pub(super) fn brk(call: &mut Call<'_>) -> Outcome {
    let mut eng = engine();
    let ret = eng.brk.set(call.args[0]);
    let heap = eng.brk.heap();
    eng.maps.refresh(heap);
    Outcome::Returns(ret)
}

fn map_call(nr: u64, mut a: [u64; 6]) -> u64 {
    let mut eng = engine();
    let prot_arg = matches!(nr as i64, libc::SYS_mmap | libc::SYS_mprotect | libc::SYS_pkey_mprotect).then_some(2);
    let wants_exec = prot_arg.is_some_and(|i| a[i] & libc::PROT_EXEC as u64 != 0);
    if eng.opts.strip_exec && wants_exec {
        a[2] &= !(libc::PROT_EXEC as u64);
    }
    let was_exec = nr as i64 == libc::SYS_mremap && eng.exec.end_of(a[0]).is_some();
    let ret = raw(nr, a);
    if (ret as i64) < 0 && (ret as i64) > -4096 {
        return ret;
    }
    let len = |n: u64| n.next_multiple_of(PAGE);
    match nr as i64 {
        libc::SYS_mmap => {
            let range = ret..ret + len(a[1]);
            eng.maps.mapped(range.clone());
            if a[3] & libc::MAP_FIXED as u64 != 0 {
                eng.invalidate(range.clone());
            }
            eng.code_writes.mapped(range.clone(), a[2]);
            if wants_exec {
                eng.exec.add(range);
            } else {
                eng.exec.remove(range);
            }
        }
        libc::SYS_mprotect | libc::SYS_pkey_mprotect => {
            let range = a[0]..a[0] + len(a[1]);
            eng.code_writes.mapped(range.clone(), a[2]);
            if wants_exec {
                eng.exec.add(range);
            } else {
                eng.exec.remove(range.clone());
                eng.invalidate(range);
            }
        }
        libc::SYS_shmat => {
            // SAFETY: an all-zero shmid_ds is valid plain data; IPC_STAT only fills it.
            let mut ds: libc::shmid_ds = unsafe { std::mem::zeroed() };
            // SAFETY: reads the attached segment's description into `ds`.
            let size = if unsafe { libc::shmctl(a[0] as i32, libc::IPC_STAT, &mut ds) } == 0 { len(ds.shm_segsz as u64) } else { PAGE };
            eng.maps.attached(ret, size);
            if a[2] & SHM_EXEC != 0 {
                eng.exec.add(ret..ret + size);
            }
        }
        libc::SYS_shmdt => {
            if let Some(range) = eng.maps.detached(a[0]) {
                code_gone(&mut eng, range);
            }
        }
        libc::SYS_munmap => {
            let range = a[0]..a[0] + len(a[1]);
            eng.maps.unmapped(range.clone());
            code_gone(&mut eng, range);
        }
        _ => {
            let old = a[0]..a[0] + len(a[1]);
            if a[3] & libc::MREMAP_DONTUNMAP as u64 == 0 {
                eng.maps.unmapped(old.clone());
            }
            eng.maps.mapped(ret..ret + len(a[2]));
            code_gone(&mut eng, old);
            if was_exec {
                eng.exec.add(ret..ret + len(a[2]));
            }
        }
    }
    let heap = eng.brk.heap();
    eng.maps.refresh(heap);
    ret
}

/// `range` holds no code of the program any more: its watched pages, executable ranges and
/// the fragments built from it go.
fn code_gone(eng: &mut Engine, range: std::ops::Range<u64>) {
    eng.code_writes.unmapped(range.clone());
    eng.exec.remove(range.clone());
    eng.invalidate(range);
}
