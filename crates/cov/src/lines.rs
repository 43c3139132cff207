//! Source lines from DWARF: which lines of which files have code (rows of the line programs
//! inside the module's functions), how many times each ran (the most any byte of its rows
//! ran), where each function starts, and on which line each conditional branch sits.

use crate::code::Insn;
use crate::intervals::Intervals;
use crate::report::{branch_counts, FunctionCoverage};
use std::collections::{BTreeMap, HashMap};

/// One source file's coverage.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SourceFile {
    /// Line → times it ran (0: it has code that did not run).
    pub lines: BTreeMap<u32, u64>,
    /// Function name → (first line, times it was entered).
    pub functions: BTreeMap<String, (u32, u64)>,
    /// (line, branch number on that line) → counts of its outcomes (taken, fall-through);
    /// `None` where the branch never ran.
    pub branches: BTreeMap<(u32, u32), [Option<u64>; 2]>,
}

/// Per source file path.
pub type Sources = BTreeMap<String, SourceFile>;

/// Lines, functions and branches: how many there are and how many ran.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Totals {
    /// Lines with code.
    pub lines: u64,
    /// Of them, lines that ran.
    pub lines_hit: u64,
    /// Functions.
    pub functions: u64,
    /// Of them, functions entered.
    pub functions_hit: u64,
    /// Branch outcomes (two per conditional branch).
    pub branches: u64,
    /// Of them, outcomes seen taken.
    pub branches_hit: u64,
}

impl std::ops::AddAssign for Totals {
    fn add_assign(&mut self, o: Totals) {
        self.lines += o.lines;
        self.lines_hit += o.lines_hit;
        self.functions += o.functions;
        self.functions_hit += o.functions_hit;
        self.branches += o.branches;
        self.branches_hit += o.branches_hit;
    }
}

impl SourceFile {
    /// The file's totals.
    pub fn totals(&self) -> Totals {
        let outcomes = self.branches.values().flatten();
        Totals {
            lines: self.lines.len() as u64,
            lines_hit: self.lines.values().filter(|c| **c > 0).count() as u64,
            functions: self.functions.len() as u64,
            functions_hit: self.functions.values().filter(|f| f.1 > 0).count() as u64,
            branches: outcomes.clone().count() as u64,
            branches_hit: outcomes.filter(|c| c.unwrap_or(0) > 0).count() as u64,
        }
    }

    /// The branch outcomes on `line`: (seen taken, there are).
    pub fn line_branches(&self, line: u32) -> (usize, usize) {
        let outcomes = self.branches.range((line, 0)..=(line, u32::MAX)).flat_map(|(_, o)| o);
        outcomes.fold((0, 0), |(taken, n), c| (taken + (c.unwrap_or(0) > 0) as usize, n + 1))
    }

    /// Adds `other`'s counts to this file's.
    pub fn merge(&mut self, other: &SourceFile) {
        for (l, c) in &other.lines {
            *self.lines.entry(*l).or_insert(0) += c;
        }
        for (name, (line, c)) in &other.functions {
            self.functions.entry(name.clone()).or_insert((*line, 0)).1 += c;
        }
        for (k, outcomes) in &other.branches {
            let mine = self.branches.entry(*k).or_insert([None, None]);
            for (m, o) in mine.iter_mut().zip(outcomes) {
                if let Some(o) = o {
                    *m = Some(m.unwrap_or(0) + o);
                }
            }
        }
    }
}

/// The totals of several files.
pub fn totals<'a>(files: impl IntoIterator<Item = &'a SourceFile>) -> Totals {
    let mut t = Totals::default();
    for f in files {
        t += f.totals();
    }
    t
}

/// Attributes the covered ranges `iv` of a module to source lines through `loader` (its
/// DWARF), for each function with its decoded instructions; sets each function's `source`.
pub fn attribute(loader: &addr2line::Loader, iv: &Intervals, functions: &mut [(FunctionCoverage, Vec<Insn>)]) -> Sources {
    let mut out = Sources::new();
    let mut per_line: HashMap<(String, u32), u32> = HashMap::new();
    for (f, insns) in functions.iter_mut() {
        let Ok(rows) = loader.find_location_range(f.address, f.address + f.size) else { continue };
        for (addr, len, loc) in rows {
            if let (Some(file), Some(line @ 1..)) = (loc.file, loc.line) {
                let count = iv.max_count(addr, addr + len);
                let c = out.entry(file.to_string()).or_default().lines.entry(line).or_insert(0);
                *c = (*c).max(count);
            }
        }
        let location = |addr: u64| match loader.find_location(addr) {
            Ok(Some(addr2line::Location { file: Some(file), line: Some(line @ 1..), .. })) => Some((file.to_string(), line)),
            _ => None,
        };
        f.source = location(f.address);
        if let Some((file, line)) = &f.source {
            out.entry(file.clone()).or_default().functions.entry(f.name.clone()).or_insert((*line, 0)).1 += f.calls;
        }
        for i in insns.iter() {
            let (Some((taken, fallthrough)), Some((file, line))) = (branch_counts(iv, i), i.branch_target.and_then(|_| location(i.ip)))
            else {
                continue;
            };
            let n = per_line.entry((file.clone(), line)).or_insert(0);
            out.entry(file).or_default().branches.insert((line, *n), [taken, fallthrough]);
            *n += 1;
        }
    }
    out
}
