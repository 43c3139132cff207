//! The Interceptor: installs, stacks, enables, disables and removes hooks.
//!
//! A hooked target starts with a 5-byte `jmp rel32` to its *site* slot, within ±2 GiB:
//!
//! ```text
//! target:     jmp site                         (the rest of the window keeps its bytes)
//! site+0:     jmp entry (rel32), or jmp [rip+2]; int3; int3; .quad entry when out of reach
//!                                              entry = newest enabled detour, or site+16
//! site+16:    relocated window; jmp target+window
//! ```
//!
//! Every further hook on the same target gets a 16-byte *stub* (`jmp [ptr]`) as its
//! trampoline; the stub points at the next older enabled hook's detour, or at the relocated
//! original. Stacking, enabling and disabling therefore re-point 8-byte cells with atomic
//! stores and never touch the target. Only the first hook on a target patches it, and only
//! the removal of its last hook restores it; both park the threads that could be executing
//! the bytes concerned (see `threads`) and move any thread inside them to the equivalent
//! place, as Detours does.

use crate::plan::{plan, Plan};
use crate::process::{Process, ThisProcess};
use crate::HookError;
use rewire_mem::{MemError, Protection, Sharing, Slot, TrampolineSpace};
use rewire_x86::emit::{indirect_jmp_stub, jmp_abs, jmp_rel32, INDIRECT_STUB_LEN, INDIRECT_STUB_PTR, JMP_ABS_LEN, JMP_REL32_LEN};
use rewire_x86::Relocated;
use std::collections::BTreeMap;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

/// Longest stretch of a function read to look for branches back into the patched bytes.
const MAX_SCAN: u64 = 64 << 10;
/// Slot size tried first for a site: the entry thunk, a typical relocated window and the
/// jump back fit in 32 bytes; larger ones move to a bigger slot.
const SITE_SLOT: usize = 32;
/// Bytes read after the target when the function's extent is unknown.
const UNKNOWN_EXTENT_READ: u64 = 4096;

/// Identity of a hook within its engine.
type HookId = u64;

/// The hooks of one process: shared by every interceptor of that process, so hooks placed on
/// the same target by different interceptors stack instead of patching twice.
pub(crate) struct Engine {
    pub(crate) process: Arc<dyn Process>,
    state: Mutex<State>,
    /// Threads moved out of (or into) patched bytes so far.
    threads_moved: std::sync::atomic::AtomicU64,
}

#[derive(Default)]
struct State {
    sites: BTreeMap<u64, Site>,
    hooks: BTreeMap<HookId, HookRecord>,
    next_id: HookId,
}

struct Site {
    slot: Slot,
    space: Arc<TrampolineSpace>,
    /// The bytes the patch replaced.
    original: Vec<u8>,
    /// All bytes of the window (the patch and the rest of the instructions it cuts into).
    window_bytes: Vec<u8>,
    /// The patched instructions' extent (at least the patch).
    window: Range<u64>,
    relocated: Relocated,
    prot: Protection,
    /// Hooks, oldest first.
    chain: Vec<HookId>,
}

impl Site {
    fn target(&self) -> u64 {
        self.window.start
    }

    /// Where the relocated original begins.
    fn original_entry(&self) -> u64 {
        self.slot.addr + INDIRECT_STUB_LEN as u64
    }

    fn code_range(&self) -> Range<u64> {
        self.slot.addr..self.original_entry() + self.relocated.code.len() as u64
    }

    /// Where a thread at `pc` in the patched window continues in the relocated copy.
    fn moved_into_trampoline(&self, pc: u64) -> Option<u64> {
        if pc == self.target() || !self.window.contains(&pc) {
            return None;
        }
        let offset = self.relocated.map.iter().find(|(_, orig)| *orig == pc)?.0;
        Some(self.original_entry() + offset as u64)
    }

    /// Where a thread at `pc` in this site's slot continues once the original is restored.
    fn back_from_trampoline(&self, pc: u64) -> Option<u64> {
        if !self.code_range().contains(&pc) {
            return None;
        }
        match pc.checked_sub(self.original_entry()) {
            None => Some(self.target()),
            Some(offset) => self.relocated.original_at(offset as u32),
        }
    }
}

