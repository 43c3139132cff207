//! The engine's shared state: the cache and its fragments, the program's executable regions,
//! watched code pages and modules, the tool, the thread contexts and the counters, under
//! one lock. Building a fragment (decode, show the tool, translate, commit, register) and
//! invalidating code happen here.

use crate::arch::context::{ThreadCtx, COUNTER_BYTES};
use crate::arch::heap;
use crate::cache::{CodeCache, FragId, FragmentKind, Fragments};
use crate::engine::fork_server::options::ForkServerOptions;
use crate::engine::fork_server::persistent::Persistent;
use crate::engine::fork_server::report::BuiltBlocks;
use crate::engine::options::EngineOptions;
use crate::engine::stats::{start_timing, Stats};
use crate::engine::traces::{keep_insertions, Recording, TraceStats};
use crate::os::brk::Brk;
use crate::os::code_writes::CodeWrites;
use crate::os::modules::{self, Modules};
use crate::os::program_maps::ProgramMaps;
use crate::os::regions::ExecRegions;
use crate::os::report::report;
use crate::tool::{BlockView, CallSite, Instrument, NullTool, Tool};
use crate::translate::{self, BuildOptions, Decoded, ExitKind, ExitRecord, Insertions};
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::ffi::CString;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

/// Invalidated fragments and the threads (context, dispatch count) that were in the cache
/// when they were invalidated.
pub type Limbo = (Vec<FragId>, Vec<(u64, u64)>);

/// Everything the dispatcher needs, shared by all threads under one lock.
#[derive(Debug)]
pub struct Engine {
    /// The fragments.
    pub frags: Fragments,
    /// The cache memory.
    pub cache: CodeCache,
    /// Where the application may execute.
    pub exec: ExecRegions,
    /// Options.
    pub opts: EngineOptions,
    /// Counters.
    pub stats: Stats,
    /// The program's emulated brk.
    pub brk: Brk,
    /// The mappings the program made (what it sees of `/proc/self/maps`).
    pub maps: ProgramMaps,
    /// The program's path, for `/proc/self/exe`.
    pub exe: CString,
    /// rewire's own executable, to follow `execve`.
    pub rewire_exe: CString,
    /// The thread contexts (GS bases).
    pub contexts: Vec<u64>,
    /// The tool.
    pub tool: Box<dyn Tool>,
    /// The program's modules.
    pub modules: Modules,
    /// Next free byte of the per-thread counter areas.
    pub next_counter: u32,
    /// Invalidated fragments waiting until no thread can be inside them: the fragments, and
    /// the threads that were in the cache then with their dispatch counts.
    pub limbo: Vec<Limbo>,
    /// Counter totals of threads that exited.
    pub exited_counters: Vec<u64>,
    /// The tool's clean calls, by site number.
    pub call_sites: Vec<Arc<CallSite>>,
    /// Writable code pages the engine watches.
    pub code_writes: CodeWrites,
    /// Traces being recorded, by thread context.
    pub recordings: FxHashMap<u64, Recording>,
    /// Recording copies of blocks, by tag.
    pub recording_copies: FxHashMap<u64, FragId>,
    /// Tool insertions of the blocks that have any, for the traces the blocks join.
    pub kept_insertions: FxHashMap<u64, Insertions>,
    /// Trace counters.
    pub trace_stats: TraceStats,
    /// The fork server still to start, and where (`-t afl`).
    pub fork_server: Option<ForkServerOptions>,
    /// The application address the fork server starts at.
    pub fork_server_at: u64,
    /// In a fork server's child: where the blocks it builds are reported.
    pub built_blocks: Option<BuiltBlocks>,
    /// Blocks whose every run enters the dispatcher first (never part of a trace).
    pub watched: Vec<u64>,
    /// The fork server's persistent loop, when asked for.
    pub persistent: Option<Persistent>,
    /// The counter a tool's edge coverage keeps its `prev` in, once a block has one.
    pub edge_prev: Option<u32>,
    workspace: translate::Workspace,
    /// Decoded blocks, reused by every build (one per block of the largest trace so far).
    decoded: Vec<Decoded>,
}

static ENGINE: OnceLock<Mutex<Engine>> = OnceLock::new();

/// Why no fragment could be had for an address.
#[derive(Debug)]
pub enum NoFragment {
    /// The address is not in executable memory of the program.
    NotExecutable,
    /// The code cache could not grow.
    CacheFull(String),
}

