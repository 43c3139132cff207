//! Per-module and per-function coverage: covered blocks are placed at link-time addresses of
//! the module's ELF file, merged into an interval union, and attributed to the function
//! symbols (symtab and dynsym, and the symtab of a separate debug file) that hold them;
//! instructions and conditional branches come from decoding the functions.

use crate::code::{self, Insn};
use crate::debuginfo::DebugSearch;
use crate::drcov::{BlockKey, Coverage};
use crate::intervals::Intervals;
use crate::lines::{self, Sources, Totals};
use object::{Object, ObjectSegment, ObjectSymbol, SymbolKind};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// A function's coverage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionCoverage {
    /// Symbol name.
    pub name: String,
    /// Link-time address.
    pub address: u64,
    /// Size in bytes.
    pub size: u64,
    /// Bytes that ran, each counted once.
    pub covered: u64,
    /// Instructions.
    pub instructions: u64,
    /// Instructions that ran.
    pub covered_instructions: u64,
    /// Times its first byte ran.
    pub calls: u64,
    /// Conditional branches' outcomes (two per branch) and those seen taken.
    pub branches: (u64, u64),
    /// Source file and line of its entry, from DWARF.
    pub source: Option<(String, u32)>,
}

impl FunctionCoverage {
    /// Covered bytes as a percentage of the function's size.
    pub fn percent(&self) -> f64 {
        percent(self.covered, self.size)
    }
}

/// `part` of `whole` in percent (0 for an empty whole).
pub fn percent(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        100.0 * part as f64 / whole as f64
    }
}

/// A module's coverage.
#[derive(Debug, Clone)]
pub struct ModuleCoverage {
    /// The file.
    pub path: String,
    /// Distinct covered blocks.
    pub blocks: usize,
    /// Covered bytes, each counted once.
    pub bytes: u64,
    /// Covered instructions, each counted once.
    pub instructions: u64,
    /// Functions by address (empty when the file cannot be read).
    pub functions: Vec<FunctionCoverage>,
    /// Source lines, functions and branches from DWARF.
    pub sources: Sources,
    /// The separate debug file read, if any.
    pub debug_file: Option<PathBuf>,
}

impl ModuleCoverage {
    /// Lines from DWARF; functions and branches from the symbols and the decoded code (so a
    /// module without DWARF has them too).
    pub fn totals(&self) -> Totals {
        let lines = lines::totals(self.sources.values());
        let mut t = Totals { lines: lines.lines, lines_hit: lines.lines_hit, ..Totals::default() };
        for f in &self.functions {
            t.functions += 1;
            t.functions_hit += (f.covered > 0) as u64;
            t.branches += f.branches.0;
            t.branches_hit += f.branches.1;
        }
        t
    }
}

/// The source files of all `modules`, their counts added where several modules share one.
pub fn sources(modules: &[ModuleCoverage]) -> Sources {
    let mut out = Sources::new();
    for m in modules {
        for (path, file) in &m.sources {
            out.entry(path.clone()).or_default().merge(file);
        }
    }
    out
}

/// The link-time address of module offset 0 (the lowest PT_LOAD, page-aligned).
pub fn link_base(file: &object::File<'_>) -> u64 {
    file.segments().map(|s| s.address()).min().unwrap_or(0) & !0xfff
}

/// Whether the file at `path` is an ELF file (false for data files a loader maps, such as
/// `/etc/ld.so.cache`; true when it cannot be read, such as `[vdso]`).
fn is_code_module(path: &str) -> bool {
    use std::io::Read as _;
    let mut magic = [0u8; 4];
    match std::fs::File::open(path).and_then(|mut f| f.read_exact(&mut magic)) {
        Ok(()) => magic == *b"\x7fELF",
        Err(_) => !Path::new(path).is_file(),
    }
}

/// Coverage of every code module in `cov` (data mappings left out), with separate debug
/// files looked up in `debug`.
pub fn modules(cov: &Coverage, debug: &DebugSearch) -> Vec<ModuleCoverage> {
    cov.iter().filter(|(path, _)| is_code_module(path)).map(|(path, blocks)| module(path, blocks, debug)).collect()
}

