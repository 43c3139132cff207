//! The process an interceptor changes: its memory, its threads and its modules. Hooks in this
//! process use [`ThisProcess`]; the remote policy implements the same trait for another one.

use crate::elf::ElfModule;
use crate::{threads, HookError};
use rewire_mem::{AddressSpace, InProcess, Mapping, Memory, Protection, TrampolineSpace};
use std::collections::HashMap;
use std::ffi::CString;
use std::ops::Range;
use std::sync::{Arc, Mutex};

/// Threads parked while code is changed; they resume when this value is dropped.
pub trait Stopped {
    /// Offers each parked thread's program counter to `relocate`, which may return a new one.
    fn move_pcs(&mut self, relocate: &mut dyn FnMut(u64) -> Option<u64>);
    /// True when no other thread of the process can run until this value is dropped.
    fn exclusive(&self) -> bool;
}

/// The process whose code is changed.
pub trait Process: Send + Sync + 'static {
    /// Its memory.
    fn memory(&self) -> &Arc<dyn Memory>;
    /// The trampoline space all interceptors of the process share ([`rewire_mem::Sharing::Shared`]).
    fn shared_space(&self) -> Arc<TrampolineSpace>;
    /// Parks every thread but the caller's that could execute in `windows`.
    fn stop_threads(&self, windows: &[Range<u64>]) -> Result<Box<dyn Stopped>, HookError>;
    /// Writes `bytes` over code at `addr` (pages of protection `prot`) while threads are
    /// parked; `exclusive` when no other thread can run (any write order is then safe).
    fn patch_code(&self, addr: u64, bytes: &[u8], prot: Protection, exclusive: bool) -> Result<(), HookError>;
    /// Where callers of `symbol` in `module` arrive (indirect functions resolved).
    fn resolve(&self, module: &str, symbol: &str) -> Result<u64, HookError>;
    /// The module index of this process.
    fn modules(&self) -> &ModuleIndex;
}

/// This process.
pub struct ThisProcess {
    memory: Arc<dyn Memory>,
    modules: ModuleIndex,
}

impl ThisProcess {
    /// The process this code runs in.
    pub fn new() -> ThisProcess {
        ThisProcess { memory: Arc::new(InProcess::new()), modules: ModuleIndex::default() }
    }
}

impl Default for ThisProcess {
    fn default() -> Self {
        Self::new()
    }
}

impl Stopped for threads::StoppedThreads {
    fn move_pcs(&mut self, relocate: &mut dyn FnMut(u64) -> Option<u64>) {
        threads::StoppedThreads::move_pcs(self, relocate)
    }

    fn exclusive(&self) -> bool {
        threads::StoppedThreads::exclusive(self)
    }
}

impl Process for ThisProcess {
    fn memory(&self) -> &Arc<dyn Memory> {
        &self.memory
    }

    fn shared_space(&self) -> Arc<TrampolineSpace> {
        TrampolineSpace::shared_in_process()
    }

    fn stop_threads(&self, windows: &[Range<u64>]) -> Result<Box<dyn Stopped>, HookError> {
        Ok(Box::new(threads::StoppedThreads::stop_others(windows)?))
    }

    fn patch_code(&self, addr: u64, bytes: &[u8], prot: Protection, exclusive: bool) -> Result<(), HookError> {
        match exclusive {
            // One write through /proc/self/mem: nothing can run the bytes meanwhile.
            true => Ok(self.memory.write(addr, bytes)?),
            false => crate::patch::write_code(&*self.memory, addr, bytes, prot),
        }
    }

    fn resolve(&self, module: &str, symbol: &str) -> Result<u64, HookError> {
        let mapping = self.modules.module(&*self.memory, module)?;
        // The dynamic linker knows where callers arrive, indirect functions included.
        if let (Ok(m), Ok(s)) = (CString::new(mapping.path.as_str()), CString::new(symbol)) {
            // SAFETY: RTLD_NOLOAD only returns a handle to a module that is already loaded (it
            // runs no constructor); dlsym reads the symbol tables; the handle is released.
            unsafe {
                let handle = libc::dlopen(m.as_ptr(), libc::RTLD_NOLOAD | libc::RTLD_LAZY);
                if !handle.is_null() {
                    let addr = libc::dlsym(handle, s.as_ptr());
                    libc::dlclose(handle);
                    if !addr.is_null() {
                        return Ok(addr as u64);
                    }
                }
            }
        }
        self.modules.resolve_from_file(&*self.memory, module, symbol)
    }

    fn modules(&self) -> &ModuleIndex {
        &self.modules
    }
}

/// What is known of a process's modules: a cached address-space map and the ELF index of
/// each module file, read once.
#[derive(Debug, Default)]
pub struct ModuleIndex {
    /// The process (`None`: this one), for its executable's path.
    pid: Option<i32>,
    maps: Mutex<Option<Arc<AddressSpace>>>,
    files: Mutex<HashMap<String, Arc<ElfModule>>>,
}

impl ModuleIndex {
    /// The index of process `pid`'s modules.
    pub fn for_process(pid: i32) -> ModuleIndex {
        ModuleIndex { pid: Some(pid), ..ModuleIndex::default() }
    }

