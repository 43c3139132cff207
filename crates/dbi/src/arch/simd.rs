//! The application's SIMD state around runtime code: whether the context switch may keep
//! it with moves instead of `xsave`, completing and loading XSAVE images, their sizes.

/// Makes an XSAVE image taken from the program (a signal frame) safe for `xrstor`: only
/// state components the OS enabled, standard format, reserved header bytes zero.
pub fn sanitize_xsave(area: &mut [u8]) {
    if area.len() < 576 {
        return;
    }
    set_xstate_bv(area, xstate_bv(area) & xcr0());
    area[520..576].fill(0);
}

/// XSAVE state components: x87, SSE (xmm registers and MXCSR), AVX (upper ymm halves), PKRU.
const X87: u64 = 1;
const SSE: u64 = 2;
const AVX: u64 = 4;
const PKRU: u64 = 0x200;
/// Offset of the AVX component (upper ymm halves) in a standard-format XSAVE area.
const AVX_OFFSET: u32 = 576;
/// XSTATE_BV, the header's bitmap of components the area holds, at byte 512.
const XSTATE_BV: std::ops::Range<usize> = 512..520;
/// The xmm registers in a standard-format XSAVE area.
const XMM_AREA: std::ops::Range<usize> = 160..416;

fn xstate_bv(area: &[u8]) -> u64 {
    u64::from_le_bytes(area[XSTATE_BV].try_into().expect("8 bytes"))
}

fn set_xstate_bv(area: &mut [u8], bv: u64) {
    area[XSTATE_BV].copy_from_slice(&bv.to_le_bytes());
}

/// XSAVE components the kernel keeps out of a process's state, and so out of its signal
/// frames, until the process asks for them with `arch_prctl(ARCH_REQ_XCOMP_PERM)`: AMX tile
/// data.
const DYNAMIC: u64 = 1 << 18;
const ARCH_GET_XCOMP_PERM: u64 = 0x1022;
/// [`signal_xsave_size`] once known (0: to be computed).
static SIGNAL_XSAVE: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Size of the XSAVE image in a signal frame of this process, as the kernel writes it: the
/// components the OS enabled up to the end of the last one (standard format), without
/// dynamic components the process has no permission for. On a CPU with AMX that is about
/// 2.8 KiB, not the 11 KiB of CPUID's full size: a program's alternate signal stack is sized
/// for the kernel's frame (AT_MINSIGSTKSZ).
pub fn signal_xsave_size() -> usize {
    use std::sync::atomic::Ordering::Relaxed;
    let known = SIGNAL_XSAVE.load(Relaxed);
    if known != 0 {
        return known;
    }
    let enabled = xcr0();
    let mut permitted = 0u64;
    // SAFETY: writes the permitted components into `permitted`; kernels without dynamic
    // components (before 5.16) refuse it, and then none is enabled either.
    let ok =
        unsafe { super::cpu::syscall6(libc::SYS_arch_prctl as u64, [ARCH_GET_XCOMP_PERM, &raw mut permitted as u64, 0, 0, 0, 0]) } == 0;
    let components = if ok { enabled & (!DYNAMIC | permitted) } else { enabled };
    let size = (2..63)
        .filter(|i| components & (1 << i) != 0)
        .map(|i| {
            let leaf = std::arch::x86_64::__cpuid_count(0xd, i);
            (leaf.ebx + leaf.eax) as usize
        })
        .fold(576, usize::max);
    SIGNAL_XSAVE.store(size, Relaxed);
    size
}

/// The program was given more components (`ARCH_REQ_XCOMP_PERM`): its frames may grow.
pub fn xsave_permissions_changed() {
    SIGNAL_XSAVE.store(0, std::sync::atomic::Ordering::Relaxed);
}

fn xcr0() -> u64 {
    let (lo, hi): (u32, u32);
    // SAFETY: xgetbv(0) reads XCR0; OSXSAVE is set wherever the engine runs (it uses xsave).
    unsafe { std::arch::asm!("xgetbv", in("ecx") 0, out("eax") lo, out("edx") hi, options(nomem, nostack, preserves_flags)) };
    (hi as u64) << 32 | lo as u64
}

