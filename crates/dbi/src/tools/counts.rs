//! Counting tools: `inscount` (exact dynamic instruction count), `bbcount` (blocks built and
//! executed, the hottest blocks), `opcodes` (dynamic mnemonic mix), all with per-thread
//! inline counters: `inscount` adds block lengths to a few counters per module, the others
//! count each block's executions and multiply by what it holds.

use crate::tool::{BlockView, Counter, Finish, Instrument, Tool};
use iced_x86::Mnemonic;
use std::collections::BTreeMap;

fn place(block: &BlockView<'_>) -> String {
    match block.segment {
        Some(s) => format!("{}+{:#x}", s.path.rsplit('/').next().unwrap_or(&s.path), block.tag - s.range.start + s.offset),
        None => format!("{:#x}", block.tag),
    }
}

/// Counters a module's instructions are added to, chosen by block address: one counter for
/// all blocks would chain every block's add through one memory location, one per block
/// spreads a large program's adds over a megabyte of counters (cc1: 116,000 blocks) that
/// compete with the program for the data cache. Sixteen lanes are two cache lines.
const LANES: usize = 16;

/// `-t inscount`. Every block adds its length to a counter of its module (see [`LANES`]);
/// the total is the sum of the counters.
#[derive(Debug)]
pub struct InsCount {
    per_module: bool,
    /// Module names, indexed like `lanes`.
    modules: Vec<String>,
    /// The counters of each module.
    lanes: Vec<[Counter; LANES]>,
    /// Some module came after the counter area filled up: its instructions are counted
    /// with the first module's.
    late_modules: bool,
}

impl InsCount {
    /// With a per-module breakdown when `per_module`.
    pub fn new(per_module: bool) -> InsCount {
        InsCount { per_module, modules: Vec::new(), lanes: Vec::new(), late_modules: false }
    }

    /// The index of the block's module (0 for all without the breakdown), its counters
    /// taken at its first block.
    fn module_index(&mut self, block: &BlockView<'_>, instrument: &mut Instrument<'_>) -> Option<usize> {
        let name = if self.per_module { block.segment.map_or("[anon]", |s| s.path.as_str()) } else { "" };
        if let Some(i) = self.modules.iter().position(|m| m == name) {
            return Some(i);
        }
        let lanes: Option<Vec<Counter>> = (0..LANES).map(|_| instrument.new_counter()).collect();
        match lanes.and_then(|l| <[Counter; LANES]>::try_from(l).ok()) {
            Some(lanes) => {
                self.lanes.push(lanes);
                self.modules.push(name.to_string());
                Some(self.modules.len() - 1)
            }
            None => {
                self.late_modules = true;
                (!self.lanes.is_empty()).then_some(0)
            }
        }
    }
}

impl Tool for InsCount {
    fn wants_modules(&self) -> bool {
        self.per_module
    }

    fn on_block(&mut self, block: &BlockView<'_>, instrument: &mut Instrument<'_>) {
        let Some(module) = self.module_index(block, instrument) else { return };
        let lane = (block.tag ^ block.tag >> 6) as usize % LANES;
        instrument.count_block(self.lanes[module][lane], block.insns.len() as u32);
    }

    fn on_exit(&mut self, finish: &Finish<'_>) {
        let per_module: Vec<u64> = self.lanes.iter().map(|lanes| lanes.iter().map(|&c| finish.total(c)).sum()).collect();
        let mut lines = vec![format!("instructions: {}", per_module.iter().sum::<u64>())];
        if self.per_module {
            let mut rows: Vec<(u64, &String)> = per_module.into_iter().zip(&self.modules).collect();
            rows.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
            lines.extend(rows.into_iter().map(|(n, m)| format!("  {n:>14}  {m}")));
            if self.late_modules {
                lines.push(format!("  (modules seen after the counter area filled up are counted with {})", self.modules[0]));
            }
        }
        finish.output.report(&lines);
    }
}

/// `-t bbcount`.
#[derive(Debug)]
pub struct BbCount {
    top: usize,
    blocks: Vec<(String, Counter)>,
}

impl BbCount {
    /// Listing the `top` hottest blocks.
    pub fn new(top: usize) -> BbCount {
        BbCount { top, blocks: Vec::new() }
    }
}

impl Tool for BbCount {
    fn on_block(&mut self, block: &BlockView<'_>, instrument: &mut Instrument<'_>) {
        if let Some(c) = instrument.new_counter() {
            instrument.count_block(c, 1);
            self.blocks.push((place(block), c));
        }
    }

    fn on_exit(&mut self, finish: &Finish<'_>) {
        let mut counted: Vec<(u64, &str)> = self.blocks.iter().map(|(p, c)| (finish.total(*c), p.as_str())).collect();
        let executed: u64 = counted.iter().map(|c| c.0).sum();
        counted.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
        let mut lines = vec![
            format!("blocks built: {}", self.blocks.len()),
            format!("blocks executed: {executed}"),
            format!("hottest {} blocks:", self.top.min(counted.len())),
        ];
        lines.extend(counted.iter().take(self.top).map(|(n, p)| format!("  {n:>14}  {p}")));
        finish.output.report(&lines);
    }
}

/// `-t opcodes`.
#[derive(Debug)]
pub struct Opcodes {
    top: usize,
    blocks: Vec<(Counter, Vec<(Mnemonic, u32)>)>,
}

impl Opcodes {
    /// Listing the `top` most executed mnemonics.
    pub fn new(top: usize) -> Opcodes {
        Opcodes { top, blocks: Vec::new() }
    }
}

impl Tool for Opcodes {
    fn on_block(&mut self, block: &BlockView<'_>, instrument: &mut Instrument<'_>) {
        let Some(c) = instrument.new_counter() else { return };
        instrument.count_block(c, 1);
        let mut mix: BTreeMap<Mnemonic, u32> = BTreeMap::new();
        for insn in block.insns {
            *mix.entry(insn.mnemonic()).or_default() += 1;
        }
        self.blocks.push((c, mix.into_iter().collect()));
    }

    fn on_exit(&mut self, finish: &Finish<'_>) {
        let mut mix: BTreeMap<Mnemonic, u64> = BTreeMap::new();
        for (c, m) in &self.blocks {
            let runs = finish.total(*c);
            for (mnemonic, n) in m {
                *mix.entry(*mnemonic).or_default() += runs * *n as u64;
            }
        }
        let total: u64 = mix.values().sum();
        let mut rows: Vec<(u64, Mnemonic)> = mix.into_iter().map(|(m, n)| (n, m)).collect();
        rows.sort_by_key(|r| std::cmp::Reverse(r.0));
        let mut lines =
            vec![format!("opcodes: {total} instructions, {} distinct mnemonics; top {}:", rows.len(), self.top.min(rows.len()))];
        lines.extend(rows.iter().take(self.top).map(|(n, m)| {
            let name = format!("{m:?}").to_lowercase();
            format!("  {name:<12} {n:>14}  {:6.2}%", 100.0 * *n as f64 / total.max(1) as f64)
        }));
        finish.output.report(&lines);
    }
}
