//! Hooks in another process: the remote memory policy (ptrace), library injection through the
//! target's own `dlopen`, and launching a program stopped at its entry point.
//!
//! Only the memory policy differs from hooks in this process: the same Interceptor, relocation
//! and slot pools run on a [`RemoteProcess`]. Memory is read with `process_vm_readv` and written
//! through `/proc/PID/mem` (which also writes read-only code); protection changes and
//! allocations run as system calls in a stopped thread of the target; trampolines live in a
//! memfd mapped read+execute there and read+write here, so writing one is a local store.

mod registry;
mod tracee;

use crate::process::{ModuleIndex, Process, Stopped};
use crate::HookError;
use iced_x86::{Decoder, DecoderOptions, Mnemonic};
use nix::sys::uio::{process_vm_readv, RemoteIoVec};
use nix::unistd::Pid;
pub use registry::Record;
use rewire_mem::{AddressSpace, DualView, MemError, Memory, Protection, TrampolineSpace};
use std::io::IoSliceMut;
use std::ops::Range;
use std::os::fd::AsFd;
use std::os::unix::fs::FileExt;
use std::sync::{Arc, Mutex, OnceLock};
pub use tracee::Tracee;

const SYS_MMAP: i64 = libc::SYS_mmap;
const SYS_MPROTECT: i64 = libc::SYS_mprotect;
const SYS_MUNMAP: i64 = libc::SYS_munmap;
const SYS_MEMFD_CREATE: i64 = libc::SYS_memfd_create;
const SYS_FTRUNCATE: i64 = libc::SYS_ftruncate;
const SYS_CLOSE: i64 = libc::SYS_close;

fn prot_bits(p: Protection) -> u64 {
    (if p.read { libc::PROT_READ } else { 0 } | if p.write { libc::PROT_WRITE } else { 0 } | if p.exec { libc::PROT_EXEC } else { 0 })
        as u64
}

/// The memory policy for a traced process.
#[derive(Debug)]
pub struct RemoteMemory {
    tracee: Arc<Tracee>,
    mem_file: Mutex<Option<std::fs::File>>,
    /// Address of a `syscall` instruction in the target's libc.
    syscall_insn: OnceLock<u64>,
    /// A page of the target used to pass strings to system calls and functions.
    scratch: OnceLock<u64>,
}

impl RemoteMemory {
    fn pid(&self) -> i32 {
        self.tracee.pid()
    }

    /// Finds a `syscall` instruction in the target: the one in its libc's `syscall` function.
    fn syscall_insn(&self) -> Result<u64, MemError> {
        if let Some(&a) = self.syscall_insn.get() {
            return Ok(a);
        }
        let modules = ModuleIndex::for_process(self.pid());
        let fail =
            |reason: &str| MemError::Sys { call: format!("finding a syscall instruction in process {}", self.pid()), errno: reason.into() };
        let at = modules.resolve_from_file(self, "libc.so.6", "syscall").map_err(|e| fail(&e.to_string()))?;
        let mut code = [0u8; 64];
        self.read(at, &mut code)?;
        let insn = Decoder::with_ip(64, &code, at, DecoderOptions::NONE)
            .into_iter()
            .take_while(|i| !i.is_invalid())
            .find(|i| i.mnemonic() == Mnemonic::Syscall)
            .ok_or_else(|| fail("libc's syscall() has no syscall instruction in its first 64 bytes"))?;
        Ok(*self.syscall_insn.get_or_init(|| insn.ip()))
    }

    /// Runs a system call in the target; a negative result becomes an error naming `call`.
    fn syscall(&self, call: &str, nr: i64, args: [u64; 6]) -> Result<u64, MemError> {
        let r =
            self.tracee.syscall(self.syscall_insn()?, nr, args).map_err(|e| MemError::Sys { call: call.into(), errno: e.to_string() })?;
        if (-4095..0).contains(&r) {
            return Err(MemError::Sys {
                call: format!("{call} in process {}", self.pid()),
                errno: nix::errno::Errno::from_raw(-r as i32).to_string(),
            });
        }
        Ok(r as u64)
    }

    /// A page of scratch memory in the target, mapped on first use.
    fn scratch(&self) -> Result<u64, MemError> {
        if let Some(&a) = self.scratch.get() {
            return Ok(a);
        }
        let page = self.map_anonymous(4096)?;
        Ok(*self.scratch.get_or_init(|| page))
    }

