//! The program's modules (ELF files mapped into it, and the vDSO), as segments: one entry
//! per file mapping, numbered in order of discovery, the way drcov's module table lists
//! them. Found from `/proc/self/maps` when a block is built at an address no known segment
//! holds; forgotten (for lookups, not for the table) when unmapped.

use rewire_mem::AddressSpace;
use std::collections::BTreeMap;
use std::ops::Range;

/// One mapped segment of a module.
#[derive(Debug, Clone)]
pub struct Segment {
    /// Index in the table.
    pub id: u32,
    /// Index of the module's first segment.
    pub containing_id: u32,
    /// Address range.
    pub range: Range<u64>,
    /// The module's entry point (0 when it has none).
    pub entry: u64,
    /// Offset of the segment in the file.
    pub offset: u64,
    /// Link-time address of the segment (its address minus the module's load bias).
    pub preferred_base: u64,
    /// The file (or `[vdso]`).
    pub path: String,
}

/// All segments seen.
#[derive(Debug, Default)]
pub struct Modules {
    segments: Vec<Segment>,
    /// Start → segment id, for segments still mapped.
    live: BTreeMap<u64, u32>,
    /// The runtime's own file mappings (rewire and its libraries), never the program's.
    runtime: Vec<Range<u64>>,
    /// The executable-regions generation of the last scan.
    scanned: Option<u64>,
}

impl Modules {
    /// A registry that ignores the mappings present now (call before loading the program).
    pub fn excluding_current() -> Modules {
        let runtime = AddressSpace::read(None)
            .map(|s| s.mappings.iter().filter(|m| m.path.starts_with('/')).map(|m| m.range.clone()).collect())
            .unwrap_or_default();
        Modules { runtime, ..Default::default() }
    }

    /// The segment holding `addr`, looking the mappings up again if no known one does and
    /// executable memory changed (`generation`) since the last look; with the segments that
    /// look found.
    pub fn segment_of(&mut self, addr: u64, generation: u64) -> (Option<&Segment>, &[Segment]) {
        let known = self.segments.len();
        if self.lookup(addr).is_none() && self.scanned != Some(generation) {
            self.scanned = Some(generation);
            self.scan();
        }
        let found = self.lookup(addr).map(|id| &self.segments[id as usize]);
        (found, &self.segments[known..])
    }

    fn lookup(&self, addr: u64) -> Option<u32> {
        let (_, &id) = self.live.range(..=addr).next_back()?;
        self.segments[id as usize].range.contains(&addr).then_some(id)
    }

    /// Every segment ever seen, in id order.
    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Forgets the segments overlapping `r` for lookups (they were unmapped); returns them.
    pub fn forget(&mut self, r: Range<u64>) -> Vec<Segment> {
        let overlaps = |s: &Segment| s.range.start < r.end && s.range.end > r.start;
        let gone: Vec<(u64, u32)> =
            self.live.iter().filter(|(_, &id)| overlaps(&self.segments[id as usize])).map(|(&s, &id)| (s, id)).collect();
        gone.into_iter()
            .map(|(s, id)| {
                self.live.remove(&s);
                self.segments[id as usize].clone()
            })
            .collect()
    }

    fn scan(&mut self) {
        let Ok(space) = AddressSpace::read(None) else { return };
        let mut module_first: Option<(String, u32, u64, u64)> = None; // path, first id, bias, entry
        for m in &space.mappings {
            let is_module = (m.path.starts_with('/') && !m.path.starts_with("/memfd:")) || m.path == "[vdso]";
            if !is_module || self.runtime.contains(&m.range) {
                continue;
            }
            let same_module = module_first.as_ref().is_some_and(|(p, ..)| *p == m.path) && m.offset != 0;
            if !same_module {
                // A module starts with its ELF header: other files the program (or its
                // loader) maps, such as /etc/ld.so.cache, are data.
                let Some((bias, entry)) = elf_bias_and_entry(m.range.start, m.offset) else {
                    module_first = None;
                    continue;
                };
                module_first = Some((m.path.clone(), self.segments.len() as u32, bias, entry));
            }
            if self
                .lookup(m.range.start)
                .is_some_and(|id| self.segments[id as usize].range == m.range && self.segments[id as usize].path == m.path)
            {
                // Known; keep its id (and make the module's first id the known one).
                if !same_module {
                    if let (Some(first), Some(id)) = (module_first.as_mut(), self.lookup(m.range.start)) {
                        first.1 = self.segments[id as usize].containing_id;
                    }
                }
                continue;
            }
            let (_, containing_id, bias, entry) = module_first.clone().expect("set above");
            let id = self.segments.len() as u32;
            let containing_id = if same_module { containing_id } else { id };
            self.segments.push(Segment {
                id,
                containing_id,
                range: m.range.clone(),
                entry,
                offset: m.offset,
                preferred_base: m.range.start.wrapping_sub(bias),
                path: m.path.clone(),
            });
            self.live.insert(m.range.start, id);
        }
    }
}

/// The load bias and entry point of the ELF image whose header is mapped at `start` (file
/// offset 0); `None` when no ELF header is mapped there.
fn elf_bias_and_entry(start: u64, offset: u64) -> Option<(u64, u64)> {
    let mut hdr = [0u8; 64];
    if offset != 0 || !crate::os::appmem::read(start, &mut hdr) || !hdr.starts_with(b"\x7fELF") {
        return None;
    }
    let e_type = u16::from_le_bytes([hdr[16], hdr[17]]);
    let e_entry = u64::from_le_bytes(hdr[24..32].try_into().expect("8 bytes"));
    // ET_DYN images are linked at 0 (as all of this machine's are); ET_EXEC at their address.
    let bias = if e_type == 3 { start } else { 0 };
    Some((bias, if e_entry == 0 { 0 } else { e_entry + bias }))
}

/// `libc.so.6+0x2a1c0` for an address inside a file mapping, the mapping's label for
/// anonymous ones (`[vdso]`), or `?`.
pub fn describe(addr: u64) -> String {
    let Ok(space) = AddressSpace::read(None) else { return "?".into() };
    match space.find(addr) {
        Some(m) if m.path.starts_with('/') => {
            let name = m.path.rsplit('/').next().unwrap_or(&m.path);
            format!("{name}+{:#x}", addr - m.range.start + m.offset)
        }
        Some(m) if !m.path.is_empty() => format!("{}+{:#x}", m.path, addr - m.range.start),
        _ => "?".into(),
    }
}

/// The file or label of the mapping holding `addr` in `space` (`[anon]` when none).
pub fn name_in(space: &AddressSpace, addr: u64) -> String {
    match space.find(addr) {
        Some(m) if m.path.starts_with('/') => m.path.rsplit('/').next().unwrap_or(&m.path).to_string(),
        Some(m) if !m.path.is_empty() => m.path.clone(),
        _ => "[anon]".into(),
    }
}
