//! Counting tools: `inscount` (exact dynamic instruction count), `bbcount` (blocks built and
//! executed, the hottest blocks), `opcodes` (dynamic mnemonic mix). All count block
//! executions with per-thread inline counters, one per block, and multiply by what each block holds.

use crate::tool::{BlockView, Counter, Finish, Instrument, Tool};
use iced_x86::Mnemonic;
use rustc_hash::FxHashMap;
use std::collections::BTreeMap;

fn place(block: &BlockView<'_>) -> String {
    match block.segment {
        Some(s) => format!("{}+{:#x}", s.path.rsplit('/').next().unwrap_or(&s.path), block.tag - s.range.start + s.offset),
        None => format!("{:#x}", block.tag),
    }
}

/// `-t inscount`. Every block counts its own executions (a counter shared by all blocks
/// would chain every block's increment through one memory location); the total is each
/// block's executions times its length.
#[derive(Debug)]
pub struct InsCount {
    per_module: bool,
    /// Module names, indexed by `Weighted::module`.
    modules: Vec<String>,
    /// Counter of each (tag, instructions, module index) built so far: a block rebuilt alike
    /// reuses it. One execution adds the instructions to the module.
    counters: FxHashMap<(u64, u32, u32), Counter>,
    /// Counter of instructions for blocks built once the counter area is full.
    overflow: Option<Counter>,
}

impl InsCount {
    /// With a per-module breakdown when `per_module`.
    pub fn new(per_module: bool) -> InsCount {
        InsCount { per_module, modules: Vec::new(), counters: FxHashMap::default(), overflow: None }
    }

    fn module_index(&mut self, block: &BlockView<'_>) -> u32 {
        if !self.per_module {
            return 0;
        }
        let name = block.segment.map_or("[anon]", |s| s.path.as_str());
        match self.modules.iter().position(|m| m == name) {
            Some(i) => i as u32,
            None => {
                self.modules.push(name.to_string());
                self.modules.len() as u32 - 1
            }
        }
    }
}

impl Tool for InsCount {
    fn on_block(&mut self, block: &BlockView<'_>, instrument: &mut Instrument<'_>) {
        let insns = block.insns.len() as u32;
        if self.overflow.is_none() {
            self.overflow = instrument.new_counter();
        }
        let module = self.module_index(block);
        let key = (block.tag, insns, module);
        let counter = match self.counters.get(&key) {
            Some(&c) => Some(c),
            None => instrument.new_counter().inspect(|&c| {
                self.counters.insert(key, c);
            }),
        };
        match (counter, self.overflow) {
            (Some(c), _) => instrument.count_block(c, 1),
            (None, Some(overflow)) => instrument.count_block(overflow, insns),
            (None, None) => {}
        }
    }

    fn on_exit(&mut self, finish: &Finish<'_>) {
        let mut per_module = vec![0u64; self.modules.len().max(1)];
        for (&(_, insns, module), &counter) in &self.counters {
            per_module[module as usize] += finish.total(counter) * insns as u64;
        }
        let overflow = self.overflow.map_or(0, |c| finish.total(c));
        let total = per_module.iter().sum::<u64>() + overflow;
        let mut lines = vec![format!("instructions: {total}")];
        if self.per_module {
            let unattributed = "[blocks built after the counter area filled]".to_string();
            let mut rows: Vec<(u64, &String)> = self.modules.iter().zip(per_module).map(|(m, n)| (n, m)).collect();
            if overflow > 0 {
                rows.push((overflow, &unattributed));
            }
            rows.sort_by(|a, b| b.0.cmp(&a.0).then(a.1.cmp(b.1)));
            lines.extend(rows.into_iter().map(|(n, m)| format!("  {n:>14}  {m}")));
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
