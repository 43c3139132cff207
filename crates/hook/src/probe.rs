//! Mid-function probes: at any instruction boundary, a callback that sees and may change the
//! registers, after which execution continues with the original instruction.
//!
//! A probe is a hook whose detour is a generated stub: it steps over the red zone, saves the
//! general registers and flags (the [`Registers`] the callback sees), saves the whole SIMD
//! state with `xsave` (the callback may use any vector register), calls the callback on an
//! aligned stack with the direction flag clear, restores everything and jumps to the probe's
//! trampoline. Probes therefore stack with hooks and other probes on the same address.

use crate::{Hook, HookError, Interceptor};
use iced_x86::code_asm::*;
use iced_x86::BlockEncoderOptions;
use std::panic::AssertUnwindSafe;

/// The general registers and flags at a probe, as saved on the stack (lowest address first).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[allow(missing_docs)]
pub struct Registers {
    pub r15: u64,
    pub r14: u64,
    pub r13: u64,
    pub r12: u64,
    pub r11: u64,
    pub r10: u64,
    pub r9: u64,
    pub r8: u64,
    pub rdi: u64,
    pub rsi: u64,
    pub rbp: u64,
    pub rbx: u64,
    pub rdx: u64,
    pub rcx: u64,
    pub rax: u64,
    pub rflags: u64,
}

/// Below the saved registers: the red zone the stub steps over.
const RED_ZONE: u64 = 128;

/// What a probe callback sees.
pub struct ProbeContext<'a> {
    regs: &'a mut Registers,
    pc: u64,
}

impl ProbeContext<'_> {
    /// Address of the probed instruction (about to execute).
    pub fn pc(&self) -> u64 {
        self.pc
    }

    /// The stack pointer as the probed instruction sees it.
    pub fn sp(&self) -> u64 {
        self.regs as *const Registers as u64 + std::mem::size_of::<Registers>() as u64 + RED_ZONE
    }

    /// The registers (all but `rsp` and `rip`).
    pub fn regs(&self) -> &Registers {
        self.regs
    }

    /// The registers, to change: the changes take effect when the callback returns.
    pub fn regs_mut(&mut self) -> &mut Registers {
        self.regs
    }
}

