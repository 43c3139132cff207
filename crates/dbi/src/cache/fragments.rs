//! The fragments in the cache: lookup by application address (tag) and by cache address
//! (translation back to the application), and the links between them. A direct exit is
//! linked by rewriting the aligned rel32 field of its jump with one atomic store; unlinking
//! points it back at its exit stub.

use crate::cache::memory::CodeCache;
use crate::translate::{ExitKind, Exits, MergedCounts, Parts, Translated, LOOKUP_PREFIX};
use rewire_x86::emit;
use rustc_hash::FxHashMap;
use smallvec::SmallVec;
use std::collections::BTreeMap;
use std::ops::Range;

/// Index of a fragment.
pub type FragId = u32;

/// Direct exits, as (fragment, exit index): most lists have one or two.
type ExitList = SmallVec<[(FragId, u16); 2]>;

/// A block of application code translated into the cache.
#[derive(Debug)]
pub struct Fragment {
    /// Application address of its first instruction.
    pub tag: u64,
    /// Cache address of its first instruction (after the lookup prefix).
    pub entry: u64,
    /// Bytes of cache code.
    pub len: u32,
    /// Application bytes its first block covers.
    pub app_len: u32,
    /// Where its map is in `Fragments::maps` (start, entries).
    map: (u32, u32),
    /// The application blocks it holds (several for a trace).
    pub parts: Parts,
    /// What it is.
    pub kind: FragmentKind,
    /// Its exits.
    pub exits: Exits,
    /// Exits of other fragments linked to this one.
    incoming: ExitList,
    /// False once invalidated.
    pub live: bool,
    /// For blocks that verify themselves: the application bytes they were built from.
    pub built_from: Option<Box<[u8]>>,
    /// For traces: the tool's counts, merged.
    pub merged: Option<Box<MergedCounts>>,
}

/// The kinds of fragment.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FragmentKind {
    /// A basic block, linked and looked up by its tag.
    Block,
    /// A trace: hot blocks stitched together, replacing the block of its head.
    Trace,
    /// A copy of a block that a thread recording a trace runs: never linked, every exit
    /// goes to the dispatcher.
    Recording,
}

/// Counters of linking activity.
#[derive(Debug, Default, Clone, Copy)]
pub struct LinkStats {
    /// Exits linked.
    pub links: u64,
    /// Of those, linked through an absolute jump (target out of rel32 reach).
    pub far_links: u64,
    /// Exits unlinked.
    pub unlinks: u64,
    /// Fragments invalidated.
    pub invalidated: u64,
    /// Invalidated fragments whose memory was reclaimed.
    pub reclaimed: u64,
}

/// Where a cache address lies (see [`Fragments::locate`]).
struct Location {
    fragment: FragId,
    offset: u16,
    map_index: usize,
    part: usize,
    app_offset: u16,
    clean: bool,
}

/// All fragments.
#[derive(Debug, Default)]
pub struct Fragments {
    list: Vec<Fragment>,
    /// The maps of all fragments, one after the other (see `Workspace::map`).
    maps: Vec<(u16, u16)>,
    by_tag: FxHashMap<u64, FragId>,
    by_cache: BTreeMap<u64, FragId>,
    /// The fragments built from each application page (invalidated ones leave at
    /// invalidation): a JIT's code write invalidates one page among many thousand fragments.
    by_page: FxHashMap<u64, SmallVec<[FragId; 4]>>,
    /// Unlinked direct exits, by the tag they wait for.
    waiting: FxHashMap<u64, ExitList>,
    /// Whether exits get linked at all (off only for testing the unlinked paths).
    linking: bool,
    /// Counters.
    pub stats: LinkStats,
}

/// Bytes of an application page.
const PAGE: u64 = 4096;

/// The application pages `f` was built from.
fn pages(f: &Fragment) -> impl Iterator<Item = u64> + '_ {
    f.parts.iter().flat_map(|p| (p.tag & !(PAGE - 1)..p.tag + (p.app_len as u64).max(1)).step_by(PAGE as usize))
}

impl Fragment {
    /// Where indirect branches enter (the lookup prefix).
    pub fn lookup_entry(&self) -> u64 {
        self.entry - LOOKUP_PREFIX as u64
    }
}

impl Fragments {
    /// An empty table; `linking` false keeps every exit going through the dispatcher.
    pub fn new(linking: bool) -> Fragments {
        Fragments { linking, ..Default::default() }
    }