impl Engine {
    /// A fresh engine.
    pub fn new(cache: CodeCache, exec: ExecRegions, opts: EngineOptions, brk: Brk, exe: CString, rewire_exe: CString) -> Engine {
        Engine {
            frags: Fragments::new(!opts.no_link),
            cache,
            exec,
            opts,
            stats: Stats::default(),
            brk,
            maps: ProgramMaps::default(),
            exe,
            rewire_exe,
            contexts: Vec::new(),
            tool: Box::new(NullTool),
            modules: Modules::default(),
            next_counter: 0,
            exited_counters: Vec::new(),
            limbo: Vec::new(),
            call_sites: Vec::new(),
            code_writes: CodeWrites::default(),
            recordings: FxHashMap::default(),
            recording_copies: FxHashMap::default(),
            kept_insertions: FxHashMap::default(),
            trace_stats: TraceStats::default(),
            fork_server: None,
            fork_server_at: 0,
            built_blocks: None,
            watched: Vec::new(),
            persistent: None,
            edge_prev: None,
            workspace: translate::Workspace::default(),
            decoded: Vec::new(),
        }
    }

    /// Installs the engine for the process.
    pub fn install(self) {
        if self.opts.stats {
            start_timing();
        }
        ENGINE.set(Mutex::new(self)).expect("one engine per process");
    }

    /// The fragment for application address `tag`, built if needed.
    pub fn fragment_for(&mut self, tag: u64) -> Result<FragId, NoFragment> {
        match self.frags.lookup(tag) {
            Some(id) => Ok(id),
            None => self.build(&[tag], FragmentKind::Block),
        }
    }

    /// The recording copy of the block at `tag` (its block is built first, so that the
    /// tool has seen it).
    pub fn recording_copy(&mut self, tag: u64) -> Result<FragId, NoFragment> {
        if let Some(&id) = self.recording_copies.get(&tag) {
            if self.frags.get(id).live {
                return Ok(id);
            }
        }
        self.fragment_for(tag)?;
        let id = self.build(&[tag], FragmentKind::Recording)?;
        self.recording_copies.insert(tag, id);
        Ok(id)
    }

    /// Stitches the blocks at `tags` (in the order a thread ran them) into a trace that
    /// takes the place of the first one's block.
    pub fn build_trace(&mut self, tags: &[u64]) -> Result<FragId, NoFragment> {
        self.build(tags, FragmentKind::Trace)
    }

    /// Decodes and translates the blocks at `tags` into one fragment of `kind`.
    fn build(&mut self, tags: &[u64], kind: FragmentKind) -> Result<FragId, NoFragment> {
        let mut decoded = std::mem::take(&mut self.decoded);
        if decoded.len() < tags.len() {
            decoded.resize_with(tags.len(), Decoded::default);
        }
        let built = self.build_from(tags, kind, &mut decoded[..tags.len()]);
        self.decoded = decoded;
        built
    }

