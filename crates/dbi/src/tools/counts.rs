//! Counting tools: `inscount` (exact dynamic instruction count), `bbcount` (blocks built and
//! executed, the hottest blocks), `opcodes` (dynamic mnemonic mix). All count block
//! executions with per-thread inline counters and multiply by what each block holds.

use crate::tool::{BlockView, Counter, Finish, Instrument, Tool};
use iced_x86::Mnemonic;
use std::collections::BTreeMap;

fn place(block: &BlockView<'_>) -> String {
    match block.segment {
        Some(s) => format!("{}+{:#x}", s.path.rsplit('/').next().unwrap_or(&s.path), block.tag - s.range.start + s.offset),
        None => format!("{:#x}", block.tag),
    }
}

/// `-t inscount`.
#[derive(Debug)]
pub struct InsCount {
    total: Option<Counter>,
    per_module: Option<BTreeMap<String, Counter>>,
}

impl InsCount {
    /// With a per-module breakdown when `per_module`.
    pub fn new(per_module: bool) -> InsCount {
        InsCount { total: None, per_module: per_module.then(BTreeMap::new) }
    }
}

impl Tool for InsCount {
    fn on_block(&mut self, block: &BlockView<'_>, instrument: &mut Instrument<'_>) {
        let n = block.insns.len() as u32;
        if self.total.is_none() {
            self.total = instrument.new_counter();
        }
        if let Some(c) = self.total {
            instrument.count_block(c, n);
        }
        if let Some(per) = &mut self.per_module {
            let name = block.segment.map_or_else(|| "[anon]".to_string(), |s| s.path.clone());
            let c = match per.get(&name) {
                Some(&c) => Some(c),
                None => instrument.new_counter().inspect(|&c| {
                    per.insert(name, c);
                }),
            };
            if let Some(c) = c {
                instrument.count_block(c, n);
            }
        }
    }

    fn on_exit(&mut self, finish: &Finish<'_>) {
        let total = self.total.map_or(0, |c| finish.total(c));
        let mut lines = vec![format!("instructions: {total}")];
        if let Some(per) = &self.per_module {
            let mut rows: Vec<(u64, &String)> = per.iter().map(|(m, &c)| (finish.total(c), m)).collect();
            rows.sort_by_key(|r| std::cmp::Reverse(r.0));
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