    /// The live fragment for `tag`.
    pub fn lookup(&self, tag: u64) -> Option<FragId> {
        self.by_tag.get(&tag).copied()
    }

    /// Whether the fragment for `tag` is a trace.
    pub fn is_trace(&self, tag: u64) -> bool {
        self.lookup(tag).is_some_and(|id| self.get(id).kind == FragmentKind::Trace)
    }

    /// Records the bytes a self-verifying fragment was built from.
    pub fn set_built_from(&mut self, id: FragId, bytes: &[u8]) {
        self.list[id as usize].built_from = Some(bytes.into());
    }

    /// The fragment `id`.
    pub fn get(&self, id: FragId) -> &Fragment {
        &self.list[id as usize]
    }

    /// Every fragment ever built (invalidated ones included).
    pub fn all(&self) -> &[Fragment] {
        &self.list
    }

    /// Registers a block or trace just committed at `start` (its `map` from the
    /// translation's workspace) and links it both ways: its direct exits to fragments that
    /// exist, and exits waiting for its tag to it. A trace takes over its head's tag: links
    /// into the head's block are moved to it.
    pub fn add(&mut self, cache: &mut CodeCache, tag: u64, start: u64, t: Translated, map: &[(u16, u16)], kind: FragmentKind) -> FragId {
        let entry = start + LOOKUP_PREFIX as u64;
        let id = self.list.len() as FragId;
        let mut exits = t.exits;
        for (i, e) in exits.iter_mut().enumerate() {
            e.fragment = id;
            e.index = i as u16;
        }
        self.list.push(Fragment {
            tag,
            entry,
            len: t.code_len as u32,
            app_len: t.app_len,
            map: (self.maps.len() as u32, map.len() as u32),
            parts: t.parts,
            kind,
            exits,
            incoming: ExitList::new(),
            live: true,
            built_from: None,
            merged: t.merged,
        });
        self.maps.extend_from_slice(map);
        self.by_cache.insert(start, id);
        for page in pages(&self.list[id as usize]) {
            self.by_page.entry(page).or_default().push(id);
        }
        if kind == FragmentKind::Recording {
            return id;
        }
        let replaced = self.by_tag.insert(tag, id);
        if self.linking {
            for i in 0..self.list[id as usize].exits.len() {
                if let ExitKind::Direct { target } = self.list[id as usize].exits[i].kind {
                    match self.lookup(target) {
                        Some(to) => self.link(cache, id, i as u16, to),
                        None => self.waiting.entry(target).or_default().push((id, i as u16)),
                    }
                }
            }
            for (from, exit) in self.waiting.remove(&tag).unwrap_or_default() {
                if self.list[from as usize].live {
                    self.link(cache, from, exit, id);
                }
            }
            if let Some(head) = replaced.filter(|_| kind == FragmentKind::Trace) {
                for (from, exit) in std::mem::take(&mut self.list[head as usize].incoming) {
                    self.list[from as usize].exits[exit as usize].linked = None;
                    self.link(cache, from, exit, id);
                }
            }
        }
        id
    }

    /// Points direct exit `exit` of fragment `from` at fragment `to`.
    pub fn link(&mut self, cache: &mut CodeCache, from: FragId, exit: u16, to: FragId) {
        if !self.linking {
            return;
        }
        let target = self.list[to as usize].entry;
        let rec = &self.list[from as usize].exits[exit as usize];
        let Some(field) = rec.field() else { return };
        // An invalidated fragment is never linked again: its memory may have been reclaimed
        // (a thread that left it through this exit reached the dispatcher, which let the
        // reclaiming go on) and hold another fragment's code now.
        let source = &self.list[from as usize];
        if rec.linked == Some(to) || source.kind == FragmentKind::Recording || !source.live {
            return;
        }
        // In a fork server's child, code shared with the parent stays as it is: the exit
        // keeps going through the dispatcher here (the parent links it for later children).
        if cache.is_frozen(field) {
            return;
        }
        let bypass = rec.bypass();
        let Some(dest) = self.reach(cache, field, target) else { return };
        cache.patch_u32(field, (dest.wrapping_sub(field + 4)) as u32);
        // An exit that counts executions of a head stops counting once the head is a trace.
        if let Some((bypass, _)) = bypass.filter(|_| self.list[to as usize].kind == FragmentKind::Trace) {
            let Some(dest) = self.reach(cache, bypass, target) else { return };
            cache.patch_u32(bypass, (dest.wrapping_sub(bypass + 4)) as u32);
        }
        self.list[from as usize].exits[exit as usize].linked = Some(to);
        self.list[to as usize].incoming.push((from, exit));
        self.stats.links += 1;
    }

