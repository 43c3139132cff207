//! Trampoline space: slabs of fixed-size slots in dual-mapped memory near the code they serve.

use crate::{DualView, MemError, Memory};
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// Every byte of a slab handed out for `near` lies within this distance of `near`, so a
/// `jmp rel32` at `near` reaches any slot and any slot reaches back (16 MiB kept spare).
pub const NEAR_REACH: u64 = (1 << 31) - (16 << 20);

/// Size of one slab of address space.
const SLAB_LEN: usize = 64 << 10;
/// Slot sizes offered; a request takes the smallest that holds it.
const SLOT_CLASSES: [usize; 5] = [16, 32, 64, 256, 1024];
/// A freed slot is not reused, nor its slab unmapped, before this much time has passed: a
/// thread that loaded a trampoline address just before its hook was removed can still call
/// it and run the (unchanged) relocated original.
const QUARANTINE: Duration = Duration::from_millis(100);

/// Who owns trampoline space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Sharing {
    /// The owner has slabs of its own.
    Unique,
    /// All owners in the process share one set of slabs, one slab per neighbourhood and slot
    /// class: the least memory per hook.
    #[default]
    Shared,
}

/// A slot of trampoline space: executable at `addr` in the target, written through here.
#[derive(Debug, Clone)]
pub struct Slot {
    /// Address of the slot in the target process.
    pub addr: u64,
    /// Slot size in bytes (its class, at least what was asked for).
    pub size: usize,
    view: Arc<DualView>,
}

impl Slot {
    fn offset(&self, offset: usize, len: usize) -> usize {
        assert!(offset + len <= self.size, "access past the end of a {}-byte slot", self.size);
        (self.addr - self.view.exec) as usize + offset
    }

    /// Writes `data` at byte `offset` of the slot.
    pub fn write(&self, offset: usize, data: &[u8]) {
        self.view.write(self.offset(offset, data.len()), data)
    }

    /// Stores an 8-aligned pointer atomically at byte `offset` (executing threads may load it).
    pub fn store_u64(&self, offset: usize, value: u64) {
        self.view.store_u64(self.offset(offset, 8), value)
    }

    /// Loads the 8-byte value at byte `offset`.
    pub fn load_u64(&self, offset: usize) -> u64 {
        self.view.load_u64(self.offset(offset, 8))
    }

    /// Reads the slot's bytes.
    pub fn bytes(&self) -> Vec<u8> {
        let mut out = vec![0; self.size];
        self.view.read(self.offset(0, self.size), &mut out);
        out
    }
}

impl PartialEq for Slot {
    fn eq(&self, other: &Slot) -> bool {
        self.addr == other.addr
    }
}

struct Slab {
    view: Arc<DualView>,
    slot_size: usize,
    /// Slots never handed out start at this index.
    fresh: usize,
    /// Freed slots, oldest first, with the time they were freed.
    freed: VecDeque<(usize, Instant)>,
    live: usize,
}

impl Slab {
    fn slots(&self) -> usize {
        self.view.len / self.slot_size
    }

    fn covers(&self, near: u64, reach: u64) -> bool {
        let (start, end) = (self.view.exec, self.view.exec + self.view.len as u64);
        near.abs_diff(start) <= reach && near.abs_diff(end) <= reach
    }

    fn take(&mut self, now: Instant) -> Option<usize> {
        let index = match self.freed.front() {
            Some(&(i, at)) if now.duration_since(at) >= QUARANTINE => {
                self.freed.pop_front();
                i
            }
            _ if self.fresh < self.slots() => {
                self.fresh += 1;
                self.fresh - 1
            }
            _ => return None,
        };
        self.live += 1;
        Some(index)
    }

    fn idle(&self, now: Instant) -> bool {
        self.live == 0 && self.freed.back().is_none_or(|&(_, at)| now.duration_since(at) >= QUARANTINE)
    }
}