    /// Maps `len` bytes of fresh read+write memory anywhere in the target.
    pub(crate) fn map_anonymous(&self, len: usize) -> Result<u64, MemError> {
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS) as u64;
        self.syscall("mmap", SYS_MMAP, [0, len as u64, prot_bits(Protection::RW), flags, u64::MAX, 0])
    }

    /// Puts a NUL-terminated copy of `text` in the target's scratch page.
    pub(crate) fn put_string(&self, text: &str) -> Result<u64, HookError> {
        let page = self.scratch()?;
        let mut bytes = text.as_bytes().to_vec();
        bytes.truncate(4095);
        bytes.push(0);
        self.write(page, &bytes)?;
        Ok(page)
    }

    /// Reads a NUL-terminated string of the target (at most 1 KiB).
    pub(crate) fn read_string(&self, addr: u64) -> String {
        let mut buf = vec![0u8; 1024];
        let mut len = buf.len();
        while len > 0 && self.read(addr, &mut buf[..len]).is_err() {
            len /= 2;
        }
        buf.truncate(len);
        let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
        String::from_utf8_lossy(&buf[..end]).into_owned()
    }
}

impl Memory for RemoteMemory {
    fn read(&self, addr: u64, buf: &mut [u8]) -> Result<(), MemError> {
        self.tracee.count(1);
        let len = buf.len();
        let remote = [RemoteIoVec { base: addr as usize, len }];
        match process_vm_readv(Pid::from_raw(self.pid()), &mut [IoSliceMut::new(buf)], &remote) {
            Ok(n) if n == len => Ok(()),
            _ => Err(MemError::Unreadable { addr, len }),
        }
    }

    fn write(&self, addr: u64, data: &[u8]) -> Result<(), MemError> {
        let mut file = self.mem_file.lock().unwrap_or_else(|p| p.into_inner());
        if file.is_none() {
            let f = std::fs::OpenOptions::new().read(true).write(true).open(format!("/proc/{}/mem", self.pid()));
            *file = Some(f.map_err(|e| MemError::Sys { call: format!("open(/proc/{}/mem)", self.pid()), errno: e.to_string() })?);
        }
        let f = file.as_ref().expect("opened above");
        self.tracee.count(1);
        f.write_all_at(data, addr).map_err(|e| MemError::Unwritable { addr, len: data.len(), errno: e.to_string() })
    }

    fn protect(&self, addr: u64, len: usize, prot: Protection) -> Result<(), MemError> {
        let page = addr & !0xfff;
        self.syscall("mprotect", SYS_MPROTECT, [page, addr + len as u64 - page, prot_bits(prot), 0, 0, 0]).map(|_| ())
    }

    fn reserve(&self, addr: u64, len: usize) -> Result<(), MemError> {
        let flags = (libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_NORESERVE | libc::MAP_FIXED_NOREPLACE) as u64;
        let got = self.syscall("mmap(reserve)", SYS_MMAP, [addr, len as u64, 0, flags, u64::MAX, 0])?;
        if got != addr {
            let _ = self.release(got, len);
            return Err(MemError::Sys { call: format!("mmap({addr:#x})"), errno: "address taken".into() });
        }
        Ok(())
    }

    fn commit(&self, addr: u64, len: usize, prot: Protection) -> Result<(), MemError> {
        self.protect(addr, len, prot)
    }

    fn release(&self, addr: u64, len: usize) -> Result<(), MemError> {
        self.syscall("munmap", SYS_MUNMAP, [addr, len as u64, 0, 0, 0, 0]).map(|_| ())
    }

    fn address_space(&self) -> Result<AddressSpace, MemError> {
        AddressSpace::read(Some(self.pid() as u32))
    }

    fn map_dual(&self, addr: u64, len: usize) -> Result<DualView, MemError> {
        let name = self.put_string("rewire-code").map_err(|e| MemError::Sys { call: "memfd name".into(), errno: e.to_string() })?;
        let fd = self.syscall("memfd_create", SYS_MEMFD_CREATE, [name, libc::MFD_CLOEXEC as u64, 0, 0, 0, 0])?;
        let close = || self.syscall("close", SYS_CLOSE, [fd, 0, 0, 0, 0, 0]);
        let mapped = (|| {
            self.syscall("ftruncate", SYS_FTRUNCATE, [fd, len as u64, 0, 0, 0, 0])?;
            let flags = (libc::MAP_SHARED | libc::MAP_FIXED_NOREPLACE) as u64;
            let got = self.syscall("mmap(code view)", SYS_MMAP, [addr, len as u64, prot_bits(Protection::RX), flags, fd, 0])?;
            if got != addr {
                let _ = self.release(got, len);
                return Err(MemError::Sys { call: format!("mmap({addr:#x})"), errno: "address taken".into() });
            }
            let local = std::fs::OpenOptions::new().read(true).write(true).open(format!("/proc/{}/fd/{fd}", self.pid()));
            let local = local.map_err(|e| MemError::Sys { call: "open(memfd of the target)".into(), errno: e.to_string() })?;
            DualView::map_local(addr, len, local.as_fd()).inspect_err(|_| {
                let _ = self.release(addr, len);
            })
        })();
        let _ = close();
        mapped
    }
}