type Callback = Box<dyn Fn(&mut ProbeContext<'_>) + Send + Sync>;

struct ProbeData {
    pc: u64,
    callback: Callback,
}

extern "C" fn dispatch(regs: *mut Registers, data: *const ProbeData) {
    // SAFETY: the stub passes its saved-register block (live until it restores them) and the
    // probe's data, which is never freed (see `Interceptor::probe`).
    let (regs, data) = unsafe { (&mut *regs, &*data) };
    let outcome = std::panic::catch_unwind(AssertUnwindSafe(|| (data.callback)(&mut ProbeContext { regs, pc: data.pc })));
    if outcome.is_err() {
        eprintln!("rewire: the probe callback at {:#x} panicked; aborting (a panic cannot unwind through the probed code)", data.pc);
        std::process::abort();
    }
}

/// A probe at an instruction. Dropping it removes it.
#[derive(Debug)]
pub struct Probe {
    hook: Hook,
}

impl Probe {
    /// The probed address.
    pub fn address(&self) -> u64 {
        self.hook.target()
    }

    /// The underlying hook (to disable or enable the probe).
    pub fn hook(&self) -> &Hook {
        &self.hook
    }

    /// Removes the probe.
    pub fn remove(self) -> Result<(), HookError> {
        self.hook.remove()
    }
}

/// Size of the area `xsave` needs for the enabled state components, or `None` when the OS
/// has not enabled `xsave` (then `fxsave`'s 512 bytes are used).
fn xsave_size() -> Option<u32> {
    let leaf1 = std::arch::x86_64::__cpuid(1);
    let osxsave = leaf1.ecx & (1 << 27) != 0;
    osxsave.then(|| std::arch::x86_64::__cpuid_count(0xd, 0).ebx)
}

/// Assembles the probe stub for `data` at `ip`; returns the code and the offset of the
/// 8-byte cell holding where to continue.
fn assemble_stub(ip: u64, data: *const ProbeData) -> Result<(Vec<u8>, usize), IcedError> {
    let saved = [rax, rcx, rdx, rbx, rbp, rsi, rdi, r8, r9, r10, r11, r12, r13, r14, r15];
    let xsave = xsave_size();
    let area = xsave.map_or(512, |s| s.next_multiple_of(64)) as i32;
    let mut a = CodeAssembler::new(64)?;
    let mut next = a.create_label();
    a.lea(rsp, ptr(rsp - RED_ZONE as i32))?;
    a.pushfq()?;
    for r in saved {
        a.push(r)?;
    }
    a.mov(rbx, rsp)?;
    a.cld()?;
    a.and(rsp, -64)?;
    a.sub(rsp, area)?;
    if xsave.is_some() {
        a.xor(eax, eax)?;
        for i in 0..8 {
            a.mov(qword_ptr(rsp + 512 + i * 8), rax)?; // the xsave header must start zeroed
        }
        a.mov(eax, -1)?;
        a.mov(edx, -1)?;
        a.xsave64(ptr(rsp))?;
    } else {
        a.fxsave64(ptr(rsp))?;
    }
    a.mov(rdi, rbx)?;
    a.mov(rsi, data as u64)?;
    a.mov(rax, dispatch as *const () as u64)?;
    a.call(rax)?;
    if xsave.is_some() {
        a.mov(eax, -1)?;
        a.mov(edx, -1)?;
        a.xrstor64(ptr(rsp))?;
    } else {
        a.fxrstor64(ptr(rsp))?;
    }
    a.mov(rsp, rbx)?;
    for r in saved.iter().rev() {
        a.pop(*r)?;
    }
    a.popfq()?;
    a.lea(rsp, ptr(rsp + RED_ZONE as i32))?;
    a.jmp(qword_ptr(next))?;
    a.set_label(&mut next)?;
    a.dq(&[0])?;
    let result = a.assemble_options(ip, BlockEncoderOptions::RETURN_NEW_INSTRUCTION_OFFSETS)?;
    let cell = (result.label_ip(&next)? - ip) as usize;
    Ok((result.inner.code_buffer, cell))
}

impl Interceptor {
    /// Runs `callback` whenever execution reaches the instruction at `at`, with the registers
    /// it would see; changes to them take effect. The callback's closure is kept after the
    /// probe is removed (a thread may still be running it).
    ///
    /// # Safety
    /// `at` must be an instruction boundary, and the callback must keep the program's
    /// invariants for the registers it changes.
    pub unsafe fn probe(&self, at: u64, callback: impl Fn(&mut ProbeContext<'_>) + Send + Sync + 'static) -> Result<Probe, HookError> {
        let data = Box::into_raw(Box::new(ProbeData { pc: at, callback: Box::new(callback) }));
        let reclaim = |e: HookError| {
            // SAFETY: the stub that knew `data` was never reachable (install failed).
            drop(unsafe { Box::from_raw(data) });
            e
        };
        let slot = self.space().alloc(at, 256).map_err(|e| reclaim(e.into()))?;
        let (code, cell) = match assemble_stub(slot.addr, data) {
            Ok(c) if c.0.len() <= slot.size => c,
            _ => {
                self.space().free(slot);
                return Err(reclaim(HookError::Memory(rewire_mem::MemError::SlotTooLarge { size: 256 })));
            }
        };
        slot.write(0, &code);
        let stub = slot.clone();
        let hook = self.install_generated(at, slot).map_err(reclaim)?;
        // Written once, before the stub can run (the hook is still disabled).
        stub.write(cell, &hook.trampoline().to_le_bytes());
        hook.enable()?;
        Ok(Probe { hook })
    }
}