/// Usage figures of a trampoline space.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct SpaceStats {
    /// Slabs mapped.
    pub slabs: usize,
    /// Slots in use.
    pub live_slots: usize,
    /// Bytes of slots in use.
    pub live_bytes: usize,
    /// Bytes of slots ever handed out (the pages they touched are committed).
    pub touched_bytes: usize,
}

/// A set of slabs from which trampoline slots are handed out (one per owner with
/// [`Sharing::Unique`], one per process with [`Sharing::Shared`]).
pub struct TrampolineSpace {
    mem: Arc<dyn Memory>,
    slabs: Mutex<Vec<Slab>>,
}

impl std::fmt::Debug for TrampolineSpace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TrampolineSpace").field("stats", &self.stats()).finish()
    }
}

impl TrampolineSpace {
    /// A space of its own (the [`Sharing::Unique`] policy) in the process behind `mem`.
    pub fn new(mem: Arc<dyn Memory>) -> Arc<TrampolineSpace> {
        Arc::new(TrampolineSpace { mem, slabs: Mutex::new(Vec::new()) })
    }

    /// The process-wide space of this process (the [`Sharing::Shared`] policy).
    pub fn shared_in_process() -> Arc<TrampolineSpace> {
        static SHARED: OnceLock<Arc<TrampolineSpace>> = OnceLock::new();
        SHARED.get_or_init(|| TrampolineSpace::new(Arc::new(crate::InProcess::new()))).clone()
    }

    /// The memory policy behind this space.
    pub fn memory(&self) -> &Arc<dyn Memory> {
        &self.mem
    }

    /// Hands out a slot of at least `size` bytes within [`NEAR_REACH`] of `near`, mapping a
    /// new slab when none in reach has a free slot.
    pub fn alloc(&self, near: u64, size: usize) -> Result<Slot, MemError> {
        self.alloc_within(near, NEAR_REACH, size)
    }

    /// Hands out a slot of at least `size` bytes wherever there is room (for code reached by
    /// absolute jumps only).
    pub fn alloc_anywhere(&self, size: usize) -> Result<Slot, MemError> {
        self.alloc_within(1 << 46, 1 << 47, size)
    }

    fn alloc_within(&self, near: u64, reach: u64, size: usize) -> Result<Slot, MemError> {
        let slot_size = *SLOT_CLASSES.iter().find(|&&c| c >= size).ok_or(MemError::SlotTooLarge { size })?;
        let now = Instant::now();
        let mut slabs = self.slabs.lock().unwrap_or_else(|p| p.into_inner());
        self.release_idle(&mut slabs, now);
        let pick = |s: &mut Slab| (s.slot_size == slot_size && s.covers(near, reach)).then(|| s.take(now)).flatten().map(|i| slot_of(s, i));
        if let Some(slot) = slabs.iter_mut().find_map(pick) {
            return Ok(slot);
        }
        let view = self.map_slab_near(near, reach)?;
        let mut slab = Slab { view: Arc::new(view), slot_size, fresh: 0, freed: VecDeque::new(), live: 0 };
        let index = slab.take(now).expect("a new slab has free slots");
        let slot = slot_of(&slab, index);
        slabs.push(slab);
        Ok(slot)
    }

    /// Returns a slot. It is reused, or its slab unmapped, only after a quarantine period.
    pub fn free(&self, slot: Slot) {
        let mut slabs = self.slabs.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = slabs.iter_mut().find(|s| Arc::ptr_eq(&s.view, &slot.view)) {
            s.live -= 1;
            s.freed.push_back(((slot.addr - s.view.exec) as usize / s.slot_size, Instant::now()));
        }
    }

    /// Unmaps slabs that have no live slot and whose quarantine is over.
    pub fn trim(&self) {
        let mut slabs = self.slabs.lock().unwrap_or_else(|p| p.into_inner());
        self.release_idle(&mut slabs, Instant::now());
    }

    /// The slots in use, in slab order.
    pub fn live(&self) -> Vec<Slot> {
        let slabs = self.slabs.lock().unwrap_or_else(|p| p.into_inner());
        let mut out = Vec::new();
        for s in slabs.iter() {
            let freed: Vec<usize> = s.freed.iter().map(|f| f.0).collect();
            out.extend((0..s.fresh).filter(|i| !freed.contains(i)).map(|i| slot_of(s, i)));
        }
        out
    }