/// The threads of a traced process: all stopped while it is attached.
struct RemoteStopped {
    tracee: Arc<Tracee>,
}

impl Stopped for RemoteStopped {
    fn move_pcs(&mut self, relocate: &mut dyn FnMut(u64) -> Option<u64>) {
        for tid in self.tracee.threads() {
            if let Ok(mut regs) = self.tracee.regs(tid) {
                if let Some(pc) = relocate(regs.rip) {
                    regs.rip = pc;
                    let _ = self.tracee.set_regs(tid, regs);
                }
            }
        }
    }

    fn exclusive(&self) -> bool {
        true
    }
}

/// Another process, under ptrace control while this value lives.
pub struct RemoteProcess {
    tracee: Arc<Tracee>,
    remote: Arc<RemoteMemory>,
    memory: Arc<dyn Memory>,
    modules: ModuleIndex,
    space: OnceLock<Arc<TrampolineSpace>>,
}

impl std::fmt::Debug for RemoteProcess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RemoteProcess({})", self.pid())
    }
}

impl RemoteProcess {
    /// Attaches to the running process `pid`, stopping all of its threads.
    pub fn attach(pid: i32) -> Result<Arc<RemoteProcess>, HookError> {
        Ok(RemoteProcess::new(Tracee::attach(pid)?))
    }

    fn new(tracee: Tracee) -> Arc<RemoteProcess> {
        let tracee = Arc::new(tracee);
        let remote = Arc::new(RemoteMemory {
            tracee: tracee.clone(),
            mem_file: Mutex::new(None),
            syscall_insn: OnceLock::new(),
            scratch: OnceLock::new(),
        });
        let modules = ModuleIndex::for_process(tracee.pid());
        Arc::new(RemoteProcess { tracee, memory: remote.clone(), remote, modules, space: OnceLock::new() })
    }

    /// Starts `program` with `args` (argv\[0\] first), stopped at its entry point: the dynamic
    /// linker has loaded its libraries, none of the program's own code has run.
    pub fn launch(program: &str, args: &[String]) -> Result<Arc<RemoteProcess>, HookError> {
        let pid = launch::start_stopped_at_entry(program, args)?;
        Ok(RemoteProcess::new(Tracee::from_stopped_child(pid)))
    }

    /// The process id.
    pub fn pid(&self) -> i32 {
        self.tracee.pid()
    }

    /// Loads the shared library `lib` into the target with its own `dlopen`; returns the
    /// library's load address, or the `dlerror()` text.
    pub fn inject(&self, lib: &str) -> Result<u64, HookError> {
        let path = std::fs::canonicalize(lib).map_err(|e| HookError::LoadFailed { lib: lib.into(), reason: e.to_string() })?;
        let path = path.to_string_lossy().into_owned();
        let dlopen = self.modules.resolve_from_file(&*self.memory, "libc.so.6", "dlopen")?;
        let dlerror = self.modules.resolve_from_file(&*self.memory, "libc.so.6", "dlerror")?;
        let name = self.remote.put_string(&path)?;
        let handle = self.tracee.call(dlopen, &[name, libc::RTLD_NOW as u64])?;
        if handle == 0 {
            let text = self.tracee.call(dlerror, &[])?;
            let reason = if text == 0 { "dlopen failed".to_string() } else { self.remote.read_string(text) };
            return Err(HookError::LoadFailed { lib: lib.into(), reason });
        }
        self.modules.maps(&*self.memory, true)?;
        self.modules.load_base(&*self.memory, &path)
    }

