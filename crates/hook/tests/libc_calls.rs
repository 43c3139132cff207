//! Real libc and libm functions called through enabled hooks whose detours call the original:
//! every result must be identical to the unhooked call, and every detour must have run.

use libc::{c_char, c_double, c_int, c_long, c_void, size_t};
use rewire_hook::{HookCell, Interceptor};
use std::ffi::CStr;
use std::hint::black_box;
use std::sync::atomic::{AtomicU64, Ordering::SeqCst};

/// Checks one function: resolves it, calls it unhooked and hooked (through the same target
/// address, as any caller does), and compares. `$use` computes a comparable value from `f`.
macro_rules! through_hook {
    ($i:expr, $module:expr, $name:literal, fn($($a:ident: $t:ty),* $(,)?) -> $r:ty, |$f:ident| $use:expr) => {{
        type F = unsafe extern "C" fn($($t),*) -> $r;
        static CELL: HookCell<F> = HookCell::new();
        static CALLS: AtomicU64 = AtomicU64::new(0);
        unsafe extern "C" fn detour($($a: $t),*) -> $r {
            CALLS.fetch_add(1, SeqCst);
            unsafe { CELL.original().expect("published before the detour runs")($($a),*) }
        }
        let target = $i.resolve($module, $name).unwrap();
        let $f: F = black_box(unsafe { std::mem::transmute::<usize, F>(target as usize) });
        let before = $use;
        unsafe { CELL.install(&$i, $f, detour) }.unwrap_or_else(|e| panic!("{}: {e}", $name));
        let calls_before = CALLS.load(SeqCst);
        let $f: F = black_box($f);
        let hooked = $use;
        assert_eq!(before, hooked, "{}: hooked result differs", $name);
        assert!(CALLS.load(SeqCst) > calls_before, "{}: the detour did not run", $name);
        CELL.get().unwrap().hook().disable().unwrap();
        $name
    }};
}

fn s(text: &str) -> std::ffi::CString {
    std::ffi::CString::new(text).unwrap()
}

extern "C" fn cmp_i32(a: *const c_void, b: *const c_void) -> c_int {
    // SAFETY: qsort/bsearch pass pointers to elements of an i32 array.
    let (a, b) = unsafe { (*(a as *const i32), *(b as *const i32)) };
    a.cmp(&b) as c_int
}

