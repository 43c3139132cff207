//! The record of the hooks rewire placed in a process, kept in the process itself so that a
//! later `rewire unhook` can find and remove them: a 64 KiB anonymous mapping starting with a
//! magic header, followed by fixed-size records (target, original bytes, trampoline slot, and
//! the map from slot offsets to original addresses used to move threads out).

use super::RemoteProcess;
use crate::{HookError, SiteInfo};

const MAGIC: &[u8; 16] = b"rewire hooks v1\0";
const SIZE: usize = 64 << 10;
const HEADER: usize = 32;
const RECORD: usize = 256;
const MAX_MAP: usize = 34;
const DETOUR_AT: usize = 240;

/// One hooked target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// The hooked address.
    pub target: u64,
    /// The bytes the patch replaced.
    pub original: Vec<u8>,
    /// The jump written at the target.
    pub patch: Vec<u8>,
    /// The trampoline slot.
    pub slot: std::ops::Range<u64>,
    /// The detour calls went to.
    pub detour: u64,
    /// (address in the slot, original address) for each instruction boundary of the relocated
    /// copy; the entry thunk maps to the target.
    pub map: Vec<(u64, u64)>,
}

impl Record {
    /// The record of a site the Interceptor installed.
    pub fn of(site: &SiteInfo, patch: Vec<u8>, detour: u64) -> Record {
        let map = site.relocated.map.iter().take(MAX_MAP).map(|&(off, orig)| (site.relocated_at + off as u64, orig)).collect();
        Record {
            target: site.window.start,
            original: site.window_bytes[..site.patch_len].to_vec(),
            patch,
            slot: site.slot.clone(),
            detour,
            map,
        }
    }

    /// Where a thread at `pc` continues once the original bytes are back.
    pub fn pc_after_removal(&self, pc: u64) -> Option<u64> {
        if !self.slot.contains(&pc) {
            return None;
        }
        Some(self.map.iter().find(|(at, _)| *at == pc).map_or(self.target, |&(_, orig)| orig))
    }

    fn encode(&self) -> [u8; RECORD] {
        let mut out = [0u8; RECORD];
        out[0..8].copy_from_slice(&self.target.to_le_bytes());
        out[8..16].copy_from_slice(&self.slot.start.to_le_bytes());
        out[16..24].copy_from_slice(&self.slot.end.to_le_bytes());
        out[24] = self.original.len() as u8;
        out[25] = self.patch.len() as u8;
        out[26] = self.map.len() as u8;
        out[DETOUR_AT..DETOUR_AT + 8].copy_from_slice(&self.detour.to_le_bytes());
        out[32..32 + self.original.len()].copy_from_slice(&self.original);
        out[48..48 + self.patch.len()].copy_from_slice(&self.patch);
        for (i, (at, orig)) in self.map.iter().enumerate() {
            let o = 64 + i * 5;
            out[o..o + 2].copy_from_slice(&((at - self.slot.start) as u16).to_le_bytes());
            out[o + 2..o + 5].copy_from_slice(&(orig.wrapping_sub(self.target) as i32).to_le_bytes()[..3]);
        }
        out
    }

    fn decode(b: &[u8]) -> Record {
        let u64_at = |o: usize| u64::from_le_bytes(b[o..o + 8].try_into().expect("8 bytes"));
        let (target, start, end) = (u64_at(0), u64_at(8), u64_at(16));
        let (olen, plen, mlen) = (b[24] as usize, b[25] as usize, b[26] as usize);
        let map = (0..mlen.min(MAX_MAP))
            .map(|i| {
                let o = 64 + i * 5;
                let off = u16::from_le_bytes([b[o], b[o + 1]]) as u64;
                let delta = i32::from_le_bytes([b[o + 2], b[o + 3], b[o + 4], if b[o + 4] & 0x80 != 0 { 0xff } else { 0 }]);
                (start + off, target.wrapping_add(delta as i64 as u64))
            })
            .collect();
        let detour = u64_at(DETOUR_AT);
        Record {
            target,
            original: b[32..32 + olen.min(16)].to_vec(),
            patch: b[48..48 + plen.min(16)].to_vec(),
            slot: start..end,
            detour,
            map,
        }
    }
}

impl RemoteProcess {
    /// The registry's address in the target, if rewire left one there.
    fn find_registry(&self) -> Result<Option<u64>, HookError> {
        let maps = self.memory.address_space()?;
        for m in maps.mappings.iter().filter(|m| m.path.is_empty() && m.prot.write && m.range.end - m.range.start == SIZE as u64) {
            let mut head = [0u8; 16];
            if self.memory.read(m.range.start, &mut head).is_ok() && &head == MAGIC {
                return Ok(Some(m.range.start));
            }
        }
        Ok(None)
    }