    /// The cached map, read when absent or when `fresh` is set.
    pub fn maps(&self, memory: &dyn Memory, fresh: bool) -> Result<Arc<AddressSpace>, HookError> {
        let mut cached = self.maps.lock().unwrap_or_else(|p| p.into_inner());
        match &*cached {
            Some(m) if !fresh => Ok(m.clone()),
            _ => {
                let m = Arc::new(memory.address_space()?);
                *cached = Some(m.clone());
                Ok(m)
            }
        }
    }

    /// The mapping containing `addr`, re-reading the map when the cached one does not show it
    /// as executable (it may be new, or changed).
    pub fn code_mapping(&self, memory: &dyn Memory, addr: u64) -> Result<Mapping, HookError> {
        if let Some(m) = self.maps(memory, false)?.find(addr).filter(|m| m.prot.exec) {
            return Ok(m.clone());
        }
        match self.maps(memory, true)?.find(addr) {
            None => Err(HookError::Unmapped(addr)),
            Some(m) if !m.prot.exec => Err(HookError::NotExecutable(addr)),
            Some(m) => Ok(m.clone()),
        }
    }

    /// The ELF index of the module file at `path`.
    pub fn file(&self, path: &str) -> Result<Arc<ElfModule>, HookError> {
        if let Some(f) = self.files.lock().unwrap_or_else(|p| p.into_inner()).get(path) {
            return Ok(f.clone());
        }
        let f = Arc::new(ElfModule::open(path)?);
        self.files.lock().unwrap_or_else(|p| p.into_inner()).insert(path.to_string(), f.clone());
        Ok(f)
    }

    /// The first mapping of the loaded module named `name`: its path, or its file name
    /// (`libc.so.6`); the empty name is the main program.
    pub fn module(&self, memory: &dyn Memory, name: &str) -> Result<Mapping, HookError> {
        let exe_link = self.pid.map_or_else(|| "/proc/self/exe".to_string(), |p| format!("/proc/{p}/exe"));
        let exe = if name.is_empty() { std::fs::read_link(exe_link).ok().map(|p| p.to_string_lossy().into_owned()) } else { None };
        let wanted = |m: &&Mapping| match &exe {
            Some(exe) => m.path == *exe,
            None => m.path == name || m.path.rsplit('/').next() == Some(name),
        };
        for fresh in [false, true] {
            let maps = self.maps(memory, fresh)?;
            if let Some(m) = maps.mappings.iter().find(wanted) {
                return Ok(m.clone());
            }
            // A soname such as `libz.so.1` is often a link to the file the map shows.
            if exe.is_none() && !name.contains('/') {
                let linked = |m: &&Mapping| {
                    let dir = std::path::Path::new(&m.path).parent();
                    dir.and_then(|d| std::fs::canonicalize(d.join(name)).ok()).is_some_and(|p| p.as_os_str() == m.path.as_str())
                };
                if let Some(m) = maps.mappings.iter().filter(|m| m.offset == 0 && m.path.starts_with('/')).find(linked) {
                    return Ok(m.clone());
                }
            }
        }
        Err(HookError::ModuleNotFound(name.to_string()))
    }

    /// Load base of the module mapped from `path` (0 for a fixed-address executable).
    pub fn load_base(&self, memory: &dyn Memory, path: &str) -> Result<u64, HookError> {
        let file = self.file(path)?;
        base_in(&*self.maps(memory, false)?, &file, path).ok_or_else(|| HookError::ModuleNotFound(path.to_string()))
    }

    /// Address of an exported function, from the module's file and load base.
    pub fn resolve_from_file(&self, memory: &dyn Memory, module: &str, symbol: &str) -> Result<u64, HookError> {
        self.resolve_export(memory, module, symbol).map(|(addr, _)| addr)
    }

    /// Address of an exported function and whether it is an indirect function (its address
    /// is then the resolver's).
    pub fn resolve_export(&self, memory: &dyn Memory, module: &str, symbol: &str) -> Result<(u64, bool), HookError> {
        let mapping = self.module(memory, module)?;
        let file = self.file(&mapping.path)?;
        let base = self.load_base(memory, &mapping.path)?;
        match file.export(symbol) {
            Some(e) => Ok((base + e.addr, e.ifunc)),
            None => Err(HookError::SymbolNotFound {
                module: module.to_string(),
                symbol: symbol.to_string(),
                similar: file.similar_names(symbol),
            }),
        }
    }

    /// The extent of the function containing `addr`, from its module's symbols, if known.
    pub fn function_extent(&self, memory: &dyn Memory, addr: u64) -> Option<Range<u64>> {
        let maps = self.maps(memory, false).ok()?;
        let mapping = maps.find(addr)?;
        if !mapping.path.starts_with('/') {
            return None;
        }
        let file = self.file(&mapping.path).ok()?;
        let base = base_in(&maps, &file, &mapping.path)?;
        let r = file.function_containing(addr - base)?;
        Some(r.start + base..r.end + base)
    }
}

/// Load base of `file`, mapped from `path` in `maps` (0 for a fixed-address executable).
fn base_in(maps: &AddressSpace, file: &ElfModule, path: &str) -> Option<u64> {
    if !file.relocatable {
        return Some(0);
    }
    let first = maps.mappings.iter().filter(|m| m.path == path).map(|m| m.range.start - m.offset).min()?;
    Some(first - file.first_vaddr)
}