#[test]
fn forty_functions_give_identical_results_through_hooks() {
    // SAFETY: loading the system math library.
    assert!(!unsafe { libc::dlopen(s("libm.so.6").as_ptr(), libc::RTLD_NOW) }.is_null());
    let i = Interceptor::new();
    let hello = s("hello, hooked world");
    let other = s("hello, HOOKED world");
    let nums = s("  -12345xyz");
    let float = s("3.14159e2rest");
    let mut done = Vec::new();
    let text = hello.as_ptr();
    let oth = other.as_ptr();

    done.push(through_hook!(i, "libc.so.6", "strlen", fn(p: *const c_char) -> size_t, |f| unsafe { f(text) }));
    done.push(through_hook!(i, "libc.so.6", "strnlen", fn(p: *const c_char, n: size_t) -> size_t, |f| unsafe { f(text, 7) }));
    done.push(through_hook!(i, "libc.so.6", "strcmp", fn(a: *const c_char, b: *const c_char) -> c_int, |f| unsafe {
        f(text, oth).signum()
    }));
    done.push(through_hook!(i, "libc.so.6", "strncmp", fn(a: *const c_char, b: *const c_char, n: size_t) -> c_int, |f| unsafe {
        f(text, oth, 7)
    }));
    done.push(through_hook!(i, "libc.so.6", "strcasecmp", fn(a: *const c_char, b: *const c_char) -> c_int, |f| unsafe { f(text, oth) }));
    done.push(through_hook!(i, "libc.so.6", "strchr", fn(p: *const c_char, c: c_int) -> *const c_char, |f| unsafe {
        f(text, b'w' as c_int) as usize
    }));
    done.push(through_hook!(i, "libc.so.6", "strrchr", fn(p: *const c_char, c: c_int) -> *const c_char, |f| unsafe {
        f(text, b'o' as c_int) as usize
    }));
    done.push(through_hook!(i, "libc.so.6", "strstr", fn(a: *const c_char, b: *const c_char) -> *const c_char, |f| unsafe {
        f(text, s("hooked").as_ptr()) as usize
    }));
    done.push(through_hook!(i, "libc.so.6", "memchr", fn(p: *const c_void, c: c_int, n: size_t) -> *const c_void, |f| unsafe {
        f(text.cast(), b',' as c_int, 19) as usize
    }));
    done.push(through_hook!(i, "libc.so.6", "memcmp", fn(a: *const c_void, b: *const c_void, n: size_t) -> c_int, |f| unsafe {
        f(text.cast(), oth.cast(), 19).signum()
    }));
    done.push(through_hook!(i, "libc.so.6", "memcpy", fn(d: *mut c_void, s: *const c_void, n: size_t) -> *mut c_void, |f| {
        let mut buf = [0u8; 64];
        unsafe { f(buf.as_mut_ptr().cast(), text.cast(), 19) };
        buf
    }));
    done.push(through_hook!(i, "libc.so.6", "memmove", fn(d: *mut c_void, s: *const c_void, n: size_t) -> *mut c_void, |f| {
        let mut buf = *b"0123456789abcdefghij";
        unsafe { f(buf.as_mut_ptr().add(3).cast(), buf.as_ptr().cast(), 12) };
        buf
    }));
    done.push(through_hook!(i, "libc.so.6", "memset", fn(d: *mut c_void, c: c_int, n: size_t) -> *mut c_void, |f| {
        let mut buf = [1u8; 100];
        unsafe { f(buf.as_mut_ptr().add(5).cast(), 0x5a, 77) };
        buf.to_vec()
    }));
    done.push(through_hook!(i, "libc.so.6", "strspn", fn(a: *const c_char, b: *const c_char) -> size_t, |f| unsafe {
        f(text, s("hel").as_ptr())
    }));
    done.push(through_hook!(i, "libc.so.6", "strcspn", fn(a: *const c_char, b: *const c_char) -> size_t, |f| unsafe {
        f(text, s(",").as_ptr())
    }));
    done.push(through_hook!(i, "libc.so.6", "strtol", fn(p: *const c_char, e: *mut *mut c_char, b: c_int) -> c_long, |f| {
        let mut end = std::ptr::null_mut();
        (unsafe { f(nums.as_ptr(), &mut end, 10) }, end as usize)
    }));
    done.push(through_hook!(i, "libc.so.6", "strtoul", fn(p: *const c_char, e: *mut *mut c_char, b: c_int) -> u64, |f| unsafe {
        f(s("ff7").as_ptr(), std::ptr::null_mut(), 16)
    }));
    done.push(through_hook!(i, "libc.so.6", "strtod", fn(p: *const c_char, e: *mut *mut c_char) -> c_double, |f| unsafe {
        f(float.as_ptr(), std::ptr::null_mut()).to_bits()
    }));
    done.push(through_hook!(i, "libc.so.6", "atoi", fn(p: *const c_char) -> c_int, |f| unsafe { f(nums.as_ptr()) }));
    done.push(through_hook!(i, "libc.so.6", "getenv", fn(p: *const c_char) -> *const c_char, |f| {
        let v = unsafe { f(s("PATH").as_ptr()) };
        (!v.is_null()).then(|| unsafe { CStr::from_ptr(v) }.to_owned())
    }));
    done.push(through_hook!(i, "libc.so.6", "toupper", fn(c: c_int) -> c_int, |f| unsafe { f(b'q' as c_int) }));
    done.push(through_hook!(i, "libc.so.6", "tolower", fn(c: c_int) -> c_int, |f| unsafe { f(b'Q' as c_int) }));
    done.push(through_hook!(i, "libc.so.6", "abs", fn(x: c_int) -> c_int, |f| unsafe { f(-42) }));
    done.push(through_hook!(i, "libc.so.6", "labs", fn(x: c_long) -> c_long, |f| unsafe { f(-4200000000) }));
    done.push(through_hook!(
        i,
        "libc.so.6",
        "qsort",
        fn(b: *mut c_void, n: size_t, w: size_t, c: extern "C" fn(*const c_void, *const c_void) -> c_int) -> (),
        |f| {
            let mut v: Vec<i32> = (0..500).map(|k| (k * 7919) % 1000 - 500).collect();
            unsafe { f(v.as_mut_ptr().cast(), v.len(), 4, cmp_i32) };
            v
        }
    ));
    done.push(through_hook!(
        i,
        "libc.so.6",
        "bsearch",
        fn(
            k: *const c_void,
            b: *const c_void,
            n: size_t,
            w: size_t,
            c: extern "C" fn(*const c_void, *const c_void) -> c_int,
        ) -> *const c_void,
        |f| {
            let v: Vec<i32> = (0..300).map(|k| k * 3).collect();
            let key = 3 * 123;
            (unsafe { f((&key as *const i32).cast(), v.as_ptr().cast(), v.len(), 4, cmp_i32) } as usize).wrapping_sub(v.as_ptr() as usize)
        }
    ));
    done.push(through_hook!(
        i,
        "libc.so.6",
        "snprintf",
        fn(b: *mut c_char, n: size_t, fmt: *const c_char, x: c_int, y: *const c_char) -> c_int,
        |f| {
            let mut buf = [0u8; 64];
            let n = unsafe { f(buf.as_mut_ptr().cast(), buf.len(), s("[%d|%s]").as_ptr(), 12345, text) };
            (n, buf)
        }
    ));
    done.push(through_hook!(i, "libc.so.6", "strdup", fn(p: *const c_char) -> *mut c_char, |f| {
        let d = unsafe { f(text) };
        let copy = unsafe { CStr::from_ptr(d) }.to_owned();
        unsafe { libc::free(d.cast()) };
        copy
    }));
    done.push(through_hook!(
        i,
        "libc.so.6",
        "strtok_r",
        fn(p: *mut c_char, d: *const c_char, save: *mut *mut c_char) -> *mut c_char,
        |f| {
            let mut buf = *b"a,bb,,ccc\0";
            let mut save = std::ptr::null_mut();
            let mut words = Vec::new();
            let mut p = unsafe { f(buf.as_mut_ptr().cast(), s(",").as_ptr(), &mut save) };
            while !p.is_null() {
                words.push(unsafe { CStr::from_ptr(p) }.to_owned());
                p = unsafe { f(std::ptr::null_mut(), s(",").as_ptr(), &mut save) };
            }
            words
        }
    ));
    done.push(through_hook!(i, "libc.so.6", "rand_r", fn(seed: *mut u32) -> c_int, |f| {
        let mut seed = 7u32;
        (0..10).map(|_| unsafe { f(&mut seed) }).collect::<Vec<_>>()
    }));
    macro_rules! math1 {
        ($name:literal, $x:expr) => {
            done.push(through_hook!(i, "libm.so.6", $name, fn(x: c_double) -> c_double, |f| unsafe { f(black_box($x)).to_bits() }))
        };
    }
    macro_rules! math2 {
        ($name:literal, $x:expr, $y:expr) => {
            done.push(through_hook!(i, "libm.so.6", $name, fn(x: c_double, y: c_double) -> c_double, |f| unsafe {
                f(black_box($x), black_box($y)).to_bits()
            }))
        };
    }
    math1!("sin", 0.7);
    math1!("cos", 1.3);
    math1!("tan", 0.4);
    math1!("exp", 2.5);
    math1!("log", 10.0);
    math1!("sqrt", 2.0);
    math1!("floor", -2.5);
    math1!("cbrt", 27.5);
    math2!("pow", 2.0, 0.5);
    math2!("atan2", 1.0, -2.0);
    math2!("hypot", 3.0, 4.5);
    math2!("fmod", 10.5, 3.0);
    assert!(done.len() >= 40, "{} functions", done.len());
}
