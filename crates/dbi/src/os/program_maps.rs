//! What the program reads of `/proc/self/maps`: the kernel's lines for memory the program
//! mapped itself (its image and interpreter, its `mmap`, `mremap` and `shmat` calls), its
//! stack, vDSO and vsyscall page, and its emulated break as `[heap]`. The runtime's own
//! image, libraries, heap (the kernel's `[heap]` is the runtime's brk), code cache, thread
//! contexts and stacks are left out; a kernel line that merged a mapping of the program with
//! one of the runtime is cut to the program's part.

use crate::os::memory_file::{self, memory_file};
use crate::os::regions::AddressRanges;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::ops::Range;

/// Lines the kernel makes for the process itself, kept as they are.
const KERNEL_AREAS: &[&str] = &["[stack]", "[vdso]", "[vvar]", "[vvar_vclock]", "[vsyscall]"];
/// Width the kernel pads a line to (after the inode and a space) before the name of what is
/// mapped, which follows one more space.
const NAME_COLUMN: usize = 72;

/// The mappings the program made, followed through its calls.
#[derive(Debug, Default)]
pub struct ProgramMaps {
    ranges: AddressRanges,
    /// System V segments attached: address → size (`shmdt` names only the address).
    attached: BTreeMap<u64, u64>,
    /// Memory files given to the program for `maps` that it has not started reading:
    /// descriptor and inode.
    unread: Vec<(i32, u64)>,
}

impl ProgramMaps {
    /// The program mapped `r` (or the loader did on its behalf).
    pub fn mapped(&mut self, r: Range<u64>) {
        self.ranges.add(r);
    }

    /// The program unmapped `r`.
    pub fn unmapped(&mut self, r: Range<u64>) {
        self.ranges.remove(r);
    }

    /// The program attached a System V segment of `size` bytes at `addr`.
    pub fn attached(&mut self, addr: u64, size: u64) {
        self.attached.insert(addr, size);
        self.mapped(addr..addr + size);
    }

    /// The program detached the segment at `addr`; returns its range.
    pub fn detached(&mut self, addr: u64) -> Option<Range<u64>> {
        let size = self.attached.remove(&addr)?;
        self.unmapped(addr..addr + size);
        Some(addr..addr + size)
    }

    /// A memory file holding the program's view of `/proc/self/maps`, for its `open` (with
    /// `O_CLOEXEC` when `cloexec`); `heap` is the range of its emulated break. Until the
    /// program starts reading it, the file follows its mapping calls ([`Self::refresh`]):
    /// the kernel makes the text when it is read, and programs such as `cat` allocate
    /// between `open` and `read`.
    pub fn open_file(&mut self, heap: Range<u64>, cloexec: bool) -> std::io::Result<i32> {
        let fd = memory_file(&self.current(heap)?, cloexec)?;
        if self.unread.len() < 8 {
            self.unread.push((fd, inode_of(fd).unwrap_or(0)));
        }
        Ok(fd)
    }

    /// Rewrites the `maps` files the program holds and has not read yet after its mappings
    /// changed; forgets those it started reading or closed.
    pub fn refresh(&mut self, heap: Range<u64>) {
        if self.unread.is_empty() {
            return;
        }
        let mut unread = std::mem::take(&mut self.unread);
        // SAFETY: lseek with SEEK_CUR only reads the position.
        unread.retain(|&(fd, inode)| inode_of(fd) == Some(inode) && unsafe { libc::lseek(fd, 0, libc::SEEK_CUR) } == 0);
        if let Ok(text) = self.current(heap) {
            for &(fd, _) in &unread {
                memory_file::rewrite(fd, &text);
            }
        }
        self.unread = unread;
    }

    fn current(&self, heap: Range<u64>) -> std::io::Result<String> {
        Ok(self.render(&std::fs::read_to_string("/proc/self/maps")?, heap))
    }

    /// The program's view of `real`, the kernel's `/proc/self/maps` text, with `heap` the
    /// range of its emulated break.
    pub fn render(&self, real: &str, heap: Range<u64>) -> String {
        let mut out = String::with_capacity(real.len());
        for line in real.lines() {
            let Some(map) = MapsLine::parse(line) else { continue };
            if KERNEL_AREAS.contains(&map.name) {
                out.push_str(line);
                out.push('\n');
                continue;
            }
            if map.name == "[heap]" {
                continue;
            }
            let in_heap = heap.start.max(map.range.start)..heap.end.min(map.range.end);
            let mut pieces: Vec<Range<u64>> = self.ranges.within(map.range.clone()).collect();
            if !in_heap.is_empty() {
                pieces.push(in_heap.clone());
                pieces.sort_by_key(|p| p.start);
            }
            for piece in pieces {
                let name = if piece == in_heap && map.name.is_empty() { "[heap]" } else { map.name };
                map.write_piece(&mut out, piece, name);
            }
        }
        out
    }
}