fn module(path: &str, blocks: &BTreeMap<BlockKey, u64>, debug: &DebugSearch) -> ModuleCoverage {
    let mut m = ModuleCoverage {
        path: path.to_string(),
        blocks: blocks.len(),
        bytes: 0,
        instructions: 0,
        functions: Vec::new(),
        sources: Sources::new(),
        debug_file: None,
    };
    let data = std::fs::read(path).ok();
    let file = data.as_deref().and_then(|d| object::File::parse(d).ok());
    let base = file.as_ref().map_or(0, link_base);
    let iv = Intervals::new(blocks.iter().map(|(&(off, size), &count)| (base + off, base + off + size as u64, count)));
    m.bytes = iv.total();
    let Some(file) = file else { return m };
    m.instructions = iv.pieces().iter().map(|&(lo, hi, _)| code::decode(&file, lo, hi).iter().filter(|i| i.ip < hi).count() as u64).sum();
    m.debug_file = debug.find(Path::new(path), &file);
    let debug_data = m.debug_file.as_ref().and_then(|p| std::fs::read(p).ok());
    let debug_file = debug_data.as_deref().and_then(|d| object::File::parse(d).ok());
    let mut code: Vec<(FunctionCoverage, Vec<Insn>)> = function_symbols(&file, debug_file.as_ref())
        .into_iter()
        .map(|(address, size, name)| {
            let insns = code::decode(&file, address, address + size);
            let mut f = FunctionCoverage {
                name,
                address,
                size,
                covered: iv.covered(address, address + size),
                instructions: insns.len() as u64,
                covered_instructions: insns.iter().filter(|i| iv.count_at(i.ip) > 0).count() as u64,
                calls: iv.count_at(address),
                branches: (0, 0),
                source: None,
            };
            let outcomes = insns.iter().filter_map(|i| branch_counts(&iv, i)).flat_map(|(a, b)| [a, b]);
            f.branches = outcomes.fold((0, 0), |(n, hit), c| (n + 1, hit + (c.unwrap_or(0) > 0) as u64));
            (f, insns)
        })
        .collect();
    let dwarf_path = m.debug_file.clone().unwrap_or_else(|| PathBuf::from(path));
    if let Ok(loader) = addr2line::Loader::new(&dwarf_path) {
        m.sources = lines::attribute(&loader, &iv, &mut code);
    }
    m.functions = code.into_iter().map(|(f, _)| f).collect();
    m
}

/// The counts of a conditional branch's two outcomes (taken, fall-through), each bounded by
/// how often the branch itself ran; `None` for both when it never ran.
pub fn branch_counts(iv: &Intervals, insn: &Insn) -> Option<(Option<u64>, Option<u64>)> {
    let target = insn.branch_target?;
    let ran = iv.count_at(insn.ip);
    if ran == 0 {
        return Some((None, None));
    }
    Some((Some(iv.count_at(target).min(ran)), Some(iv.count_at(insn.next).min(ran))))
}

/// Function symbols by address: (address, size, name); of several names for one address,
/// a global one without leading underscores is preferred.
fn function_symbols(file: &object::File<'_>, debug: Option<&object::File<'_>>) -> Vec<(u64, u64, String)> {
    let mut by_addr: BTreeMap<u64, (u64, (bool, usize), String)> = BTreeMap::new();
    let symbols = file.symbols().chain(file.dynamic_symbols()).chain(debug.into_iter().flat_map(|d| d.symbols()));
    for s in symbols {
        if s.kind() != SymbolKind::Text || s.size() == 0 {
            continue;
        }
        let Ok(name) = s.name() else { continue };
        let rank = (!s.is_global(), name.len() - name.trim_start_matches('_').len());
        let entry = by_addr.entry(s.address()).or_insert((s.size(), rank, name.to_string()));
        if rank < entry.1 {
            *entry = (s.size(), rank, name.to_string());
        }
    }
    by_addr.into_iter().map(|(a, (size, _, name))| (a, size, name)).collect()
}

/// The text report: a line per module, then per function for modules whose path contains
/// `detail` (hit and missed).
pub fn text(modules: &[ModuleCoverage], detail: &str) -> Vec<String> {
    let mut out = Vec::new();
    for m in modules {
        let hit = m.functions.iter().filter(|f| f.covered > 0).count();
        out.push(format!(
            "{}: {} blocks, {} bytes, {} instructions covered; functions {hit} of {} ({:.1}%)",
            m.path,
            m.blocks,
            m.bytes,
            m.instructions,
            m.functions.len(),
            percent(hit as u64, m.functions.len() as u64)
        ));
        if !detail.is_empty() && m.path.contains(detail) {
            for f in &m.functions {
                out.push(format!(
                    "  {:6.1}%  {:>6} of {:>6} bytes  {:>5} of {:>5} instructions  {:#x}  {}",
                    f.percent(),
                    f.covered,
                    f.size,
                    f.covered_instructions,
                    f.instructions,
                    f.address,
                    f.name
                ));
            }
        }
    }
    out
}

/// What `new` covers that `base` does not, per function: `new` is the coverage of the bytes
/// the second run ran and the first did not (`B - A`), `base` the first run's.
pub fn diff_text(base: &[ModuleCoverage], new: &[ModuleCoverage]) -> Vec<String> {
    let mut out = Vec::new();
    let (mut bytes, mut functions, mut entered) = (0, 0, 0);
    for m in new {
        let before: BTreeMap<u64, &FunctionCoverage> =
            base.iter().filter(|b| b.path == m.path).flat_map(|b| &b.functions).map(|f| (f.address, f)).collect();
        let gained: Vec<&FunctionCoverage> = m.functions.iter().filter(|f| f.covered > 0).collect();
        if gained.is_empty() {
            continue;
        }
        out.push(format!("{}:", m.path));
        for f in gained {
            let first = before.get(&f.address).is_none_or(|b| b.covered == 0);
            out.push(format!(
                "  +{:>6} bytes  +{:>5} instructions  {:#x}  {}{}",
                f.covered,
                f.covered_instructions,
                f.address,
                f.name,
                if first { "  (newly entered)" } else { "" }
            ));
            bytes += f.covered;
            functions += 1;
            entered += first as u64;
        }
    }
    out.push(format!("B covers {bytes} bytes in {functions} functions that A does not ({entered} functions A never entered)"));
    out
}
