//! Property test: generated instruction windows (RIP-relative operands, short and long
//! branches, `loop`/`loopcc`/`jrcxz`, branches into the window, calls) are run natively in a
//! sandbox page and from their relocated copy, near (same page) and far (beyond ±2 GiB); the
//! final registers, flags and exit taken must be identical.

use proptest::prelude::*;
use rewire_x86::{decode_window, relocate, RelocReason, X86Error};

std::arch::global_asm!(
    ".globl rewire_prop_run",
    "rewire_prop_run:",
    "push rbx",
    "push r12",
    "mov r12, rdx",
    "mov rbx, rdi",
    "mov rax, [rsi]",
    "mov rcx, [rsi+8]",
    "mov rdx, [rsi+16]",
    "mov rsi, [rsi+24]",
    "xor r11d, r11d", // deterministic flags on entry
    "mov r11, -1",
    "call rbx",
    "mov [r12], rax",
    "mov [r12+8], rcx",
    "mov [r12+16], rdx",
    "mov [r12+24], rsi",
    "mov [r12+32], r11",
    "pushfq",
    "pop rax",
    "mov [r12+40], rax",
    "pop r12",
    "pop rbx",
    "ret",
);

extern "C" {
    fn rewire_prop_run(entry: u64, input: *const [u64; 4], output: *mut [u64; 6]);
}

const PAGE: usize = 0x10000;
const EXITS: usize = 0x800;
const HELPER: usize = 0x900;
const DATA: usize = 0xc00;
const NEAR_COPY: usize = 0x8000;

#[derive(Debug, Clone, Copy)]
enum Target {
    Forward(u8),
    Exit(u8),
}

#[derive(Debug, Clone, Copy)]
enum Tmpl {
    AddImm(i8),
    XorRdxRax,
    IncRsi,
    AddRipData(u8),
    LeaRipData(u8),
    CmpImm(i8),
    Jcc8(u8, u8),
    Jcc32(u8, Target),
    Jmp8(u8),
    Jmp32(Target),
    Loop(u8, u8),
    LoopBack(u8, u8),
    Jrcxz(u8),
    CallHelper,
}

impl Tmpl {
    fn len(self) -> usize {
        match self {
            Tmpl::AddImm(_) | Tmpl::CmpImm(_) => 4,
            Tmpl::XorRdxRax | Tmpl::IncRsi => 3,
            Tmpl::AddRipData(_) | Tmpl::LeaRipData(_) => 7,
            Tmpl::Jcc8(..) | Tmpl::Jmp8(_) | Tmpl::Loop(..) | Tmpl::LoopBack(..) | Tmpl::Jrcxz(_) => 2,
            Tmpl::Jcc32(..) => 6,
            Tmpl::Jmp32(_) | Tmpl::CallHelper => 5,
        }
    }
}

fn tmpl() -> impl Strategy<Value = Tmpl> {
    let target = prop_oneof![any::<u8>().prop_map(Target::Forward), (0u8..8).prop_map(Target::Exit)];
    prop_oneof![
        any::<i8>().prop_map(Tmpl::AddImm),
        Just(Tmpl::XorRdxRax),
        Just(Tmpl::IncRsi),
        (0u8..8).prop_map(Tmpl::AddRipData),
        (0u8..8).prop_map(Tmpl::LeaRipData),
        any::<i8>().prop_map(Tmpl::CmpImm),
        (0u8..16, any::<u8>()).prop_map(|(c, t)| Tmpl::Jcc8(c, t)),
        (0u8..16, target.clone()).prop_map(|(c, t)| Tmpl::Jcc32(c, t)),
        any::<u8>().prop_map(Tmpl::Jmp8),
        target.prop_map(Tmpl::Jmp32),
        (0u8..3, any::<u8>()).prop_map(|(k, t)| Tmpl::Loop(k, t)),
        (0u8..3, any::<u8>()).prop_map(|(k, t)| Tmpl::LoopBack(k, t)),
        any::<u8>().prop_map(Tmpl::Jrcxz),
        Just(Tmpl::CallHelper),
    ]
}

