//! The initial stack of a program, laid out as the kernel's `create_elf_tables` does:
//! `argc`, `argv`, `envp`, the auxiliary vector, then the strings they point to, with the
//! file name the program was executed by at the very top.

use crate::os::loader::{random_bytes, Loaded};
use std::ffi::CString;

/// Size of an ELF64 program header.
const PHENT_SIZE: u64 = 56;

/// Where the pieces of a built stack are.
#[derive(Debug, Clone, Copy)]
pub struct InitialStack {
    /// The stack pointer at the first instruction (points at `argc`).
    pub sp: u64,
    /// The argument strings (for /proc/self/cmdline).
    pub args: (u64, u64),
    /// The environment strings (for /proc/self/environ).
    pub env: (u64, u64),
}

/// The auxiliary vector this process got from the kernel, as (type, value) pairs.
fn own_auxv() -> Vec<(u64, u64)> {
    let raw = std::fs::read("/proc/self/auxv").unwrap_or_default();
    raw.chunks_exact(16)
        .map(|c| (u64::from_le_bytes(c[..8].try_into().expect("8 bytes")), u64::from_le_bytes(c[8..].try_into().expect("8 bytes"))))
        .take_while(|&(t, _)| t != libc::AT_NULL)
        .collect()
}

/// Builds the stack of `loaded` with environment `envp` just below `top` and writes it there.
///
/// # Safety
/// `[top - size of the stack image, top)` must be memory of the program's stack that nothing
/// else uses.
pub unsafe fn build(top: u64, loaded: &Loaded, envp: &[CString]) -> InitialStack {
    // Strings, ascending from `strings_lo`: argv, envp, the platform name, then AT_EXECFN and
    // an 8-byte zero end marker at the top; AT_RANDOM's 16 bytes just below them all.
    let mut strings: Vec<u8> = Vec::new();
    let put = |strings: &mut Vec<u8>, s: &[u8]| {
        let at = strings.len();
        strings.extend_from_slice(s);
        strings.push(0);
        at
    };
    let arg_offs: Vec<usize> = loaded.argv.iter().map(|a| put(&mut strings, a.as_bytes())).collect();
    let args_end = strings.len();
    let env_offs: Vec<usize> = envp.iter().map(|e| put(&mut strings, e.as_bytes())).collect();
    let env_end = strings.len();
    let platform_off = put(&mut strings, b"x86_64");
    let execfn_off = put(&mut strings, loaded.execfn.as_bytes());
    strings.extend_from_slice(&[0; 8]);
    let strings_lo = top - strings.len() as u64;
    let random_at = (strings_lo - 16) & !15;
    let mut random = [0u8; 16];
    random_bytes(&mut random);

    let at = |off: usize| strings_lo + off as u64;
    let mut auxv = own_auxv();
    let mut set = |t: u64, v: u64| match auxv.iter_mut().find(|(k, _)| *k == t) {
        Some(entry) => entry.1 = v,
        None => auxv.push((t, v)),
    };
    set(libc::AT_PHDR, loaded.program.phdr);
    set(libc::AT_PHENT, PHENT_SIZE);
    set(libc::AT_PHNUM, loaded.program.phnum);
    set(libc::AT_BASE, loaded.interp.as_ref().map_or(0, |i| i.bias));
    set(libc::AT_FLAGS, 0);
    set(libc::AT_ENTRY, loaded.program.entry);
    set(libc::AT_PLATFORM, at(platform_off));
    set(libc::AT_RANDOM, random_at);
    set(libc::AT_EXECFN, at(execfn_off));

    let mut table: Vec<u64> = vec![loaded.argv.len() as u64];
    table.extend(arg_offs.iter().map(|&o| at(o)));
    table.push(0);
    table.extend(env_offs.iter().map(|&o| at(o)));
    table.push(0);
    for (t, v) in &auxv {
        table.extend([*t, *v]);
    }
    table.extend([libc::AT_NULL, 0]);
    let sp = (random_at - table.len() as u64 * 8) & !15;

    // SAFETY: per the contract, [sp, top) is ours to write; the three pieces do not overlap
    // (sp + table ≤ random_at, random_at + 16 ≤ strings_lo).
    unsafe {
        std::ptr::copy_nonoverlapping(strings.as_ptr(), strings_lo as *mut u8, strings.len());
        std::ptr::copy_nonoverlapping(random.as_ptr(), random_at as *mut u8, 16);
        std::ptr::copy_nonoverlapping(table.as_ptr(), sp as *mut u64, table.len());
    }
    InitialStack { sp, args: (strings_lo, at(args_end)), env: (at(args_end), at(env_end)) }
}
