//! Per-module and per-function coverage: covered blocks are placed at link-time addresses of
//! the module's ELF file and attributed to the function symbols (symtab and dynsym) that
//! hold them.

use crate::drcov::Coverage;
use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};
use std::collections::BTreeMap;

/// A function's coverage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionCoverage {
    /// Symbol name.
    pub name: String,
    /// Link-time address.
    pub address: u64,
    /// Size in bytes.
    pub size: u64,
    /// Bytes inside covered blocks.
    pub covered: u64,
}

/// A module's coverage.
#[derive(Debug, Clone)]
pub struct ModuleCoverage {
    /// The file.
    pub path: String,
    /// Covered blocks.
    pub blocks: usize,
    /// Covered bytes.
    pub bytes: u64,
    /// Functions by address (empty when the file cannot be read).
    pub functions: Vec<FunctionCoverage>,
}

/// The link-time address of module offset 0 (the lowest PT_LOAD, page-aligned).
pub fn link_base(file: &object::File<'_>) -> u64 {
    file.segments().map(|s| s.address()).min().unwrap_or(0) & !0xfff
}

/// Blocks of `path` as link-time address ranges.
pub fn link_ranges(file: &object::File<'_>, blocks: &std::collections::BTreeSet<(u64, u16)>) -> Vec<(u64, u64)> {
    let base = link_base(file);
    blocks.iter().map(|&(off, size)| (base + off, base + off + size as u64)).collect()
}

/// Coverage of every module in `cov`.
pub fn modules(cov: &Coverage) -> Vec<ModuleCoverage> {
    cov.iter()
        .map(|(path, blocks)| {
            let bytes = blocks.iter().map(|b| b.1 as u64).sum();
            let functions = std::fs::read(path).ok().and_then(|data| functions(&data, blocks)).unwrap_or_default();
            ModuleCoverage { path: path.clone(), blocks: blocks.len(), bytes, functions }
        })
        .collect()
}

fn functions(data: &[u8], blocks: &std::collections::BTreeSet<(u64, u16)>) -> Option<Vec<FunctionCoverage>> {
    let file = object::File::parse(data).ok()?;
    let ranges = link_ranges(&file, blocks);
    let mut by_addr: BTreeMap<u64, FunctionCoverage> = BTreeMap::new();
    for s in file.symbols().chain(file.dynamic_symbols()) {
        if s.kind() != SymbolKind::Text || s.size() == 0 {
            continue;
        }
        let name = s.name().unwrap_or("?").to_string();
        by_addr.entry(s.address()).or_insert(FunctionCoverage { name, address: s.address(), size: s.size(), covered: 0 });
    }
    for f in by_addr.values_mut() {
        let (lo, hi) = (f.address, f.address + f.size);
        f.covered = ranges.iter().map(|&(a, b)| b.min(hi).saturating_sub(a.max(lo))).sum();
    }
    Some(by_addr.into_values().collect())
}

/// The text report: a line per module, then per function for modules whose path contains
/// `detail` (hit and missed).
pub fn text(modules: &[ModuleCoverage], detail: &str) -> Vec<String> {
    let mut out = Vec::new();
    for m in modules {
        let hit = m.functions.iter().filter(|f| f.covered > 0).count();
        out.push(format!(
            "{}: {} blocks, {} bytes covered; functions {hit} of {} ({:.1}%)",
            m.path,
            m.blocks,
            m.bytes,
            m.functions.len(),
            100.0 * hit as f64 / m.functions.len().max(1) as f64
        ));
        if !detail.is_empty() && m.path.contains(detail) {
            for f in &m.functions {
                out.push(format!(
                    "  {:6.1}%  {:>6} of {:>6} bytes  {:#x}  {}",
                    100.0 * f.covered as f64 / f.size as f64,
                    f.covered,
                    f.size,
                    f.address,
                    f.name
                ));
            }
        }
    }
    out
}