struct HookRecord {
    target: u64,
    detour: u64,
    enabled: bool,
    /// The trampoline of every hook but the first on a site.
    stub: Option<(Slot, Arc<TrampolineSpace>)>,
    /// Code the detour is made of, released with the hook (a probe's stub).
    detour_slot: Option<(Slot, Arc<TrampolineSpace>)>,
}

impl HookRecord {
    /// Returns the hook's slots to their space (they stay intact through the quarantine).
    fn release(self) {
        for (slot, space) in [self.stub, self.detour_slot].into_iter().flatten() {
            space.free(slot);
        }
    }
}

impl Engine {
    fn this_process() -> Arc<Engine> {
        static THIS: OnceLock<Arc<Engine>> = OnceLock::new();
        THIS.get_or_init(|| Engine::new(Arc::new(ThisProcess::new()))).clone()
    }

    pub(crate) fn new(process: Arc<dyn Process>) -> Arc<Engine> {
        Arc::new(Engine { process, state: Mutex::new(State::default()), threads_moved: Default::default() })
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn trampoline_of(&self, state: &State, id: HookId) -> Option<u64> {
        let h = state.hooks.get(&id)?;
        Some(match &h.stub {
            Some((slot, _)) => slot.addr,
            None => state.sites.get(&h.target)?.original_entry(),
        })
    }
}

/// Points every stub of `site`'s chain, and its entry, at the right continuation. Written
/// oldest first, so each pointer stored leads to code that is already consistent.
fn relink<'a>(site: &Site, hooks: impl Fn(HookId) -> Option<&'a HookRecord>) {
    let mut next = site.original_entry();
    for &id in &site.chain {
        let Some(h) = hooks(id) else { continue };
        if let Some((stub, _)) = &h.stub {
            stub.store_u64(INDIRECT_STUB_PTR, next);
        }
        if h.enabled {
            next = h.detour;
        }
    }
    point_entry(&site.slot, next);
}

/// Points a site's entry thunk at `to`: a direct `jmp rel32` when in reach (no indirect
/// jump on the hot path), else `jmp [rip+2]` through the pointer cell. The thunk's first 8
/// bytes change with one atomic store, after the pointer cell is written.
fn point_entry(slot: &Slot, to: u64) {
    slot.store_u64(INDIRECT_STUB_PTR, to);
    let head = match jmp_rel32(slot.addr, to) {
        Some(j) => [j[0], j[1], j[2], j[3], j[4], 0xcc, 0xcc, 0xcc],
        None => indirect_jmp_stub(to)[..8].try_into().expect("8 bytes"),
    };
    slot.store_u64(0, u64::from_le_bytes(head));
}

/// Installs hooks (Detours style) in a process. Interceptors of one process share its hooks;
/// each owns trampoline space according to its [`Sharing`] policy.
#[derive(Clone)]
pub struct Interceptor {
    engine: Arc<Engine>,
    space: Arc<TrampolineSpace>,
}

impl std::fmt::Debug for Interceptor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Interceptor").field("space", &self.space).finish()
    }
}

impl Default for Interceptor {
    fn default() -> Self {
        Interceptor::new()
    }
}

impl Interceptor {
    /// An interceptor for this process with the process-wide shared trampoline space.
    pub fn new() -> Interceptor {
        Interceptor::with_sharing(Sharing::Shared)
    }

    /// An interceptor for this process with the given sharing policy.
    pub fn with_sharing(sharing: Sharing) -> Interceptor {
        Interceptor::for_engine(Engine::this_process(), sharing)
    }

    /// An interceptor for `process` (another process, through its policy).
    pub fn for_process(process: Arc<dyn Process>, sharing: Sharing) -> Interceptor {
        Interceptor::for_engine(Engine::new(process), sharing)
    }

    /// Another interceptor of the same process, with its own sharing policy.
    pub fn sibling(&self, sharing: Sharing) -> Interceptor {
        Interceptor::for_engine(self.engine.clone(), sharing)
    }