/// Encodes the window at `base` (the page start). Forward targets pick an instruction after
/// the branch, or the window's end. Every run is finite: there is at most one backward
/// `loop`, and when there is one no other instruction changes rcx (other loops become
/// `jrcxz`), so it runs at most rcx times.
fn encode(prog: &[Tmpl], base: u64) -> Vec<u8> {
    let backward_at = prog.iter().position(|t| matches!(t, Tmpl::LoopBack(..)));
    let prog: Vec<Tmpl> = prog
        .iter()
        .enumerate()
        .map(|(i, t)| match *t {
            Tmpl::Loop(_, p) | Tmpl::LoopBack(_, p) if backward_at.is_some_and(|b| b != i) => Tmpl::Jrcxz(p),
            t => t,
        })
        .collect();
    let prog = &prog[..];
    let mut offsets = Vec::with_capacity(prog.len() + 1);
    let mut at = 0;
    for t in prog {
        offsets.push(at);
        at += t.len();
    }
    offsets.push(at);
    let forward = |i: usize, pick: u8| offsets[i + 1 + pick as usize % (prog.len() - i)] as u64;
    let mut out = Vec::with_capacity(at);
    for (i, t) in prog.iter().enumerate() {
        let next = base + offsets[i + 1] as u64;
        let rel8 = |to: u64| ((to as i64 - next as i64) as i8) as u8;
        let rel32 = |to: u64| ((to as i64 - next as i64) as i32).to_le_bytes();
        let to = |t: Target| match t {
            Target::Forward(p) => base + forward(i, p),
            Target::Exit(k) => base + (EXITS + 16 * k as usize) as u64,
        };
        match *t {
            Tmpl::AddImm(v) => out.extend_from_slice(&[0x48, 0x83, 0xc0, v as u8]),
            Tmpl::XorRdxRax => out.extend_from_slice(&[0x48, 0x31, 0xc2]),
            Tmpl::IncRsi => out.extend_from_slice(&[0x48, 0xff, 0xc6]),
            Tmpl::AddRipData(s) | Tmpl::LeaRipData(s) => {
                let op = if matches!(t, Tmpl::AddRipData(_)) { [0x48, 0x03, 0x05] } else { [0x48, 0x8d, 0x35] };
                out.extend_from_slice(&op);
                out.extend_from_slice(&rel32(base + (DATA + 8 * s as usize) as u64));
            }
            Tmpl::CmpImm(v) => out.extend_from_slice(&[0x48, 0x83, 0xf8, v as u8]),
            Tmpl::Jcc8(c, p) => out.extend_from_slice(&[0x70 | c, rel8(base + forward(i, p))]),
            Tmpl::Jcc32(c, tg) => {
                out.extend_from_slice(&[0x0f, 0x80 | c]);
                out.extend_from_slice(&rel32(to(tg)));
            }
            Tmpl::Jmp8(p) => out.extend_from_slice(&[0xeb, rel8(base + forward(i, p))]),
            Tmpl::Jmp32(tg) => {
                out.push(0xe9);
                out.extend_from_slice(&rel32(to(tg)));
            }
            Tmpl::Loop(k, p) => out.extend_from_slice(&[0xe2 - k, rel8(base + forward(i, p))]),
            Tmpl::LoopBack(k, p) => out.extend_from_slice(&[0xe2 - k, rel8(base + offsets[p as usize % (i + 1)] as u64)]),
            Tmpl::Jrcxz(p) => out.extend_from_slice(&[0xe3, rel8(base + forward(i, p))]),
            Tmpl::CallHelper => {
                out.push(0xe8);
                out.extend_from_slice(&rel32(base + HELPER as u64));
            }
        }
    }
    out
}

struct Sandbox {
    base: *mut u8,
    far: *mut u8,
}

impl Sandbox {
    fn new() -> Sandbox {
        let map = |hint: usize| unsafe {
            let p = libc::mmap(hint as *mut _, PAGE, libc::PROT_READ | libc::PROT_WRITE, libc::MAP_PRIVATE | libc::MAP_ANONYMOUS, -1, 0);
            assert_ne!(p, libc::MAP_FAILED);
            p as *mut u8
        };
        let base = map(0);
        let far = map(base as usize + (8usize << 30));
        assert!((far as u64).abs_diff(base as u64) > 1 << 32, "far copy must be out of rel32 reach");
        Sandbox { base, far }
    }

