//! `-t cov`: drcov coverage files. A block is recorded when it is built (no cost while the
//! program runs); `--hitcount` adds a per-thread execution counter to every block and writes
//! the counts beside the drcov file. Files are written atomically (a reader never sees half
//! of one), under one name per process, at the end and at every `--flush-interval`.

use super::drcov::{self, Block};
use crate::tool::{write_atomically, BlockView, Counter, Finish, Instrument, Tool};
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
    /// This process's drcov file, once named.
    path: Option<std::path::PathBuf>,
}

impl Cov {
    /// Writes drcov `version` (3 or 2); counts executions with `hitcount`.
    pub fn new(version: u8, hitcount: bool) -> Result<Cov, RunError> {
        if version != 2 && version != 3 {
            return Err(RunError::Unsupported(format!("drcov version {version} (3, or 2 for older readers)")));
        }
        Ok(Cov { version, blocks: Vec::new(), seen: FxHashMap::default(), hits: hitcount.then(Vec::new), path: None })
    }

    /// This process's drcov file: the first free sequence number for its program and pid.
    fn file_name(&mut self, finish: &Finish<'_>) -> std::path::PathBuf {
        if let Some(p) = &self.path {
            return p.clone();
        }
        let program = finish.program.rsplit('/').next().unwrap_or(finish.program);
        let pid = std::process::id();
        let path = (0..10_000)
            .map(|seq| finish.output.file(&format!("drcov.{program}.{pid:05}.{seq:04}.proc.log")))
            .find(|p| !p.exists())
            .unwrap_or_else(|| finish.output.file(&format!("drcov.{program}.{pid:05}.proc.log")));
        self.path = Some(path.clone());
        path
    }

    /// Writes the drcov file and the hit counts; returns the report lines, or what was lost.
    fn write(&mut self, finish: &Finish<'_>) -> Result<Vec<String>, String> {
        let path = self.file_name(finish);
        let data = drcov::write(self.version, finish.segments, &self.blocks);
        let lost =
            |path: &std::path::Path, e: std::io::Error, what: String| format!("cov: could not write {}: {e}: lost {what}", path.display());
        write_atomically(&path, &data).map_err(|e| lost(&path, e, format!("{} blocks of coverage", self.blocks.len())))?;
        let mut lines = vec![format!("cov: {} blocks in {}", self.blocks.len(), path.display())];
        if let Some(hits) = &self.hits {
            let mut text = String::from("# module_id offset size hits\n");
            for (b, c) in self.blocks.iter().zip(hits) {
                let _ = writeln!(text, "{} {:#x} {} {}", b.segment, b.offset, b.size, finish.total(*c));
            }
            let counts = path.with_extension("hits.txt");
            write_atomically(&counts, text.as_bytes())
                .map_err(|e| lost(&counts, e, format!("the execution counts of {} blocks", hits.len())))?;
            lines.push(format!("cov: execution counts in {}", counts.display()));
        }
        Ok(lines)
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
        match self.write(finish) {
            Ok(lines) => finish.output.report(&lines),
            Err(lost) => finish.output.lost(lost),
        }
    }

    fn on_checkpoint(&mut self, finish: &Finish<'_>) {
        // A failure now is reported (with what was lost) by the write at the end.
        let _ = self.write(finish);
    }

    fn on_fork_child(&mut self) {
        self.path = None;
    }
}