    /// Undoes one [`inject`](Self::inject) of `lib`: the library leaves the target unless
    /// something else holds it (an earlier load with hooks in place).
    pub fn unload(&self, lib: &str) -> Result<(), HookError> {
        let path = std::fs::canonicalize(lib).map_err(|e| HookError::LoadFailed { lib: lib.into(), reason: e.to_string() })?;
        let dlopen = self.modules.resolve_from_file(&*self.memory, "libc.so.6", "dlopen")?;
        let dlclose = self.modules.resolve_from_file(&*self.memory, "libc.so.6", "dlclose")?;
        let name = self.remote.put_string(&path.to_string_lossy())?;
        // The handle of the loaded library, without loading it (this takes a reference too).
        let handle = self.tracee.call(dlopen, &[name, (libc::RTLD_NOW | libc::RTLD_NOLOAD) as u64])?;
        if handle != 0 {
            self.tracee.call(dlclose, &[handle])?;
            self.tracee.call(dlclose, &[handle])?;
        }
        self.modules.maps(&*self.memory, true)?;
        Ok(())
    }

    /// The address of `symbol` (any defined symbol, function or variable) in the loaded
    /// module `module`.
    pub fn symbol(&self, module: &str, symbol: &str) -> Result<u64, HookError> {
        let mapping = self.modules.module(&*self.memory, module)?;
        let file = self.modules.file(&mapping.path)?;
        let base = self.modules.load_base(&*self.memory, &mapping.path)?;
        match file.symbol(symbol) {
            Some(a) => Ok(base + a),
            None => Err(HookError::SymbolNotFound { module: module.into(), symbol: symbol.into(), similar: file.similar_names(symbol) }),
        }
    }

    /// Where calls to the function `name` arrive: the program's own symbol first, then the
    /// first library (in address order) exporting it.
    pub fn find_function(&self, name: &str) -> Result<u64, HookError> {
        if let Ok(a) = self.symbol("", name) {
            return Ok(a);
        }
        let maps = self.modules.maps(&*self.memory, false)?;
        let mut paths: Vec<&str> =
            maps.mappings.iter().filter(|m| m.offset == 0 && m.path.starts_with('/')).map(|m| m.path.as_str()).collect();
        paths.dedup();
        let mut similar = Vec::new();
        for path in paths {
            match self.resolve(path, name) {
                Ok(a) => return Ok(a),
                Err(HookError::SymbolNotFound { similar: s, .. }) => similar.extend(s),
                Err(_) => {}
            }
        }
        similar.sort();
        similar.dedup();
        similar.truncate(5);
        Err(HookError::SymbolNotFound { module: "the program or its libraries".into(), symbol: name.into(), similar })
    }

    /// Writes an 8-byte value in the target.
    pub fn write_u64(&self, addr: u64, value: u64) -> Result<(), HookError> {
        Ok(self.memory.write(addr, &value.to_le_bytes())?)
    }

    /// System calls rewire made on the target so far (ptrace requests and waits, memory
    /// reads and writes; a system call run in the target counts the requests it took).
    pub fn kernel_calls(&self) -> u64 {
        self.tracee.kernel_calls()
    }

    /// Lets the process run on, untraced.
    pub fn detach(&self) {
        if let Some(&page) = self.remote.scratch.get() {
            let _ = self.memory.release(page, 4096);
        }
        self.tracee.detach();
    }
}

impl Process for RemoteProcess {
    fn memory(&self) -> &Arc<dyn Memory> {
        &self.memory
    }

    fn shared_space(&self) -> Arc<TrampolineSpace> {
        self.space.get_or_init(|| TrampolineSpace::new(self.memory.clone())).clone()
    }

    fn stop_threads(&self, _windows: &[Range<u64>]) -> Result<Box<dyn Stopped>, HookError> {
        Ok(Box::new(RemoteStopped { tracee: self.tracee.clone() }))
    }

    fn patch_code(&self, addr: u64, bytes: &[u8], _prot: Protection, _exclusive: bool) -> Result<(), HookError> {
        Ok(self.memory.write(addr, bytes)?)
    }

    fn resolve(&self, module: &str, symbol: &str) -> Result<u64, HookError> {
        match self.modules.resolve_export(&*self.memory, module, symbol)? {
            // An indirect function: ask its resolver in the target where calls arrive.
            (resolver, true) => self.tracee.call(resolver, &[]),
            (addr, false) => Ok(addr),
        }
    }

    fn modules(&self) -> &ModuleIndex {
        &self.modules
    }
}

mod launch {
    //! Starting a program under ptrace, stopped at its entry point.