/// The inode of the file open on `fd`.
fn inode_of(fd: i32) -> Option<u64> {
    // SAFETY: an all-zero stat is valid plain data; fstat only fills it.
    let mut st: libc::stat = unsafe { std::mem::zeroed() };
    // SAFETY: reads the descriptor's file status into `st`.
    (unsafe { libc::fstat(fd, &mut st) } == 0).then_some(st.st_ino)
}

/// One line of `/proc/PID/maps`.
#[derive(Debug)]
struct MapsLine<'a> {
    range: Range<u64>,
    perms: &'a str,
    offset: u64,
    device: &'a str,
    inode: &'a str,
    name: &'a str,
}

impl<'a> MapsLine<'a> {
    fn parse(line: &'a str) -> Option<MapsLine<'a>> {
        let mut fields = line.splitn(6, ' ');
        let (start, end) = fields.next()?.split_once('-')?;
        let perms = fields.next()?;
        let offset = u64::from_str_radix(fields.next()?, 16).ok()?;
        let device = fields.next()?;
        let inode = fields.next()?;
        let name = fields.next().unwrap_or("").trim_start_matches(' ');
        let range = u64::from_str_radix(start, 16).ok()?..u64::from_str_radix(end, 16).ok()?;
        Some(MapsLine { range, perms, offset, device, inode, name })
    }

    /// Writes the line for the part `piece` of this mapping, as the kernel formats it.
    fn write_piece(&self, out: &mut String, piece: Range<u64>, name: &str) {
        let file_backed = self.inode != "0";
        let offset = if file_backed { self.offset + (piece.start - self.range.start) } else { self.offset };
        let from = out.len();
        let _ = write!(out, "{:08x}-{:08x} {} {:08x} {} {} ", piece.start, piece.end, self.perms, offset, self.device, self.inode);
        if !name.is_empty() {
            let width = out.len() - from;
            out.extend(std::iter::repeat_n(' ', NAME_COLUMN.saturating_sub(width)));
            out.push(' ');
            out.push_str(name);
        }
        out.push('\n');
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const REAL: &str = "\
55d0c2a4e000-55d0c2a50000 r--p 00000000 08:01 1835027                    /usr/bin/cat
55d0c2a50000-55d0c2a55000 r-xp 00002000 08:01 1835027                    /usr/bin/cat
55d0c2b00000-55d0c2c00000 rw-p 00000000 00:00 0                          [heap]
55d0c3000000-55d0c3002000 rw-p 00000000 00:00 0 
7f0000000000-7f0000004000 rw-p 00000000 00:00 0 
7f0000010000-7f0000020000 r-xp 00000000 00:01 77                         /memfd:rewire-code (deleted)
7f0000100000-7f0000104000 r--p 00001000 08:01 99                         /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
7ffd00100000-7ffd00102000 r-xp 00000000 00:00 0                          [vdso]
";

    #[test]
    fn only_the_programs_mappings_and_its_break_as_heap() {
        let mut maps = ProgramMaps::default();
        maps.mapped(0x55d0c2a4e000..0x55d0c2a55000);
        // Half of a kernel line that merged the program's mapping with the runtime's.
        maps.mapped(0x7f0000002000..0x7f0000004000);
        maps.mapped(0x7f0000101000..0x7f0000104000);
        let seen = maps.render(REAL, 0x55d0c3000000..0x55d0c3002000);
        let expected = "\
55d0c2a4e000-55d0c2a50000 r--p 00000000 08:01 1835027                    /usr/bin/cat
55d0c2a50000-55d0c2a55000 r-xp 00002000 08:01 1835027                    /usr/bin/cat
55d0c3000000-55d0c3002000 rw-p 00000000 00:00 0                          [heap]
7f0000002000-7f0000004000 rw-p 00000000 00:00 0 
7f0000101000-7f0000104000 r--p 00002000 08:01 99                         /usr/lib/x86_64-linux-gnu/libc.so.6
7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]
7ffd00100000-7ffd00102000 r-xp 00000000 00:00 0                          [vdso]
";
        assert_eq!(seen, expected);
    }

    #[test]
    fn lines_are_formatted_as_the_kernel_does() {
        let mut maps = ProgramMaps::default();
        maps.mapped(0..u64::MAX);
        let real = std::fs::read_to_string("/proc/self/maps").unwrap();
        let without_heap: String = real.lines().filter(|l| !l.ends_with("[heap]")).map(|l| format!("{l}\n")).collect();
        assert_eq!(maps.render(&real, 0..0), without_heap);
    }

    #[test]
    fn a_detached_segment_is_gone() {
        let mut maps = ProgramMaps::default();
        maps.attached(0x7f0000000000, 0x4000);
        assert_eq!(maps.detached(0x7f0000000000), Some(0x7f0000000000..0x7f0000004000));
        assert_eq!(maps.detached(0x7f0000000000), None);
        assert_eq!(maps.render(REAL, 0..0).lines().filter(|l| l.starts_with("7f0000000000")).count(), 0);
    }
}