    /// The hooks rewire placed in the process.
    pub fn hooks_placed(&self) -> Result<Vec<Record>, HookError> {
        let Some(at) = self.find_registry()? else { return Ok(Vec::new()) };
        let mut buf = vec![0u8; SIZE];
        self.memory.read(at, &mut buf)?;
        let count = u32::from_le_bytes(buf[16..20].try_into().expect("4 bytes")) as usize;
        Ok((0..count.min((SIZE - HEADER) / RECORD)).map(|i| Record::decode(&buf[HEADER + i * RECORD..])).collect())
    }

    /// Replaces the registry's records (creating the registry when needed, removing it when
    /// `records` is empty).
    pub fn set_hooks_placed(&self, records: &[Record]) -> Result<(), HookError> {
        let existing = self.find_registry()?;
        if records.is_empty() {
            if let Some(at) = existing {
                self.memory.release(at, SIZE)?;
            }
            return Ok(());
        }
        let at = match existing {
            Some(at) => at,
            None => self.remote.map_anonymous(SIZE)?,
        };
        let mut buf = vec![0u8; HEADER + records.len() * RECORD];
        buf[..16].copy_from_slice(MAGIC);
        buf[16..20].copy_from_slice(&(records.len() as u32).to_le_bytes());
        for (i, r) in records.iter().take((SIZE - HEADER) / RECORD).enumerate() {
            buf[HEADER + i * RECORD..HEADER + (i + 1) * RECORD].copy_from_slice(&r.encode());
        }
        Ok(self.memory.write(at, &buf)?)
    }

    /// Removes hooks rewire placed (those at `targets`, or all when empty): threads inside
    /// their trampolines are moved back and the original bytes restored. Trampoline memory is
    /// released when no other hook uses it, no thread is inside it, and no thread is running
    /// in a module holding one of the removed detours (which may still call its trampoline).
    /// Returns the targets restored.
    pub fn unhook(&self, targets: &[u64]) -> Result<Vec<u64>, HookError> {
        let records = self.hooks_placed()?;
        let (remove, keep): (Vec<Record>, Vec<Record>) =
            records.into_iter().partition(|r| targets.is_empty() || targets.contains(&r.target));
        let mut restored = Vec::new();
        for r in &remove {
            let mut now = vec![0u8; r.patch.len()];
            self.memory.read(r.target, &mut now)?;
            if now != r.patch {
                continue; // changed by someone else since: leave it alone
            }
            for tid in self.tracee.threads() {
                let mut regs = self.tracee.regs(tid)?;
                if let Some(pc) = r.pc_after_removal(regs.rip) {
                    regs.rip = pc;
                    self.tracee.set_regs(tid, regs)?;
                }
            }
            self.memory.write(r.target, &r.original)?;
            restored.push(r.target);
        }
        self.set_hooks_placed(&keep)?;
        // Release slabs (the memfd mappings holding slots) that hold no remaining hook, no
        // thread is executing, and no thread can still reach: a thread inside a detour may yet
        // call its trampoline, so let the process run briefly until none is (or give up and
        // leave the memory mapped, which is always safe).
        let maps = self.memory.address_space()?;
        let module_of = |addr: u64| maps.find(addr).map(|m| m.path.clone()).filter(|p| !p.is_empty());
        let detour_modules: Vec<String> = remove.iter().filter_map(|r| module_of(r.detour)).collect();
        let mut pcs = Vec::new();
        for attempt in 0..20 {
            if attempt > 0 {
                self.tracee.let_run(std::time::Duration::from_millis(2))?;
            }
            pcs = self.tracee.threads().iter().filter_map(|&t| self.tracee.regs(t).ok().map(|r| r.rip)).collect();
            if !pcs.iter().filter_map(|&pc| module_of(pc)).any(|m| detour_modules.contains(&m)) {
                break;
            }
            if attempt == 19 {
                return Ok(restored);
            }
        }
        let mut slabs: Vec<std::ops::Range<u64>> = remove
            .iter()
            .filter_map(|r| maps.find(r.slot.start))
            .filter(|m| m.path.starts_with("/memfd:rewire-code"))
            .map(|m| m.range.clone())
            .collect();
        slabs.sort_by_key(|s| s.start);
        slabs.dedup();
        for slab in slabs {
            let used = keep.iter().any(|r| slab.contains(&r.slot.start)) || pcs.iter().any(|pc| slab.contains(pc));
            if !used {
                self.memory.release(slab.start, (slab.end - slab.start) as usize)?;
            }
        }
        Ok(restored)
    }
}