    fn protect(&self, ptr: *mut u8, exec: bool) {
        let prot = if exec { libc::PROT_READ | libc::PROT_EXEC } else { libc::PROT_READ | libc::PROT_WRITE };
        assert_eq!(unsafe { libc::mprotect(ptr.cast(), PAGE, prot) }, 0);
    }

    /// Lays out the window, its end (`ret`), the exits, the helper and the data.
    fn load(&self, window: &[u8]) {
        self.protect(self.base, false);
        let page = unsafe { std::slice::from_raw_parts_mut(self.base, PAGE) };
        page.fill(0xcc);
        page[..window.len()].copy_from_slice(window);
        page[window.len()] = 0xc3;
        for k in 0..8u8 {
            let e = EXITS + 16 * k as usize;
            page[e..e + 7].copy_from_slice(&[0x41, 0xbb, k, 0, 0, 0, 0xc3]);
        }
        page[HELPER..HELPER + 5].copy_from_slice(&[0x48, 0x83, 0xc0, 0x01, 0xc3]);
        for s in 0..8 {
            page[DATA + 8 * s..DATA + 8 * s + 8].copy_from_slice(&(0x1111_0000_u64 * (s as u64 + 1)).to_le_bytes());
        }
    }

    fn place(&self, at: *mut u8, code: &[u8]) {
        let was_base = at == self.base.wrapping_add(NEAR_COPY);
        let page = if was_base { self.base } else { self.far };
        self.protect(page, false);
        unsafe { std::ptr::copy_nonoverlapping(code.as_ptr(), at, code.len()) };
        self.protect(page, true);
        if was_base {
            self.protect(self.base, true);
        }
    }

    fn run(&self, entry: *mut u8, input: [u64; 4]) -> [u64; 6] {
        let mut out = [0u64; 6];
        unsafe { rewire_prop_run(entry as u64, &input, &mut out) };
        out[5] &= 0x8d5; // arithmetic flags
        out
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn relocated_windows_behave_like_the_original(
        prog in prop::collection::vec(tmpl(), 1..12),
        rax in any::<u64>(),
        rcx in 1u64..5,
        rdx in any::<u64>(),
        rsi in any::<u64>(),
    ) {
        let sandbox = Sandbox::new();
        let base = sandbox.base as u64;
        let window = encode(&prog, base);
        sandbox.load(&window);
        sandbox.protect(sandbox.base, true);
        let input = [rax, rcx, rdx, rsi];
        let native = sandbox.run(sandbox.base, input);
        let insns = decode_window(&window, base, window.len()).unwrap();
        let end = base + window.len() as u64;

        let near = base + NEAR_COPY as u64;
        let copy = relocate(&insns, &window, near, Some(end)).unwrap();
        rewire_x86::verify::check_equivalent(&insns, &window, &copy, near).unwrap();
        sandbox.place(near as *mut u8, &copy.code);
        prop_assert_eq!(sandbox.run(near as *mut u8, input), native, "near copy of {:x?}", window);

        let far = sandbox.far as u64;
        match relocate(&insns, &window, far, Some(end)) {
            Ok(copy) => {
                rewire_x86::verify::check_equivalent(&insns, &window, &copy, far).unwrap();
                sandbox.place(sandbox.far, &copy.code);
                prop_assert_eq!(sandbox.run(sandbox.far, input), native, "far copy of {:x?}", window);
            }
            Err(X86Error::Unrelocatable { reason: RelocReason::MemoryOutOfReach, .. }) => {
                prop_assert!(prog.iter().any(|t| matches!(t, Tmpl::AddRipData(_))));
            }
            Err(e) => prop_assert!(false, "unexpected {}", e),
        }
        unsafe {
            libc::munmap(sandbox.base.cast(), PAGE);
            libc::munmap(sandbox.far.cast(), PAGE);
        }
    }
}
