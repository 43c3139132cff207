//! The address-space map of a process, parsed from `/proc/PID/maps`.

use crate::MemError;
use std::ops::Range;

/// Page protection of a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Protection {
    /// Readable.
    pub read: bool,
    /// Writable.
    pub write: bool,
    /// Executable.
    pub exec: bool,
}

impl Protection {
    /// Read + execute (code).
    pub const RX: Protection = Protection { read: true, write: false, exec: true };
    /// Read + write (data).
    pub const RW: Protection = Protection { read: true, write: true, exec: false };
    /// No access (a reservation).
    pub const NONE: Protection = Protection { read: false, write: false, exec: false };
}

/// One line of the map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mapping {
    /// Address range.
    pub range: Range<u64>,
    /// Protection.
    pub prot: Protection,
    /// Private (copy-on-write) or shared.
    pub private: bool,
    /// Offset in the mapped file.
    pub offset: u64,
    /// The file or pseudo-file (`[heap]`, `[stack]`, `[vdso]`…); empty for anonymous memory.
    pub path: String,
}

/// The sorted mappings of a process.
#[derive(Debug, Clone, Default)]
pub struct AddressSpace {
    /// Mappings in address order.
    pub mappings: Vec<Mapping>,
}

/// Lowest address the kernel lets user space map (default `vm.mmap_min_addr`).
const LOWEST: u64 = 0x10000;
/// End of the user half of the x86-64 address space (4-level paging).
const HIGHEST: u64 = 0x7fff_ffff_f000;
/// Room left free above `[heap]` so that the program's brk can still grow.
const HEAP_GROWTH_ROOM: u64 = 1 << 30;
/// Room left free below `[stack]` so that the main stack can still grow.
const STACK_GROWTH_ROOM: u64 = 64 << 20;

impl AddressSpace {
    /// Reads the map of process `pid` (`None`: this process).
    pub fn read(pid: Option<u32>) -> Result<AddressSpace, MemError> {
        let path = match pid {
            Some(p) => format!("/proc/{p}/maps"),
            None => "/proc/self/maps".to_string(),
        };
        let text = std::fs::read_to_string(&path).map_err(|e| MemError::Maps { path: path.clone(), reason: e.to_string() })?;
        Self::parse(&text).map_err(|reason| MemError::Maps { path, reason })
    }

    /// Parses the text of a maps file.
    pub fn parse(text: &str) -> Result<AddressSpace, String> {
        let mut mappings = Vec::with_capacity(128);
        for line in text.lines().filter(|l| !l.is_empty()) {
            mappings.push(parse_line(line).ok_or_else(|| format!("unexpected line {line:?}"))?);
        }
        mappings.sort_by_key(|m| m.range.start);
        Ok(AddressSpace { mappings })
    }

    /// The mapping containing `addr`.
    pub fn find(&self, addr: u64) -> Option<&Mapping> {
        let i = self.mappings.partition_point(|m| m.range.end <= addr);
        self.mappings.get(i).filter(|m| m.range.contains(&addr))
    }

    /// True when every byte of `range` is mapped.
    pub fn is_mapped(&self, range: Range<u64>) -> bool {
        let mut at = range.start;
        while at < range.end {
            match self.find(at) {
                Some(m) => at = m.range.end,
                None => return false,
            }
        }
        true
    }

    /// Free ranges between mappings, leaving growth room above the heap and below the stack.
    pub fn gaps(&self) -> Vec<Range<u64>> {
        let mut out = Vec::with_capacity(self.mappings.len() + 1);
        let mut prev_end = LOWEST;
        let mut prev_is_heap = false;
        for m in &self.mappings {
            let start = if prev_is_heap { prev_end.saturating_add(HEAP_GROWTH_ROOM) } else { prev_end };
            let end = if m.path == "[stack]" { m.range.start.saturating_sub(STACK_GROWTH_ROOM) } else { m.range.start };
            if start < end {
                out.push(start..end);
            }
            prev_end = prev_end.max(m.range.end);
            prev_is_heap = m.path == "[heap]";
        }
        let start = if prev_is_heap { prev_end.saturating_add(HEAP_GROWTH_ROOM) } else { prev_end };
        if start < HIGHEST {
            out.push(start..HIGHEST);
        }
        out
    }