    fn for_engine(engine: Arc<Engine>, sharing: Sharing) -> Interceptor {
        let space = match sharing {
            Sharing::Shared => engine.process.shared_space(),
            Sharing::Unique => TrampolineSpace::new(engine.process.memory().clone()),
        };
        Interceptor { engine, space }
    }

    /// The trampoline space this interceptor allocates from.
    pub fn space(&self) -> &Arc<TrampolineSpace> {
        &self.space
    }

    /// The process this interceptor changes.
    pub fn process(&self) -> &Arc<dyn Process> {
        &self.engine.process
    }

    /// Hooks `target`: calls to it go to `detour`, which reaches the original through
    /// [`Hook::trampoline`]. Hooks on one target stack, the newest running first.
    ///
    /// # Safety
    /// `detour` must be a function with the target's signature and calling convention, and
    /// replacing the target must not break code that relies on it (as with any inline hook).
    pub unsafe fn hook(&self, target: u64, detour: u64) -> Result<Hook, HookError> {
        let mut tx = self.transaction();
        // SAFETY: forwarded from the caller.
        unsafe { tx.hook(target, detour) };
        Ok(tx.commit()?.pop().expect("one hook"))
    }

    /// Hooks the function `symbol` of the loaded module `module` (`"libc.so.6"`, a path, or
    /// `""` for the main program).
    ///
    /// # Safety
    /// As for [`Interceptor::hook`].
    pub unsafe fn hook_symbol(&self, module: &str, symbol: &str, detour: u64) -> Result<Hook, HookError> {
        let target = self.resolve(module, symbol)?;
        // SAFETY: forwarded from the caller.
        unsafe { self.hook(target, detour) }
    }

    /// Where calls to `symbol` of `module` arrive.
    pub fn resolve(&self, module: &str, symbol: &str) -> Result<u64, HookError> {
        self.engine.process.resolve(module, symbol)
    }

    /// What is installed at `target`, if it is hooked.
    pub fn site(&self, target: u64) -> Option<SiteInfo> {
        let state = self.engine.lock();
        let site = state.sites.get(&target)?;
        Some(SiteInfo {
            window: site.window.clone(),
            window_bytes: site.window_bytes.clone(),
            patch_len: site.original.len(),
            relocated_at: site.original_entry(),
            relocated: site.relocated.clone(),
            slot: site.slot.addr..site.slot.addr + site.slot.size as u64,
            hooks: site.chain.len(),
        })
    }

    /// How many threads were moved out of bytes being patched (or out of a trampoline being
    /// released) by the interceptors of this process so far.
    pub fn threads_moved(&self) -> u64 {
        self.engine.threads_moved.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Starts a batch of changes applied together by [`Transaction::commit`].
    pub fn transaction(&self) -> Transaction<'_> {
        Transaction { interceptor: self, ops: Vec::new() }
    }

    /// Installs, disabled, a hook whose detour is code in `detour_slot` (released with it;
    /// also on failure).
    pub(crate) fn install_generated(&self, target: u64, detour_slot: Slot) -> Result<Hook, HookError> {
        let mut tx = self.transaction();
        let detour = detour_slot.addr;
        tx.ops.push(Op::Install { target, detour, enabled: false, owned: Some((detour_slot, self.space.clone())) });
        Ok(tx.commit()?.pop().expect("one hook"))
    }
}

/// What an interceptor installed at a hooked target.
#[derive(Debug, Clone)]
pub struct SiteInfo {
    /// The instructions the patch cuts into.
    pub window: Range<u64>,
    /// Their original bytes.
    pub window_bytes: Vec<u8>,
    /// Length of the jump written at the target (5, or 14 when no space was near).
    pub patch_len: usize,
    /// Where their relocated copy lives.
    pub relocated_at: u64,
    /// The relocated copy.
    pub relocated: Relocated,
    /// The trampoline slot (entry thunk and relocated copy).
    pub slot: Range<u64>,
    /// Hooks stacked on the target.
    pub hooks: usize,
}

