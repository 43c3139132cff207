//! A module's ELF image as read from disk: its functions (for extents), its exported functions
//! (for hooking by name and for `rewire hook check`), and its file-backed bytes.

use crate::HookError;
use object::elf;
use object::read::{Object, ObjectSegment, ObjectSymbol};
use object::{Architecture, ObjectKind, SymbolFlags, SymbolKind};
use std::ops::Range;

/// An exported function of a module.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Export {
    /// Symbol name (without version).
    pub name: String,
    /// Address in the image (add the load base for a shared object).
    pub addr: u64,
    /// Size in bytes from the symbol table (0 when unknown).
    pub size: u64,
    /// A GNU indirect function: `addr` is its resolver.
    pub ifunc: bool,
}

/// An ELF module read from disk.
#[derive(Debug)]
pub struct ElfModule {
    /// The file.
    pub path: String,
    data: Vec<u8>,
    /// Position-independent (loaded at a base chosen at run time).
    pub relocatable: bool,
    /// Lowest virtual address of a loadable segment (the load base maps to it).
    pub first_vaddr: u64,
    functions: Vec<Range<u64>>,
    exports: Vec<Export>,
    /// Every named, defined symbol (dynamic and static tables): name and address.
    symbols: std::collections::HashMap<String, u64>,
    segments: Vec<(Range<u64>, Range<usize>)>,
}

impl ElfModule {
    /// Reads and indexes the ELF file at `path` (x86-64 only).
    pub fn open(path: &str) -> Result<ElfModule, HookError> {
        let bad = |reason: String| HookError::BadModule { path: path.to_string(), reason };
        let data = std::fs::read(path).map_err(|e| bad(e.to_string()))?;
        let file = object::File::parse(&*data).map_err(|e| bad(format!("not an ELF file ({e})")))?;
        if !matches!(file, object::File::Elf64(_)) {
            return Err(bad("not a 64-bit ELF file".into()));
        }
        if file.architecture() != Architecture::X86_64 {
            return Err(bad(format!("built for {:?}, not x86-64", file.architecture())));
        }
        let relocatable = file.kind() == ObjectKind::Dynamic;
        let mut segments = Vec::new();
        for seg in file.segments() {
            let (off, len) = seg.file_range();
            segments.push((seg.address()..seg.address() + seg.size(), off as usize..(off + len) as usize));
        }
        let first_vaddr = segments.iter().map(|s| s.0.start).min().unwrap_or(0) & !0xfff;
        let mut functions: Vec<Range<u64>> = file
            .symbols()
            .chain(file.dynamic_symbols())
            .filter(|s| s.kind() == SymbolKind::Text && s.size() > 0 && s.is_definition())
            .map(|s| s.address()..s.address() + s.size())
            .collect();
        functions.sort_by_key(|r| (r.start, r.end));
        functions.dedup_by_key(|r| r.start);
        let mut exports: Vec<Export> = file
            .dynamic_symbols()
            .filter(|s| !s.is_undefined() && s.is_global() && s.address() != 0)
            .filter_map(|s| {
                let st_type = match s.flags() {
                    SymbolFlags::Elf { st_info, .. } => st_info & 0xf,
                    _ => return None,
                };
                let ifunc = st_type == elf::STT_GNU_IFUNC;
                (st_type == elf::STT_FUNC || ifunc).then(|| Export {
                    name: s.name().unwrap_or("").split('@').next().unwrap_or("").to_string(),
                    addr: s.address(),
                    size: s.size(),
                    ifunc,
                })
            })
            .collect();
        let symbols = file
            .symbols()
            .chain(file.dynamic_symbols())
            .filter(|s| !s.is_undefined() && s.address() != 0)
            .filter_map(|s| Some((s.name().ok()?.split('@').next()?.to_string(), s.address())))
            .filter(|(n, _)| !n.is_empty())
            .collect();
        exports.sort_by(|a, b| (a.addr, &a.name).cmp(&(b.addr, &b.name)));
        exports.dedup_by(|a, b| a.name == b.name);
        drop(file);
        Ok(ElfModule { path: path.to_string(), data, relocatable, first_vaddr, functions, exports, symbols, segments })
    }

    /// The exported functions, by address.
    pub fn exports(&self) -> &[Export] {
        &self.exports
    }

    /// The exported function called `name`.
    pub fn export(&self, name: &str) -> Option<&Export> {
        self.exports.iter().find(|e| e.name == name)
    }

    /// The address of any defined symbol called `name` (function or variable, exported or
    /// from the static symbol table).
    pub fn symbol(&self, name: &str) -> Option<u64> {
        self.symbols.get(name).copied()
    }

    /// The extent of the function symbol containing image address `vaddr`.
    pub fn function_containing(&self, vaddr: u64) -> Option<Range<u64>> {
        let i = self.functions.partition_point(|r| r.start <= vaddr);
        self.functions[..i].iter().rev().take(8).find(|r| r.contains(&vaddr)).cloned()
    }

    /// The file-backed bytes of image addresses `range` (cut short at the segment's end).
    pub fn bytes(&self, range: Range<u64>) -> Option<&[u8]> {
        let (vaddrs, file) = self.segments.iter().find(|(v, f)| v.contains(&range.start) && !f.is_empty())?;
        let start = file.start + (range.start - vaddrs.start) as usize;
        let end = (file.start + (range.end.min(vaddrs.end) - vaddrs.start) as usize).min(file.end);
        self.data.get(start..end.max(start))
    }

    /// Up to five exported names close to `name`, for "did you mean" messages.
    pub fn similar_names(&self, name: &str) -> Vec<String> {
        let mut scored: Vec<(usize, &str)> = self
            .exports
            .iter()
            .map(|e| (edit_distance(&e.name, name), e.name.as_str()))
            .filter(|(d, n)| *d <= 2 + name.len() / 4 || n.contains(name))
            .collect();
        scored.sort();
        scored.dedup_by_key(|s| s.1);
        scored.into_iter().take(5).map(|(_, n)| n.to_string()).collect()
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diag = row[0];
        row[0] = i + 1;
        for (j, &cb) in b.iter().enumerate() {
            let next = (row[j + 1] + 1).min(row[j] + 1).min(diag + usize::from(ca != cb));
            diag = row[j + 1];
            row[j + 1] = next;
        }
    }
    row[b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_libc_exports_and_extents() {
        let libc = ElfModule::open("/lib/x86_64-linux-gnu/libc.so.6").unwrap();
        assert!(libc.relocatable);
        assert!(libc.exports().len() > 1500);
        let puts = libc.export("puts").unwrap();
        assert!(puts.size > 0 && !puts.ifunc);
        assert!(libc.export("strlen").unwrap().ifunc);
        assert_eq!(libc.function_containing(puts.addr + 1), Some(puts.addr..puts.addr + puts.size));
        assert_eq!(libc.bytes(puts.addr..puts.addr + 4).map(<[u8]>::len), Some(4));
        assert!(libc.similar_names("pust").contains(&"puts".to_string()));
    }

    #[test]
    fn refuses_what_is_not_a_64_bit_x86_elf() {
        assert!(matches!(ElfModule::open("/etc/passwd"), Err(HookError::BadModule { .. })));
        assert!(matches!(ElfModule::open("/nonexistent"), Err(HookError::BadModule { .. })));
    }
}
