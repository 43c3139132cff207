//! Every exported function of the machine's libc.so.6 and libm.so.6: install a live hook
//! (with a pass-through detour), prove the relocated instructions equivalent by decoding,
//! remove it and check the original bytes are back. At least 99.7% must hook; every refusal
//! must carry a precise reason.

use rewire_hook::elf::ElfModule;
use rewire_hook::{HookError, Interceptor, Sharing};
use rewire_mem::TrampolineSpace;
use rewire_x86::emit::{indirect_jmp_stub, INDIRECT_STUB_PTR};
use std::collections::BTreeMap;

fn read(addr: u64, len: usize) -> Vec<u8> {
    // SAFETY: reading code of a loaded library.
    unsafe { std::slice::from_raw_parts(addr as *const u8, len).to_vec() }
}

fn check_library(soname: &str) -> (usize, usize) {
    let name = std::ffi::CString::new(soname).unwrap();
    // SAFETY: loading a system library (already loaded for libc).
    assert!(!unsafe { libc::dlopen(name.as_ptr(), libc::RTLD_NOW) }.is_null());
    let interceptor = Interceptor::with_sharing(Sharing::Unique);
    let module = interceptor.process().modules().module(&**interceptor.process().memory(), soname).unwrap();
    let file = ElfModule::open(&module.path).unwrap();
    let base = interceptor.process().modules().load_base(&**interceptor.process().memory(), &module.path).unwrap();
    // Pass-through detours: a stub jumping to the hook's trampoline.
    let detours = TrampolineSpace::new(interceptor.process().memory().clone());

    let mut by_addr: BTreeMap<u64, Vec<String>> = BTreeMap::new();
    for e in file.exports() {
        by_addr.entry(base + e.addr).or_default().push(e.name.clone());
    }
    let (mut ok, mut total) = (0, 0);
    let mut refusals = Vec::new();
    for (addr, names) in &by_addr {
        total += names.len();
        let before = read(*addr, 32);
        let detour = detours.alloc(*addr, 16).unwrap();
        detour.write(0, &indirect_jmp_stub(*addr));
        let mut tx = interceptor.transaction();
        // SAFETY: the detour jumps straight to the trampoline: behaviour is unchanged.
        unsafe { tx.hook_disabled(*addr, detour.addr) };
        match tx.commit() {
            Ok(mut hooks) => {
                let hook = hooks.pop().unwrap();
                detour.store_u64(INDIRECT_STUB_PTR, hook.trampoline());
                hook.enable().unwrap();
                let site = interceptor.site(*addr).unwrap();
                let insns = rewire_x86::decode_window(&site.window_bytes, site.window.start, site.window_bytes.len()).unwrap();
                if let Err(why) = rewire_x86::verify::check_equivalent(&insns, &site.window_bytes, &site.relocated, site.relocated_at) {
                    panic!("{names:?}: {why}");
                }
                assert_eq!(site.patch_len, 5, "{names:?}: near trampoline expected");
                hook.remove().unwrap();
                assert_eq!(read(*addr, 32), before, "{names:?}: bytes restored");
                ok += names.len();
            }
            Err(e @ HookError::Unhookable { .. }) => {
                assert_eq!(read(*addr, 32), before, "{names:?}: a refusal changes nothing");
                refusals.push(format!("{names:?}: {e}"));
            }
            Err(e) => panic!("{names:?}: not a precise refusal: {e}"),
        }
        detours.free(detour);
    }
    eprintln!("{soname}: hooked {ok} of {total} exported functions; refused:");
    for r in &refusals {
        eprintln!("  {r}");
    }
    (ok, total)
}

#[test]
fn libc_and_libm_exports_hook_and_unhook() {
    let (ok_c, total_c) = check_library("libc.so.6");
    let (ok_m, total_m) = check_library("libm.so.6");
    let (ok, total) = (ok_c + ok_m, total_c + total_m);
    eprintln!("overall: {ok} of {total} ({:.2}%)", 100.0 * ok as f64 / total as f64);
    assert!(total > 2000);
    assert!(ok as f64 >= 0.997 * total as f64, "only {ok} of {total} hooked");
}