/// An installed hook. Dropping it removes the hook; [`Hook::leak`] keeps it for good.
#[must_use = "dropping a Hook removes it"]
pub struct Hook {
    engine: Arc<Engine>,
    id: HookId,
    target: u64,
    detour: u64,
    trampoline: u64,
    live: bool,
}

impl std::fmt::Debug for Hook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Hook({:#x} -> {:#x}, original via {:#x})", self.target, self.detour, self.trampoline)
    }
}

impl Hook {
    /// The hooked address.
    pub fn target(&self) -> u64 {
        self.target
    }

    /// The detour calls arrive at.
    pub fn detour(&self) -> u64 {
        self.detour
    }

    /// Address to call for the original behaviour (the next older hook's detour, or the
    /// original function). Stays valid while the hook exists.
    pub fn trampoline(&self) -> u64 {
        self.trampoline
    }

    /// True while calls reach the detour.
    pub fn is_enabled(&self) -> bool {
        self.engine.lock().hooks.get(&self.id).is_some_and(|h| h.enabled)
    }

    /// Routes calls to the detour (again).
    pub fn enable(&self) -> Result<(), HookError> {
        self.set_enabled(true)
    }

    /// Routes calls past the detour, to the next hook or the original.
    pub fn disable(&self) -> Result<(), HookError> {
        self.set_enabled(false)
    }

    fn set_enabled(&self, on: bool) -> Result<(), HookError> {
        let mut state = self.engine.lock();
        let state = &mut *state;
        let h = state.hooks.get_mut(&self.id).ok_or(HookError::Removed)?;
        h.enabled = on;
        relink(&state.sites[&self.target], |id| state.hooks.get(&id));
        Ok(())
    }

    /// Removes the hook; the original bytes come back when it was the target's last one.
    pub fn remove(mut self) -> Result<(), HookError> {
        self.live = false;
        remove_hooks(&self.engine, &[self.id])
    }

    /// Keeps the hook installed for the life of the process.
    pub fn leak(mut self) {
        self.live = false;
    }
}

impl Drop for Hook {
    fn drop(&mut self) {
        if self.live {
            let _ = remove_hooks(&self.engine, &[self.id]);
        }
    }
}

enum Op {
    Install { target: u64, detour: u64, enabled: bool, owned: Option<(Slot, Arc<TrampolineSpace>)> },
    Enable { id: HookId, target: u64, on: bool },
    Remove { id: HookId },
}

/// A batch of installs, enables, disables and removals, applied at once: one stop of the
/// threads, all or nothing.
pub struct Transaction<'a> {
    interceptor: &'a Interceptor,
    ops: Vec<Op>,
}