    /// Where a rel32 field at `field` must point to reach `target`: the target, or an
    /// absolute jump placed near the field when the target is out of reach.
    fn reach(&mut self, cache: &mut CodeCache, field: u64, target: u64) -> Option<u64> {
        if emit::rel32_reaches(field + 4, target) {
            return Some(target);
        }
        let pad = emit::jmp_abs(target);
        let place = cache.place(field, pad.len()).ok()?;
        cache.commit(place, &pad);
        self.stats.far_links += 1;
        Some(place.addr)
    }

    /// Points exit `exit` of fragment `from` back at its stub.
    pub fn unlink(&mut self, cache: &mut CodeCache, from: FragId, exit: u16) {
        let rec = &mut self.list[from as usize].exits[exit as usize];
        let Some(to) = rec.linked.take() else { return };
        let field = rec.field().expect("only exits with a field are linked");
        cache.patch_u32(field, rec.stub().wrapping_sub(field + 4) as u32);
        if let Some((bypass, count_stub)) = rec.bypass() {
            cache.patch_u32(bypass, count_stub.wrapping_sub(bypass + 4) as u32);
        }
        self.list[to as usize].incoming.retain(|&mut (f, e)| (f, e) != (from, exit));
        self.stats.unlinks += 1;
    }

    /// Removes every fragment built from application code in `range`: nothing reaches them
    /// any more (links into them are undone, their tags forgotten). Returns them; their
    /// cache memory may be reclaimed (`reclaim`) once no thread can be inside.
    pub fn invalidate(&mut self, cache: &mut CodeCache, range: Range<u64>) -> Vec<FragId> {
        let overlaps = |f: &Fragment| f.live && f.parts.iter().any(|p| p.tag < range.end && p.tag + p.app_len as u64 > range.start);
        let first = range.start & !(PAGE - 1);
        // The fragments registered under the range's pages: looked up page by page for a
        // small range, else found among the pages that hold fragments (a program that unmaps
        // gigabytes of reserved memory, as V8 does, must not cost a scan of every fragment).
        let pages_in_range = range.end.saturating_sub(first) / PAGE;
        let candidates: Vec<FragId> = if pages_in_range <= self.by_page.len() as u64 {
            (first..range.end).step_by(PAGE as usize).filter_map(|page| self.by_page.get(&page)).flatten().copied().collect()
        } else {
            self.by_page.iter().filter(|(&page, _)| (first..range.end).contains(&page)).flat_map(|(_, ids)| ids.iter().copied()).collect()
        };
        let mut doomed: Vec<FragId> = candidates.into_iter().filter(|&id| overlaps(&self.list[id as usize])).collect();
        doomed.sort_unstable();
        doomed.dedup();
        for &id in &doomed {
            for page in pages(&self.list[id as usize]) {
                if let Some(ids) = self.by_page.get_mut(&page) {
                    ids.retain(|i| *i != id);
                    if ids.is_empty() {
                        self.by_page.remove(&page);
                    }
                }
            }
            for (from, exit) in std::mem::take(&mut self.list[id as usize].incoming) {
                self.unlink(cache, from, exit);
            }
            for exit in 0..self.list[id as usize].exits.len() as u16 {
                self.unlink(cache, id, exit);
            }
            let f = &mut self.list[id as usize];
            f.live = false;
            let tag = f.tag;
            if self.by_tag.get(&tag) == Some(&id) {
                self.by_tag.remove(&tag);
            }
        }
        // Exits of the doomed still waiting for their targets stop waiting (scanning every
        // waiting list instead cost a third of javac's time under the engine).
        for &id in &doomed {
            for (i, e) in self.list[id as usize].exits.iter().enumerate() {
                if let (&ExitKind::Direct { target }, None) = (&e.kind, e.linked) {
                    if let Some(list) = self.waiting.get_mut(&target) {
                        list.retain(|&mut w| w != (id, i as u16));
                        if list.is_empty() {
                            self.waiting.remove(&target);
                        }
                    }
                }
            }
        }
        self.stats.invalidated += doomed.len() as u64;
        doomed
    }