    /// `build`, decoding into `decoded` (one per tag).
    fn build_from(&mut self, tags: &[u64], kind: FragmentKind, decoded: &mut [Decoded]) -> Result<FragId, NoFragment> {
        let tag = tags[0];
        let started = self.opts.stats.then(Instant::now);
        let mut codes: SmallVec<[&[u8]; 1]> = SmallVec::with_capacity(tags.len());
        for (d, &t) in decoded.iter_mut().zip(tags) {
            let end = self.exec.end_of(t).ok_or(NoFragment::NotExecutable)?;
            let len = (end - t).min(2048) as usize;
            // Writable code is write-protected before it is read: a write from another thread
            // after this point faults and invalidates what is built from it (protecting it
            // after the build would miss a write made meanwhile).
            self.code_writes.watch(t..t + len as u64);
            // SAFETY: [t, end) is executable memory of the program (tracked from its own
            // mapping calls), hence mapped and readable; only read here.
            let code = unsafe { std::slice::from_raw_parts(t as *const u8, len) };
            d.decode(t, code);
            codes.push(code);
        }
        let decoded = &*decoded;
        let (first, code) = (&decoded[0], codes[0]);
        let len = code.len() as u64;
        let mut insertions: SmallVec<[Insertions; 1]> = SmallVec::with_capacity(tags.len());
        if kind == FragmentKind::Block {
            insertions.push(self.instrument(first));
            if let Some(edge) = insertions[0].edge {
                self.edge_prev = Some(edge.prev);
            }
        } else {
            for d in decoded {
                insertions.push(self.kept_insertions.get(&d.tag).cloned().unwrap_or_default());
            }
        }
        // After the tool took its counters: trace-head counters come after them.
        let traces = self.opts.traces.enabled && !self.opts.no_link;
        let opts = BuildOptions {
            count_ibl: self.opts.stats,
            verify: kind == FragmentKind::Block && self.code_writes.must_verify(tag..tag + len),
            watched: kind == FragmentKind::Block && self.watched.contains(&tag),
            trace_threshold: if traces { self.opts.traces.threshold } else { 0 },
            counters: (self.next_counter, COUNTER_BYTES as u32),
            record: kind == FragmentKind::Recording,
            trace: kind == FragmentKind::Trace,
        };
        let sources: SmallVec<[translate::Source<'_>; 1]> = decoded
            .iter()
            .zip(&codes)
            .zip(&insertions)
            .map(|((d, code), ins)| translate::Source { decoded: d, code, insertions: ins })
            .collect();
        let mut want = 2048 * tags.len();
        let (place, t) = loop {
            let place = self.cache.place(tag, want).map_err(|e| NoFragment::CacheFull(e.to_string()))?;
            let t = translate::translate_parts(&sources, place.addr, opts, &mut self.workspace);
            if CodeCache::fits(&place, t.code_len) {
                break (place, t);
            }
            want = t.code_len;
        };
        if t.code_len > u16::MAX as usize {
            return Err(NoFragment::CacheFull(format!("a fragment of {} bytes", t.code_len)));
        }
        self.cache.commit(place, self.workspace.code());
        self.next_counter += 8 * t.counters;
        if kind == FragmentKind::Block {
            if let Some(built) = &mut self.built_blocks {
                built.push(tag);
            }
            self.stats.blocks += 1;
            self.stats.app_insns += t.insns as u64;
            keep_insertions(&mut self.kept_insertions, tag, &insertions[0]);
        }
        self.stats.cache_code += t.code_len as u64;
        if self.opts.verbose {
            report(&format!(
                "{} {tag:#x} ({}): {} instructions in {} block(s) -> {:#x}, {} bytes",
                match kind {
                    FragmentKind::Block => "block",
                    FragmentKind::Trace => "trace",
                    FragmentKind::Recording => "recording copy",
                },
                modules::describe(tag),
                t.insns,
                tags.len(),
                place.addr,
                t.code_len
            ));
        }
        let app_len = t.app_len as usize;
        let id = self.frags.add(&mut self.cache, tag, place.addr, t, self.workspace.map(), kind);
        if opts.verify {
            self.frags.set_built_from(id, &code[..app_len.min(code.len())]);
        }
        heap::populate_growth();
        if let Some(t) = started {
            match kind {
                FragmentKind::Block => self.stats.build_time += t.elapsed(),
                FragmentKind::Trace | FragmentKind::Recording => self.trace_stats.build_time += t.elapsed(),
            }
        }
        Ok(id)
    }

    /// Shows a new block to the tool and collects what it inserts.
    fn instrument(&mut self, decoded: &Decoded) -> Insertions {
        let mut ins = Insertions::default();
        let Engine { modules, tool, next_counter, exec, call_sites, .. } = self;
        let tag = decoded.tag;
        let (segment, new) = if tool.wants_modules() { modules.segment_of(tag, exec.generation()) } else { (None, &[][..]) };
        for s in new {
            tool.on_module_load(s);
        }
        let view = BlockView { tag, insns: &decoded.insns, segment };
        let mut calls = Vec::new();
        tool.on_block(
            &view,
            &mut Instrument { adds: &mut ins.adds, edge: &mut ins.edge, calls: &mut calls, insns: &decoded.insns, next_counter },
        );
        for (before, site) in calls {
            ins.calls.push((before, call_sites.len() as u32));
            call_sites.push(Arc::new(site));
        }
        ins
    }

    /// Forgets the fragments of application code in `range` (after it was unmapped or
    /// lost execute permission) and removes them from every thread's lookup table (emptying
    /// whole tables cost a megabyte of stores per thread for each code write of a JIT).
    pub fn invalidate(&mut self, range: std::ops::Range<u64>) {
        for s in self.modules.forget(range.clone()) {
            self.tool.on_module_unload(&s);
        }
        let doomed = self.frags.invalidate(&mut self.cache, range);
        if doomed.is_empty() {
            return;
        }
        let mut inside = Vec::new();
        for &c in &self.contexts {
            // SAFETY: every registered context is a live ThreadCtx. Clearing only tags is
            // safe while its thread runs a lookup (see `ibl_forget`).
            let ctx = unsafe { &mut *(c as *mut ThreadCtx) };
            for &id in &doomed {
                ctx.ibl_forget(self.frags.get(id).tag);
            }
            let (dispatches, in_cache) = ctx.progress();
            if in_cache {
                inside.push((c, dispatches));
            }
        }
        self.limbo.push((doomed, inside));
    }

    /// Reclaims invalidated fragments no thread can be inside any more: every thread that
    /// was in the cache when they were invalidated has come back to the dispatcher since (or
    /// exited).
    pub(crate) fn reclaim(&mut self) {
        let contexts = &self.contexts;
        let done = |waiting: &Vec<(u64, u64)>| {
            waiting.iter().all(|&(c, seen)| {
                // SAFETY: a registered context is live (exited ones leave the list first).
                !contexts.contains(&c) || unsafe { &*(c as *const ThreadCtx) }.progress().0 > seen
            })
        };
        let (ready, waiting): (Vec<_>, Vec<_>) = std::mem::take(&mut self.limbo).into_iter().partition(|(_, w)| done(w));
        self.limbo = waiting;
        for (ids, _) in ready {
            self.frags.reclaim(&mut self.cache, &ids);
        }
    }
}

/// The exit record signal handlers send threads into the dispatcher with (a static: a
/// handler must not allocate).
static REDIRECT: ExitRecord = ExitRecord::unattached(ExitKind::Redirect, 0);

/// The address of [`REDIRECT`].
pub fn redirect_record() -> u64 {
    REDIRECT.address()
}

/// The engine under its lock: the guard also records which thread holds it, so that the
/// end of the process can tell whether waiting for the lock would wait for itself.
#[derive(Debug)]
pub struct EngineGuard(Option<MutexGuard<'static, Engine>>);

impl std::ops::Deref for EngineGuard {
    type Target = Engine;
    fn deref(&self) -> &Engine {
        self.0.as_ref().expect("held until dropped")
    }
}

impl std::ops::DerefMut for EngineGuard {
    fn deref_mut(&mut self) -> &mut Engine {
        self.0.as_mut().expect("held until dropped")
    }
}

impl Drop for EngineGuard {
    fn drop(&mut self) {
        // Unlocked first, then no longer held: a signal in between finds the flag still set
        // and does not wait for a lock that is free (nor, the other way round, for itself).
        drop(self.0.take());
        HOLDING.with(|h| h.set(false));
    }
}

thread_local! {
    /// True from just before this thread takes the engine's lock until just after it lets
    /// it go: a signal handler that interrupts it there must not wait for the lock.
    static HOLDING: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// Takes the lock with `take`, the thread marked as holding it throughout.
fn lock_with(take: impl FnOnce(&'static Mutex<Engine>) -> Option<MutexGuard<'static, Engine>>) -> Option<EngineGuard> {
    let engine = ENGINE.get()?;
    // A signal handler that tries for the lock may have interrupted this thread holding it.
    let was = HOLDING.with(|h| h.replace(true));
    let guard = take(engine);
    if guard.is_none() {
        HOLDING.with(|h| h.set(was));
    }
    guard.map(|g| EngineGuard(Some(g)))
}

/// The engine, locked.
pub fn engine() -> EngineGuard {
    installed_engine().expect("engine installed before the first dispatch")
}

/// The engine, if it is installed and not locked (for signal handlers).
pub fn try_engine() -> Option<EngineGuard> {
    lock_with(|m| m.try_lock().ok())
}

/// The engine, locked, if it is installed.
pub fn installed_engine() -> Option<EngineGuard> {
    lock_with(|m| Some(m.lock().unwrap_or_else(|p| p.into_inner())))
}

/// Whether the calling thread holds the engine's lock, or is taking or letting it go (it
/// stopped in the middle of a change, and waiting for the lock would wait for itself).
pub fn held_here() -> bool {
    HOLDING.with(|h| h.get())
}
