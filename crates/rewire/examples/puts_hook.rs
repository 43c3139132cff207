//! An example hook library in Rust for `rewire launch` and `rewire inject`: every `puts` of the
//! program first prints a marker line, then does what it always did.
//!
//! ```sh
//! cargo build --release -p rewire --example puts_hook
//! rewire launch --inject target/release/examples/libputs_hook.so --hook puts=my_puts -- PROGRAM
//! ```

use std::ffi::{c_char, c_int};

/// The original `puts`, stored here by rewire before the hook is enabled.
#[no_mangle]
#[allow(non_upper_case_globals)]
pub static mut rewire_orig_my_puts: Option<unsafe extern "C" fn(*const c_char) -> c_int> = None;

/// The detour: prints a marker with the original, then the program's line.
///
/// # Safety
/// Called by the program in place of `puts`, with `puts`'s contract.
#[no_mangle]
pub unsafe extern "C" fn my_puts(s: *const c_char) -> c_int {
    // SAFETY: written by rewire before any call can arrive here, never changed afterwards.
    let original = unsafe { rewire_orig_my_puts }.expect("rewire stores the original before enabling the hook");
    // SAFETY: both strings are NUL-terminated.
    unsafe {
        original(c"[rust hook]".as_ptr());
        original(s)
    }
}