/// Whether the context switch may keep the application's SIMD state with moves instead of
/// `xsave`: the OS enables exactly x87, SSE and AVX (PKRU too, perhaps), and the AVX
/// component sits where the moves put it. Runtime code (Rust, and the libc string
/// functions it calls) changes only xmm/ymm registers and MXCSR of those; the x87 state and
/// PKRU stay live in the CPU while it runs. With AVX-512 or AMX enabled, libc's string
/// functions use registers the moves do not cover, so `xsave` it is.
pub fn simd_by_moves() -> bool {
    let avx = std::arch::x86_64::__cpuid_count(0xd, 2);
    xcr0() & !PKRU == X87 | SSE | AVX && avx.ebx == AVX_OFFSET && avx.eax == 256
}

/// Whether the CPU has `xsaveopt`.
pub fn has_xsaveopt() -> bool {
    std::arch::x86_64::__cpuid_count(0xd, 1).eax & 1 != 0
}

/// The components the moves leave live in the CPU.
fn live_components() -> u64 {
    xcr0() & !(SSE | AVX)
}

/// Completes an XSAVE area the context switch filled by moves: stores the live x87 state
/// and PKRU into it and marks the SSE and AVX parts present.
pub fn save_live_simd(area: &mut [u8]) {
    assert!(area.len() >= AVX_OFFSET as usize + 256 && area.as_ptr() as usize % 64 == 0, "an aligned XSAVE area");
    let mask = live_components();
    // SAFETY: `area` is a 64-byte aligned buffer large enough for the enabled components
    // (XSAVE_MAX); xsave writes only there.
    unsafe {
        std::arch::asm!("xsave64 [{}]", in(reg) area.as_mut_ptr(), in("eax") mask as u32, in("edx") (mask >> 32) as u32, options(nostack, preserves_flags))
    };
    set_xstate_bv(area, xstate_bv(area) | SSE | AVX);
}

/// The other way: loads the x87 state and PKRU of an XSAVE area into the CPU, and writes
/// the SSE and AVX parts the area marks absent as their initial values (zeros), where the
/// context switch's moves read them.
pub fn load_live_simd(area: &mut [u8]) {
    assert!(area.len() >= AVX_OFFSET as usize + 256 && area.as_ptr() as usize % 64 == 0, "an aligned XSAVE area");
    let bv = xstate_bv(area);
    if bv & SSE == 0 {
        area[XMM_AREA].fill(0);
    }
    if bv & AVX == 0 {
        area[AVX_OFFSET as usize..AVX_OFFSET as usize + 256].fill(0);
    }
    set_xstate_bv(area, bv | SSE | AVX);
    let mask = live_components();
    // SAFETY: as in `save_live_simd`; the area was made valid for xrstor by
    // `sanitize_xsave` or by xsave itself. The x87 state and PKRU are the application's
    // while runtime code runs (it does not use them).
    unsafe {
        std::arch::asm!("xrstor64 [{}]", in(reg) area.as_ptr(), in("eax") mask as u32, in("edx") (mask >> 32) as u32, options(nostack, preserves_flags))
    };
}

/// Size of the XSAVE area for the features the OS enabled (CPUID 0xD, sub-leaf 0, EBX).
pub fn xsave_size() -> usize {
    std::arch::x86_64::__cpuid_count(0xd, 0).ebx as usize
}

/// Gives a fresh XSAVE area the state a new process starts with: empty state-component
/// bitmap (registers at their initial values), FCW 0x37f and MXCSR 0x1f80.
pub fn init_xsave_area(area: &mut [u8]) {
    area.fill(0);
    area[0..2].copy_from_slice(&0x37fu16.to_le_bytes());
    area[24..28].copy_from_slice(&0x1f80u32.to_le_bytes());
}