impl Transaction<'_> {
    /// Adds a hook of `target` to `detour` (returned by [`Transaction::commit`], in order).
    ///
    /// # Safety
    /// As for [`Interceptor::hook`].
    pub unsafe fn hook(&mut self, target: u64, detour: u64) -> &mut Self {
        self.ops.push(Op::Install { target, detour, enabled: true, owned: None });
        self
    }

    /// Adds a hook installed disabled.
    ///
    /// # Safety
    /// As for [`Interceptor::hook`].
    pub unsafe fn hook_disabled(&mut self, target: u64, detour: u64) -> &mut Self {
        self.ops.push(Op::Install { target, detour, enabled: false, owned: None });
        self
    }

    /// Enables `hook` with the batch.
    pub fn enable(&mut self, hook: &Hook) -> &mut Self {
        self.ops.push(Op::Enable { id: hook.id, target: hook.target, on: true });
        self
    }

    /// Disables `hook` with the batch.
    pub fn disable(&mut self, hook: &Hook) -> &mut Self {
        self.ops.push(Op::Enable { id: hook.id, target: hook.target, on: false });
        self
    }

    /// Removes `hook` with the batch.
    pub fn remove(&mut self, mut hook: Hook) -> &mut Self {
        hook.live = false;
        self.ops.push(Op::Remove { id: hook.id });
        self
    }

    /// Applies the batch. On error nothing has changed.
    pub fn commit(self) -> Result<Vec<Hook>, HookError> {
        let interceptor = self.interceptor;
        let engine = &interceptor.engine;
        let mut guard = engine.lock();
        let state = &mut *guard;

        // 1. Prepare: everything that can fail, before any byte of the process changes.
        let mut prepared = Prepared::default();
        for op in self.ops {
            let result = match op {
                Op::Install { target, detour, enabled, owned } => {
                    let result = prepare_install(interceptor, state, &mut prepared, target, detour, enabled, owned.clone());
                    if let (Err(_), Some((slot, space))) = (&result, owned) {
                        space.free(slot);
                    }
                    result
                }
                Op::Enable { id, target, on } if state.hooks.contains_key(&id) => {
                    prepared.toggles.push((id, target, on));
                    Ok(())
                }
                Op::Enable { .. } => Err(HookError::Removed),
                Op::Remove { id } => {
                    prepared.removals.push(id);
                    Ok(())
                }
            };
            if let Err(e) = result {
                prepared.abandon();
                return Err(e);
            }
        }
        let emptied = sites_emptied(state, &prepared.removals);

        // 2. Patch targets with the threads that could run them parked. Everything the parked
        // stretch needs is computed first: nothing may allocate while a thread is parked.
        if !prepared.sites.is_empty() || !emptied.is_empty() {
            for site in &prepared.sites {
                relink(site, |id| prepared.hook(id)); // unreachable until its target is patched
            }
            let patches: Vec<Vec<u8>> = prepared.sites.iter().map(patch_bytes).collect();
            let windows: Vec<Range<u64>> = prepared
                .sites
                .iter()
                .map(|s| s.window.clone())
                .chain(emptied.iter().flat_map(|t| [state.sites[t].window.clone(), state.sites[t].code_range()]))
                .collect();
            let process = &engine.process;
            let mut stopped = match process.stop_threads(&windows) {
                Ok(s) => s,
                Err(e) => {
                    prepared.abandon();
                    return Err(e);
                }
            };
            stopped.move_pcs(&mut |pc| {
                let to = prepared.sites.iter().find_map(|s| s.moved_into_trampoline(pc));
                let to = to.or_else(|| emptied.iter().find_map(|t| state.sites[t].back_from_trampoline(pc)));
                if to.is_some() {
                    engine.threads_moved.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                }
                to
            });
            let mut written = 0;
            let mut failure = None;
            for (site, patch) in prepared.sites.iter().zip(&patches) {
                match process.patch_code(site.target(), patch, site.prot, stopped.exclusive()) {
                    Ok(()) => written += 1,
                    Err(e) => {
                        failure = Some(e);
                        break;
                    }
                }
            }
            if failure.is_none() {
                for t in &emptied {
                    let site = &state.sites[t];
                    if let Err(e) = process.patch_code(site.target(), &site.original, site.prot, stopped.exclusive()) {
                        failure = Some(e);
                        break;
                    }
                }
            }
            if let Some(e) = failure {
                // Put back what this batch wrote (restores cannot fail where writes worked).
                for site in &prepared.sites[..written] {
                    let _ = process.patch_code(site.target(), &site.original, site.prot, stopped.exclusive());
                }
                drop(stopped);
                prepared.abandon();
                return Err(e);
            }
            drop(stopped);
        }

        // 3. Record: new sites and hooks, flags, removals; then re-point every chain touched.
        let mut touched: Vec<u64> = Vec::new();
        for site in prepared.sites.drain(..) {
            touched.push(site.target());
            state.sites.insert(site.target(), site);
        }
        let mut handles = Vec::with_capacity(prepared.hooks.len());
        for (id, record) in prepared.hooks.drain(..) {
            let site = state.sites.get_mut(&record.target).expect("site prepared");
            if !site.chain.contains(&id) {
                site.chain.push(id);
            }
            touched.push(record.target);
            let (target, detour) = (record.target, record.detour);
            state.hooks.insert(id, record);
            let trampoline = engine.trampoline_of(state, id).expect("just inserted");
            handles.push(Hook { engine: engine.clone(), id, target, detour, trampoline, live: true });
        }
        for (id, target, on) in prepared.toggles.drain(..) {
            if let Some(h) = state.hooks.get_mut(&id) {
                h.enabled = on;
                touched.push(target);
            }
        }
        for id in prepared.removals.drain(..) {
            let Some(h) = state.hooks.remove(&id) else {
                continue;
            };
            if let Some(site) = state.sites.get_mut(&h.target) {
                site.chain.retain(|&c| c != id);
                touched.push(h.target);
            }
            h.release();
        }
        for t in &emptied {
            if let Some(site) = state.sites.remove(t) {
                site.space.free(site.slot);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        for t in touched {
            if let Some(site) = state.sites.get(&t) {
                relink(site, |id| state.hooks.get(&id));
            }
        }
        Ok(handles)
    }
}

/// What a batch will add, kept apart until every part of it succeeded.
#[derive(Default)]
struct Prepared {
    sites: Vec<Site>,
    hooks: Vec<(HookId, HookRecord)>,
    toggles: Vec<(HookId, u64, bool)>,
    removals: Vec<HookId>,
}

impl Prepared {
    /// Releases the trampoline space taken so far.
    fn abandon(mut self) {
        for (_, h) in self.hooks.drain(..) {
            h.release();
        }
        for s in self.sites.drain(..) {
            s.space.free(s.slot);
        }
    }

    fn hook(&self, id: HookId) -> Option<&HookRecord> {
        self.hooks.iter().find(|(i, _)| *i == id).map(|(_, h)| h)
    }
}

/// Targets whose every hook is removed by `removals`.
fn sites_emptied(state: &State, removals: &[HookId]) -> Vec<u64> {
    let mut targets: Vec<u64> = removals.iter().filter_map(|id| state.hooks.get(id).map(|h| h.target)).collect();
    targets.sort_unstable();
    targets.dedup();
    targets.retain(|t| state.sites.get(t).is_some_and(|s| s.chain.iter().all(|c| removals.contains(c))));
    targets
}

fn prepare_install(
    interceptor: &Interceptor,
    state: &mut State,
    prepared: &mut Prepared,
    target: u64,
    detour: u64,
    enabled: bool,
    detour_slot: Option<(Slot, Arc<TrampolineSpace>)>,
) -> Result<(), HookError> {
    let process = &interceptor.engine.process;
    let memory = &**process.memory();
    if target == 0 || detour == 0 {
        return Err(HookError::NullTarget);
    }
    let target_mapping = process.modules().code_mapping(memory, target)?;
    process.modules().code_mapping(memory, detour)?;
    let existing = state.sites.get(&target).map(|s| s.chain.clone()).unwrap_or_default();
    let duplicate = existing.iter().any(|id| state.hooks[id].detour == detour)
        || prepared.hooks.iter().any(|(_, h)| h.target == target && h.detour == detour);
    if duplicate {
        return Err(HookError::AlreadyHooked { target, detour });
    }
    state.next_id += 1;
    let id = state.next_id;
    let has_site = state.sites.contains_key(&target) || prepared.sites.iter().any(|s| s.target() == target);
    let stub = if has_site {
        let slot = interceptor.space.alloc(target, INDIRECT_STUB_LEN)?;
        slot.write(0, &indirect_jmp_stub(target));
        Some((slot, interceptor.space.clone()))
    } else {
        prepared.sites.push(prepare_site(interceptor, target, target_mapping.prot)?);
        None
    };
    if let Some(site) = prepared.sites.iter_mut().find(|s| s.target() == target) {
        site.chain.push(id);
    }
    prepared.hooks.push((id, HookRecord { target, detour, enabled, stub, detour_slot }));
    Ok(())
}

/// Plans the window at `target`, takes a slot, and writes the entry thunk and the relocated
/// original into it. Nothing in the target changes yet.
fn prepare_site(interceptor: &Interceptor, target: u64, prot: Protection) -> Result<Site, HookError> {
    let process = &interceptor.engine.process;
    let memory = &**process.memory();
    let extent = process.modules().function_extent(memory, target).filter(|r| r.contains(&target));
    let code_start = extent.as_ref().map_or(target, |r| r.start);
    let code_end =
        extent.as_ref().map_or(target + UNKNOWN_EXTENT_READ, |r| r.end.max(target + JMP_ABS_LEN as u64 + 16)).min(code_start + MAX_SCAN);
    let code = read_available(memory, code_start, code_end)?;
    let function_end = extent.map(|r| r.end);

    // A near slot lets the patch be a 5-byte jump; without one, a 14-byte absolute jump.
    let (near, patch_len) = match interceptor.space.alloc(target, SITE_SLOT) {
        Ok(slot) => (Some(slot), JMP_REL32_LEN),
        Err(MemError::NoNearSpace { .. }) => (None, JMP_ABS_LEN),
        Err(e) => return Err(e.into()),
    };
    let release = |slot: Option<Slot>| {
        if let Some(s) = slot {
            interceptor.space.free(s)
        }
    };
    let plan = match plan(&code, code_start, target, function_end, patch_len) {
        Ok(p) => p,
        Err(e) => {
            release(near);
            return Err(e);
        }
    };
    let mut slot = match near {
        Some(s) => s,
        None => interceptor.space.alloc_anywhere(SITE_SLOT)?,
    };
    loop {
        let relocated = match relocate_into(&plan, &slot) {
            Ok(r) => r,
            Err(e) => {
                release(Some(slot));
                return Err(e);
            }
        };
        let size = INDIRECT_STUB_LEN + relocated.code.len();
        if size <= slot.size {
            slot.write(0, &indirect_jmp_stub(slot.addr + INDIRECT_STUB_LEN as u64));
            slot.write(INDIRECT_STUB_LEN, &relocated.code);
            let window = target..target + plan.window_len() as u64;
            let original = plan.bytes[..patch_len].to_vec();
            let window_bytes = plan.bytes.clone();
            return Ok(Site { slot, space: interceptor.space.clone(), original, window_bytes, window, relocated, prot, chain: Vec::new() });
        }
        let bigger =
            if patch_len == JMP_REL32_LEN { interceptor.space.alloc(target, size) } else { interceptor.space.alloc_anywhere(size) };
        release(Some(slot));
        slot = bigger?;
    }
}

fn relocate_into(plan: &Plan, slot: &Slot) -> Result<Relocated, HookError> {
    let new_ip = slot.addr + INDIRECT_STUB_LEN as u64;
    let window_end = plan.target + plan.window_len() as u64;
    rewire_x86::relocate(&plan.insns, &plan.bytes, new_ip, Some(window_end)).map_err(|e| HookError::from_x86(plan.target, e))
}

/// The jump written at a site's target: rel32 when the slot is near, else absolute.
fn patch_bytes(site: &Site) -> Vec<u8> {
    match jmp_rel32(site.target(), site.slot.addr) {
        Some(j) if site.original.len() == JMP_REL32_LEN => j.to_vec(),
        _ => jmp_abs(site.slot.addr).to_vec(),
    }
}

/// Reads `start..end`, or as much of it as is mapped (at least one byte).
fn read_available(memory: &dyn rewire_mem::Memory, start: u64, end: u64) -> Result<Vec<u8>, HookError> {
    let mut out = vec![0u8; (end - start) as usize];
    let mut len = out.len();
    loop {
        match memory.read(start, &mut out[..len]) {
            Ok(()) => {
                out.truncate(len);
                return Ok(out);
            }
            // Cut at the next page boundary below the end and try again.
            Err(_) if len > 1 => len = (((start + len as u64 - 1) & !0xfff).saturating_sub(start) as usize).max(1).min(len - 1),
            Err(_) => return Err(HookError::Unmapped(start)),
        }
    }
}

fn remove_hooks(engine: &Arc<Engine>, ids: &[HookId]) -> Result<(), HookError> {
    let interceptor = Interceptor { engine: engine.clone(), space: engine.process.shared_space() };
    let mut tx = interceptor.transaction();
    tx.ops.extend(ids.iter().map(|&id| Op::Remove { id }));
    tx.commit().map(|_| ())
}
