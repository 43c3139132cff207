//! `-t cov`: drcov coverage files. A block is recorded when it is built (no cost while the
//! program runs); `--hitcount` adds a per-thread execution counter to every block and writes
//! the counts beside the drcov file.

use super::drcov::{self, Block};
use crate::tool::{BlockView, Counter, Finish, Instrument, Tool};
use crate::RunError;
use rustc_hash::FxHashMap;
use std::fmt::Write as _;

/// The coverage tool.
#[derive(Debug)]
pub struct Cov {
    version: u8,
    blocks: Vec<Block>,
    /// Index in `blocks` of every block recorded.
    seen: FxHashMap<Block, usize>,
    hits: Option<Vec<Counter>>,
}

impl Cov {
    /// Writes drcov `version` (3 or 2); counts executions with `hitcount`.
    pub fn new(version: u8, hitcount: bool) -> Result<Cov, RunError> {
        if version != 2 && version != 3 {
            return Err(RunError::Unsupported(format!("drcov version {version} (3, or 2 for older readers)")));
        }
        Ok(Cov { version, blocks: Vec::new(), seen: FxHashMap::default(), hits: hitcount.then(Vec::new) })
    }

    fn file_name(finish: &Finish<'_>) -> std::path::PathBuf {
        let program = finish.program.rsplit('/').next().unwrap_or(finish.program);
        let pid = std::process::id();
        (0..10_000)
            .map(|seq| finish.output.file(&format!("drcov.{program}.{pid:05}.{seq:04}.proc.log")))
            .find(|p| !p.exists())
            .unwrap_or_else(|| finish.output.file(&format!("drcov.{program}.{pid:05}.proc.log")))
    }
}

impl Tool for Cov {
    fn on_block(&mut self, block: &BlockView<'_>, instrument: &mut Instrument<'_>) {
        let Some(seg) = block.segment else { return };
        let b = Block { segment: seg.id, offset: (block.tag - seg.range.start) as u32, size: block.size().min(u16::MAX as u64) as u16 };
        let index = *self.seen.entry(b).or_insert_with(|| {
            self.blocks.push(b);
            self.blocks.len() - 1
        });
        let Some(hits) = &mut self.hits else { return };
        // A block built again (its code was replaced, or re-verified) counts on in its counter.
        if index == hits.len() {
            match instrument.new_counter() {
                Some(c) => hits.push(c),
                None => {
                    self.hits = None;
                    return;
                }
            }
        }
        instrument.count_block(hits[index], 1);
    }

    fn on_exit(&mut self, finish: &Finish<'_>) {
        let path = Self::file_name(finish);
        let data = drcov::write(self.version, finish.segments, &self.blocks);
        if let Err(e) = std::fs::write(&path, data) {
            finish.output.report(&[format!("cov: cannot write {}: {e}", path.display())]);
            return;
        }
        let mut lines = vec![format!("cov: {} blocks in {}", self.blocks.len(), path.display())];
        if let Some(hits) = &self.hits {
            let mut text = String::from("# module_id offset size hits\n");
            for (b, c) in self.blocks.iter().zip(hits) {
                let _ = writeln!(text, "{} {:#x} {} {}", b.segment, b.offset, b.size, finish.total(*c));
            }
            let counts = path.with_extension("hits.txt");
            match std::fs::write(&counts, text) {
                Ok(()) => lines.push(format!("cov: execution counts in {}", counts.display())),
                Err(e) => lines.push(format!("cov: cannot write {}: {e}", counts.display())),
            }
        }
        finish.output.report(&lines);
    }
}