    /// Gives the cache memory of invalidated fragments `ids` back to `cache`.
    pub fn reclaim(&mut self, cache: &mut CodeCache, ids: &[FragId]) {
        for &id in ids {
            let f = &self.list[id as usize];
            let start = f.lookup_entry();
            if self.by_cache.get(&start) == Some(&id) {
                self.by_cache.remove(&start);
            }
            cache.release(start, f.len as usize);
            self.stats.reclaimed += 1;
        }
    }

    /// The application address of the instruction cache address `pc` belongs to, and whether
    /// `pc` is exactly where that instruction's translation starts (an instruction boundary
    /// at which the machine state is the application's).
    pub fn translate_point(&self, pc: u64) -> Option<(u64, bool)> {
        let p = self.locate(pc)?;
        let f = &self.list[p.fragment as usize];
        let tag = f.parts.get(p.part).map_or(f.tag, |part| part.tag);
        Some((tag + p.app_offset as u64, p.clean))
    }

    /// The counter a thread must count when it leaves the cache at `pc` (an instruction
    /// boundary, or a faulting instruction) other than through an exit: the correction of
    /// a trace with merged counts whose later parts did not run.
    pub fn correction_at(&self, pc: u64) -> Option<u32> {
        let p = self.locate(pc)?;
        let f = &self.list[p.fragment as usize];
        let at_part_start = p.clean && f.parts.get(p.part).is_some_and(|part| part.map_start as usize == p.map_index);
        f.merged.as_ref()?.correction_for(p.offset, p.part, at_part_start)
    }

    /// Where cache address `pc` is: its fragment, offset, map entry and part, the
    /// application offset of its instruction in the part, and whether `pc` is exactly where
    /// that instruction's translation starts (an instruction boundary at which the machine
    /// state is the application's).
    fn locate(&self, pc: u64) -> Option<Location> {
        let (&start, &id) = self.by_cache.range(..=pc).next_back()?;
        let f = &self.list[id as usize];
        if pc >= start + f.len as u64 {
            return None;
        }
        let offset = (pc - start) as u16;
        let map = &self.maps[f.map.0 as usize..(f.map.0 + f.map.1) as usize];
        let map_index = map.partition_point(|&(c, _)| c <= offset).max(1) - 1;
        let (c, a) = map.get(map_index).copied().unwrap_or((0, 0));
        let part = f.parts.iter().rposition(|p| p.map_start as usize <= map_index).unwrap_or(0);
        Some(Location { fragment: id, offset, map_index, part, app_offset: a, clean: c == offset && offset as usize >= LOOKUP_PREFIX })
    }

    /// What the tool's counters gained through the merged counts of traces, by counter
    /// offset, given the totals of the engine's counters (`total`, summed over threads).
    pub fn merged_totals(&self, total: impl Fn(u32) -> u64) -> FxHashMap<u32, u64> {
        let mut gained = FxHashMap::default();
        for m in self.list.iter().filter_map(|f| f.merged.as_deref()) {
            let mut runs = total(m.entry);
            for (part, adds) in m.adds.iter().enumerate() {
                for &(counter, amount) in adds.iter() {
                    let sum: &mut u64 = gained.entry(counter).or_default();
                    *sum = sum.wrapping_add(runs.wrapping_mul(amount as u64));
                }
                if let Some(&Some(left)) = m.corrections.get(part) {
                    runs = runs.wrapping_sub(total(left));
                }
            }
        }
        gained
    }

    /// Whether cache address `pc` is in a live fragment.
    pub fn live_at(&self, pc: u64) -> bool {
        self.by_cache.range(..=pc).next_back().is_some_and(|(&start, &id)| {
            let f = &self.list[id as usize];
            f.live && pc < start + f.len as u64
        })
    }

    /// Unlinks every exit of the fragment holding cache address `pc`, so that a thread
    /// running it comes back to the dispatcher at its next exit.
    pub fn unlink_fragment_at(&mut self, cache: &mut CodeCache, pc: u64) {
        let Some((&start, &id)) = self.by_cache.range(..=pc).next_back() else { return };
        if pc >= start + self.list[id as usize].len as u64 {
            return;
        }
        for exit in 0..self.list[id as usize].exits.len() as u16 {
            self.unlink(cache, id, exit);
        }
    }
}