    /// Page-aligned free ranges of `len` bytes whose every byte lies within `reach` of `near`,
    /// nearest first. `align` is a power of two.
    pub fn free_near(&self, near: u64, len: u64, reach: u64, align: u64) -> Vec<u64> {
        let lo = near.saturating_sub(reach);
        let hi = near.saturating_add(reach);
        let mut found: Vec<u64> = Vec::new();
        for gap in self.gaps() {
            let start = gap.start.max(lo).next_multiple_of(align);
            let end = gap.end.min(hi);
            if start.checked_add(len).is_none_or(|e| e > end) {
                continue;
            }
            // The candidate of this gap closest to `near`.
            let last = (end - len) & !(align - 1);
            let best = if near <= start {
                start
            } else if near >= last {
                last
            } else {
                (near & !(align - 1)).clamp(start, last)
            };
            found.push(best);
        }
        found.sort_by_key(|a| a.abs_diff(near));
        found
    }
}

fn parse_line(line: &str) -> Option<Mapping> {
    let mut it = line.splitn(6, ' ');
    let (range, perms, offset) = (it.next()?, it.next()?, it.next()?);
    let _dev = it.next()?;
    let _inode = it.next()?;
    let path = it.next().unwrap_or("").trim_start().to_string();
    let (a, b) = range.split_once('-')?;
    let p = perms.as_bytes();
    if p.len() < 4 {
        return None;
    }
    Some(Mapping {
        range: u64::from_str_radix(a, 16).ok()?..u64::from_str_radix(b, 16).ok()?,
        prot: Protection { read: p[0] == b'r', write: p[1] == b'w', exec: p[2] == b'x' },
        private: p[3] == b'p',
        offset: u64::from_str_radix(offset, 16).ok()?,
        path,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "\
555555554000-555555556000 r--p 00000000 fe:01 123 /usr/bin/cat
555555556000-55555555a000 r-xp 00002000 fe:01 123 /usr/bin/cat
55555555a000-55555557b000 rw-p 00000000 00:00 0                          [heap]
7ffff7dd3000-7ffff7df9000 r-xp 00026000 fe:01 77 /usr/lib/x86_64-linux-gnu/libc.so.6
7ffffffde000-7ffffffff000 rw-p 00000000 00:00 0                          [stack]
";

    #[test]
    fn parses_and_finds() {
        let s = AddressSpace::parse(SAMPLE).unwrap();
        assert_eq!(s.mappings.len(), 5);
        let m = s.find(0x555555557000).unwrap();
        assert_eq!((m.prot, m.offset, m.path.as_str()), (Protection::RX, 0x2000, "/usr/bin/cat"));
        assert_eq!(s.find(0x55555555a000).unwrap().path, "[heap]");
        assert!(s.find(0x555555553fff).is_none());
        assert!(s.is_mapped(0x555555554000..0x55555557b000));
        assert!(!s.is_mapped(0x555555554000..0x55555557c000));
    }

    #[test]
    fn near_space_avoids_heap_and_stack_growth() {
        let s = AddressSpace::parse(SAMPLE).unwrap();
        let near = s.free_near(0x555555556000, 0x10000, 1 << 31, 0x10000);
        let first = near[0];
        assert!(first + 0x10000 <= 0x555555554000, "below the image: {first:#x}");
        for a in s.free_near(0x7ffff7dd3000, 0x10000, 1 << 31, 0x10000) {
            assert!(a + 0x10000 <= 0x7ffffffde000 - STACK_GROWTH_ROOM || a >= 0x7ffffffff000);
            assert!(a.abs_diff(0x7ffff7dd3000) < 1 << 31);
        }
    }
}
