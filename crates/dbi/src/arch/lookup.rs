//! The indirect-branch lookup template that translated blocks copy.

use crate::arch::context::off;
use std::arch::global_asm;

// The indirect-branch lookup, copied into every block that ends in an indirect branch.
// On entry rax holds the application target and `scratch_rax` the application's rax. The
// thread's table holds `{-tag, cache address}` pairs (one cache line for both halves); the
// home slot is the low 16 bits of the target, collisions probe the following slots up to an
// empty one. Nothing touches the arithmetic flags: comparisons are `lea` + `jrcxz`, and rcx
// counts in qwords (2 per slot) so `[rcx*8]` addresses a slot. A hit in the home slot, the
// common case, keeps the index in no memory: it is computed again from the target, which
// saves a store and its reload on the way to the final jump. A hit restores rax and jumps
// through the table to the fragment's lookup entry, whose first instruction restores rcx.
// A miss falls off the end with the target in `ibl_target`, rax in `scratch_rax` and rcx
// restored; the block appends its own exit there. Only relative jumps inside the template:
// it works at any address.
global_asm!(
    ".globl rewire_ibl_template",
    ".globl rewire_ibl_template_end",
    ".globl rewire_ibl_template_rcx_saved",
    "rewire_ibl_template:",
    "mov gs:[{s_rcx}], rcx",
    "rewire_ibl_template_rcx_saved:",
    "movzx ecx, ax",
    "lea rcx, [rcx + rcx]",
    "mov rcx, gs:[rcx * 8 + {tags}]",
    "lea rcx, [rcx + rax]",
    "jrcxz 3f",
    // Not in its home slot: probe the slots after it.
    "movzx ecx, ax",
    "lea rcx, [rcx + rcx]",
    "mov gs:[{idx}], rcx",
    "2:",
    "mov rcx, gs:[{idx}]",
    "lea rcx, [rcx + 2]",
    "mov gs:[{idx}], rcx",
    "mov rcx, gs:[rcx * 8 + {tags}]",
    "jrcxz 4f",
    "lea rcx, [rcx + rax]",
    "jrcxz 5f",
    "jmp 2b",
    // A hit in the home slot: its index again from the target (no store and reload).
    "3:",
    "movzx ecx, ax",
    "lea rcx, [rcx + rcx]",
    "mov rax, gs:[{s_rax}]",
    "jmp qword ptr gs:[rcx * 8 + {targets}]",
    "5:",
    "mov rcx, gs:[{idx}]",
    "mov rax, gs:[{s_rax}]",
    "jmp qword ptr gs:[rcx * 8 + {targets}]",
    "4:",
    "mov gs:[{target}], rax",
    "mov rcx, gs:[{s_rcx}]",
    "rewire_ibl_template_end:",
    s_rcx = const off::S_RCX,
    s_rax = const off::S_RAX,
    idx = const off::IBL_INDEX,
    tags = const off::IBL_TABLE,
    targets = const off::IBL_TABLE + 8,
    target = const off::IBL_TARGET,
);

extern "C" {
    static rewire_ibl_template: u8;
    static rewire_ibl_template_end: u8;
    static rewire_ibl_template_rcx_saved: u8;
}

/// The bytes of the indirect-branch lookup template.
pub fn ibl_template() -> &'static [u8] {
    template_from(&raw const rewire_ibl_template)
}

/// The template without its first instruction, which saves rcx in `scratch_rcx`: for code
/// that saved it there already (a trace's inlined check whose target did not match).
pub fn ibl_template_rcx_saved() -> &'static [u8] {
    template_from(&raw const rewire_ibl_template_rcx_saved)
}

fn template_from(start: *const u8) -> &'static [u8] {
    // SAFETY: `start` is one of the template's labels and the end label follows them all in
    // this crate's text; the bytes between are the assembled template, immutable for the
    // process lifetime.
    unsafe {
        let end = &raw const rewire_ibl_template_end;
        std::slice::from_raw_parts(start, end as usize - start as usize)
    }
}
