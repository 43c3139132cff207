//! Static hookability analysis of a library file, as `rewire hook check` reports it: for each
//! exported function, the same planning and relocation a hook would do (for a trampoline
//! placed near the function), and the proof by decoding that the relocation is equivalent.

use crate::elf::{ElfModule, Export};
use crate::plan::plan;
use crate::HookError;
use rewire_x86::emit::{INDIRECT_STUB_LEN, JMP_REL32_LEN};

/// Distance below a function at which the check places its hypothetical trampoline (where
/// the near-space search usually finds room, below the module).
const TRAMPOLINE_DISTANCE: u64 = 64 << 20;

/// The verdict on one function.
#[derive(Debug, Clone)]
pub struct Verdict {
    /// The exported function.
    pub export: Export,
    /// Bytes the hook would relocate, or why it cannot be hooked.
    pub outcome: Result<usize, HookError>,
}

/// Checks `names` (all exported functions when empty) of `module`; unknown names give
/// [`HookError::SymbolNotFound`] verdicts.
pub fn check_module(module: &ElfModule, names: &[String]) -> Vec<Verdict> {
    let exports: Vec<Export> = if names.is_empty() {
        module.exports().to_vec()
    } else {
        names.iter().map(|n| module.export(n).cloned().unwrap_or(Export { name: n.clone(), addr: 0, size: 0, ifunc: false })).collect()
    };
    exports
        .into_iter()
        .map(|export| {
            let outcome = if export.addr == 0 {
                Err(HookError::SymbolNotFound {
                    module: module.path.clone(),
                    symbol: export.name.clone(),
                    similar: module.similar_names(&export.name),
                })
            } else {
                check_function(module, &export)
            };
            Verdict { export, outcome }
        })
        .collect()
}

/// Plans, relocates and verifies a hook of one function of `module` (image addresses).
pub fn check_function(module: &ElfModule, export: &Export) -> Result<usize, HookError> {
    let target = export.addr;
    let extent = module.function_containing(target);
    let start = extent.as_ref().map_or(target, |r| r.start);
    let end = extent.as_ref().map_or(target + 4096, |r| r.end.max(target + 32));
    let code = module.bytes(start..end).ok_or(HookError::Unmapped(target))?;
    let p = plan(code, start, target, extent.map(|r| r.end), JMP_REL32_LEN)?;
    let new_ip = target.saturating_sub(TRAMPOLINE_DISTANCE) + INDIRECT_STUB_LEN as u64;
    let window_end = target + p.window_len() as u64;
    let relocated = rewire_x86::relocate(&p.insns, &p.bytes, new_ip, Some(window_end)).map_err(|e| HookError::from_x86(target, e))?;
    rewire_x86::verify::check_equivalent(&p.insns, &p.bytes, &relocated, new_ip)
        .map_err(|why| HookError::unhookable(target, p.insns.first(), target, crate::Refusal::Unverified(why)))
        .map(|()| p.window_len())
}