    use crate::HookError;
    use nix::sys::ptrace;
    use nix::sys::signal::Signal;
    use nix::sys::wait::{waitpid, WaitStatus};
    use nix::unistd::{ForkResult, Pid};
    use std::ffi::CString;
    use std::os::unix::fs::PermissionsExt;

    fn find_program(program: &str) -> Result<String, HookError> {
        let cannot = |reason: &str| HookError::CannotLaunch { program: program.into(), reason: reason.into() };
        let candidates: Vec<String> = if program.contains('/') {
            vec![program.to_string()]
        } else {
            std::env::var("PATH").unwrap_or_default().split(':').map(|d| format!("{d}/{program}")).collect()
        };
        let found = candidates.into_iter().find(|p| std::path::Path::new(p).is_file()).ok_or_else(|| cannot("not found"))?;
        let mode = std::fs::metadata(&found).map_err(|e| cannot(&e.to_string()))?.permissions().mode();
        if mode & 0o111 == 0 {
            return Err(cannot("not executable"));
        }
        Ok(found)
    }

    /// Forks, execs `program` traced, runs it to its ELF entry point, and returns its pid.
    pub fn start_stopped_at_entry(program: &str, args: &[String]) -> Result<i32, HookError> {
        let path = find_program(program)?;
        let cpath =
            CString::new(path.clone()).map_err(|_| HookError::CannotLaunch { program: program.into(), reason: "NUL in path".into() })?;
        let cargs: Vec<CString> = args.iter().map(|a| CString::new(a.as_str()).unwrap_or_default()).collect();
        // SAFETY: the child only calls async-signal-safe functions (ptrace, execv, _exit)
        // before exec.
        let child = match unsafe { nix::unistd::fork() } {
            Ok(ForkResult::Child) => {
                let _ = ptrace::traceme();
                let _ = nix::unistd::execv(&cpath, &cargs);
                // SAFETY: leaving the forked child without running the parent's destructors.
                unsafe { libc::_exit(127) }
            }
            Ok(ForkResult::Parent { child }) => child,
            Err(e) => return Err(HookError::CannotLaunch { program: program.into(), reason: e.to_string() }),
        };
        let cannot = |reason: String| HookError::CannotLaunch { program: program.into(), reason };
        match waitpid(child, None) {
            Ok(WaitStatus::Stopped(_, Signal::SIGTRAP)) => {}
            Ok(other) => return Err(cannot(format!("it did not start ({other:?}); is it an x86-64 ELF program?"))),
            Err(e) => return Err(cannot(e.to_string())),
        }
        run_to_entry(child).map_err(|e| {
            let _ = nix::sys::signal::kill(child, Signal::SIGKILL);
            let _ = waitpid(child, None);
            cannot(e)
        })?;
        Ok(child.as_raw())
    }

    /// Runs the exec-stopped `child` to its entry point (a breakpoint there, then removed).
    fn run_to_entry(child: Pid) -> Result<(), String> {
        let pid = child.as_raw();
        let auxv = std::fs::read(format!("/proc/{pid}/auxv")).map_err(|e| e.to_string())?;
        let entry = auxv
            .chunks_exact(16)
            .map(|c| (u64::from_le_bytes(c[..8].try_into().expect("8")), u64::from_le_bytes(c[8..].try_into().expect("8"))))
            .find(|&(k, _)| k == libc::AT_ENTRY)
            .map(|(_, v)| v)
            .ok_or("no AT_ENTRY in auxv")?;
        let mut original = [0u8; 1];
        let mem = std::fs::OpenOptions::new().read(true).write(true).open(format!("/proc/{pid}/mem")).map_err(|e| e.to_string())?;
        use std::os::unix::fs::FileExt;
        mem.read_exact_at(&mut original, entry).map_err(|e| e.to_string())?;
        mem.write_all_at(&[0xcc], entry).map_err(|e| e.to_string())?;
        ptrace::cont(child, None).map_err(|e| e.to_string())?;
        match waitpid(child, None) {
            Ok(WaitStatus::Stopped(_, Signal::SIGTRAP)) => {}
            other => return Err(format!("did not reach its entry point ({other:?})")),
        }
        mem.write_all_at(&original, entry).map_err(|e| e.to_string())?;
        let mut regs = ptrace::getregs(child).map_err(|e| e.to_string())?;
        regs.rip = entry;
        ptrace::setregs(child, regs).map_err(|e| e.to_string())
    }
}