    /// Usage figures.
    pub fn stats(&self) -> SpaceStats {
        let slabs = self.slabs.lock().unwrap_or_else(|p| p.into_inner());
        slabs.iter().fold(SpaceStats::default(), |mut st, s| {
            st.slabs += 1;
            st.live_slots += s.live;
            st.live_bytes += s.live * s.slot_size;
            st.touched_bytes += s.fresh * s.slot_size;
            st
        })
    }

    fn release_idle(&self, slabs: &mut Vec<Slab>, now: Instant) {
        let mut i = 0;
        while i < slabs.len() {
            if slabs[i].idle(now) && Arc::strong_count(&slabs[i].view) == 1 {
                let slab = slabs.swap_remove(i);
                if let Ok(view) = Arc::try_unwrap(slab.view) {
                    let _ = self.mem.unmap_dual(view);
                }
            } else {
                i += 1;
            }
        }
    }

    fn map_slab_near(&self, near: u64, reach: u64) -> Result<DualView, MemError> {
        let space = self.mem.address_space()?;
        let reach = reach - SLAB_LEN as u64;
        for addr in space.free_near(near, SLAB_LEN as u64, reach, SLAB_LEN as u64).into_iter().take(16) {
            // Another thread may map the range between reading the map and mapping: try on.
            if let Ok(view) = self.mem.map_dual(addr, SLAB_LEN) {
                return Ok(view);
            }
        }
        Err(MemError::NoNearSpace { near, len: SLAB_LEN })
    }
}

fn slot_of(slab: &Slab, index: usize) -> Slot {
    Slot { addr: slab.view.exec + (index * slab.slot_size) as u64, size: slab.slot_size, view: slab.view.clone() }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn here() -> u64 {
        here as fn() -> u64 as usize as u64
    }

    #[test]
    fn slots_are_near_distinct_and_counted() {
        let space = TrampolineSpace::new(Arc::new(crate::InProcess::new()));
        let a = space.alloc(here(), 40).unwrap();
        let b = space.alloc(here(), 64).unwrap();
        let c = space.alloc(here(), 10).unwrap();
        assert_eq!((a.size, b.size, c.size), (64, 64, 16));
        let e = space.alloc(here(), 32).unwrap();
        assert_eq!(e.size, 32);
        space.free(e);
        assert_ne!(a.addr, b.addr);
        assert!(a.addr.abs_diff(here()) < NEAR_REACH);
        assert_eq!(space.stats().live_slots, 3);
        assert_eq!(space.stats().slabs, 3, "one slab per slot class");
        assert_eq!(space.live().len(), 3);
        a.write(0, &[0xc3]);
        a.store_u64(8, 99);
        assert_eq!(a.bytes()[0], 0xc3);
        assert_eq!(a.load_u64(8), 99);
        let a_addr = a.addr;
        space.free(a);
        assert_eq!(space.stats().live_slots, 2);
        let d = space.alloc(here(), 64).unwrap();
        assert_ne!(d.addr, a_addr, "a freed slot stays in quarantine");
        assert!(matches!(space.alloc(here(), 5000), Err(MemError::SlotTooLarge { size: 5000 })));
    }

    #[test]
    fn idle_slabs_are_released_after_quarantine() {
        let space = TrampolineSpace::new(Arc::new(crate::InProcess::new()));
        let a = space.alloc(here(), 64).unwrap();
        let addr = a.addr;
        space.free(a);
        std::thread::sleep(QUARANTINE + Duration::from_millis(10));
        space.trim();
        assert_eq!(space.stats().slabs, 0);
        assert!(crate::AddressSpace::read(None).unwrap().find(addr).is_none());
    }

    #[test]
    fn shared_space_is_one_per_process() {
        assert!(Arc::ptr_eq(&TrampolineSpace::shared_in_process(), &TrampolineSpace::shared_in_process()));
    }
}
