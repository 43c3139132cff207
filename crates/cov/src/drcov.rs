//! Reading and writing drcov files: header, module table (versions 1 to 5, with or without
//! `containing_id`, `offset`, `preferred_base`), binary BB table, and the `--hitcount` file
//! (`NAME.hits.txt` beside `NAME.log`). Blocks come out as (module path, offset from the
//! module's base, size) with an execution count, which merge across files and runs.

use crate::CovError;
use rustc_hash::FxHashMap;
use std::collections::{BTreeMap, HashMap};
use std::fmt::Write as _;
use std::path::Path;

/// A block of a module: offset from the module's base, size in bytes.
pub type BlockKey = (u64, u16);

/// Covered blocks per module path, with how many times each ran (1 per file that covered it
/// when the file came without execution counts).
pub type Coverage = BTreeMap<String, BTreeMap<BlockKey, u64>>;

/// One line of a module table: which module it belongs to and where it was mapped.
struct Entry {
    containing: usize,
    start: u64,
    path: String,
}

/// The parsed file: module table, format version, and where the BB records start.
struct Header {
    version: u32,
    entries: Vec<Entry>,
    blocks: usize,
    records: usize,
}

/// Whether `data` starts like a drcov file.
pub fn is_drcov(data: &[u8]) -> bool {
    data.starts_with(b"DRCOV VERSION:")
}

fn header(name: &str, data: &[u8]) -> Result<Header, CovError> {
    let bad = |why: &str| CovError::Format(name.to_string(), why.to_string());
    let mut pos = 0;
    let mut line = || -> Result<String, CovError> {
        let end = pos + data[pos..].iter().position(|&b| b == b'\n').ok_or_else(|| bad("header ends early"))?;
        let l = String::from_utf8_lossy(&data[pos..end]).trim_end_matches('\r').to_string();
        pos = end + 1;
        Ok(l)
    };
    if !line()?.starts_with("DRCOV VERSION:") {
        return Err(bad("no DRCOV VERSION line"));
    }
    let mut table = line()?;
    if table.starts_with("DRCOV FLAVOR:") {
        table = line()?;
    }
    let number = |s: &str, what: &str| s.trim().parse::<usize>().map_err(|_| bad(what));
    let (version, count) = if let Some(rest) = table.strip_prefix("Module Table: version ") {
        let (v, c) = rest.split_once(", count ").ok_or_else(|| bad("module table line"))?;
        (number(v, "module table version")? as u32, number(c, "module count")?)
    } else if let Some(c) = table.strip_prefix("Module Table: ") {
        (1, number(c, "module count")?)
    } else {
        return Err(bad("no module table"));
    };
    let columns: Vec<String> = if version > 1 {
        let l = line()?;
        l.strip_prefix("Columns: ").ok_or_else(|| bad("no Columns line"))?.split(", ").map(|c| c.trim().to_string()).collect()
    } else {
        vec!["id".into(), "size".into(), "path".into()]
    };
    let col = |name: &str| columns.iter().position(|c| c == name);
    let (id_col, start_col, path_col) = (col("id"), col("start").or_else(|| col("base")), col("path"));
    let containing_col = col("containing_id");
    let mut entries: Vec<Entry> = Vec::with_capacity(count.min(1 << 16));
    for i in 0..count {
        let l = line()?;
        let n = columns.len();
        // The path is last and may itself contain ", ".
        let fields: Vec<&str> = l.splitn(n, ',').map(|f| f.trim()).collect();
        if fields.len() < n {
            return Err(bad("short module line"));
        }
        let num = |c: Option<usize>| -> u64 {
            c.and_then(|c| fields.get(c)).map_or(0, |f| u64::from_str_radix(f.trim_start_matches("0x"), 16).unwrap_or(0))
        };
        let id = id_col.and_then(|c| fields[c].parse::<usize>().ok()).unwrap_or(i);
        let containing = containing_col.and_then(|c| fields[c].parse::<usize>().ok()).unwrap_or(id);
        let path = path_col.map_or("", |c| fields[c]).to_string();
        entries.push(Entry { containing, start: num(start_col), path });
    }
    let bb = line()?;
    let blocks: usize = bb
        .strip_prefix("BB Table: ")
        .and_then(|r| r.strip_suffix(" bbs"))
        .and_then(|r| r.trim().parse().ok())
        .ok_or_else(|| bad("no BB Table line"))?;
    if blocks.checked_mul(8).is_none_or(|bytes| data.len() - pos < bytes) {
        return Err(bad("BB table shorter than announced"));
    }
    Ok(Header { version, entries, blocks, records: pos })
}

impl Header {
    /// The module (index of its path in `paths`) and module offset of a block that starts
    /// `start` bytes into module table entry `id`.
    fn place(&self, id: usize, start: u64) -> Option<(usize, u64)> {
        let e = self.entries.get(id)?;
        let base = self.entries.get(e.containing).map_or(e.start, |m| m.start);
        // Version 2 starts are module offsets already; later ones are segment offsets.
        let offset = if self.version <= 2 { start } else { (e.start + start).checked_sub(base)? };
        Some((id, offset))
    }
}

/// A module's blocks while merging: block → (count, number of the last file that listed it).
type Counts = FxHashMap<BlockKey, (u64, usize)>;

/// Merges drcov files one at a time: memory grows with the distinct blocks seen, not with
/// the number of files.
#[derive(Debug, Default)]
pub struct Merger {
    index: HashMap<String, usize>,
    modules: Vec<(String, Counts)>,
    files: usize,
}

impl Merger {
    /// Adds one drcov file (and its execution counts, `hits`: the text of its `.hits.txt`);
    /// without counts, each block it holds counts once.
    pub fn add(&mut self, name: &str, data: &[u8], hits: Option<&str>) -> Result<(), CovError> {
        let bad = |why: &str| CovError::Format(name.to_string(), why.to_string());
        let h = header(name, data)?;
        // The whole file is read before anything is merged, so a damaged one leaves no trace.
        // (module table entry, offset, size, count)
        let mut blocks: Vec<(usize, u64, u16, u64)> = Vec::with_capacity(h.blocks);
        match hits {
            None => {
                for r in data[h.records..h.records + h.blocks * 8].chunks_exact(8) {
                    let start = u32::from_le_bytes(r[..4].try_into().expect("4 bytes")) as u64;
                    let size = u16::from_le_bytes(r[4..6].try_into().expect("2 bytes"));
                    let id = u16::from_le_bytes(r[6..].try_into().expect("2 bytes")) as usize;
                    let (e, offset) = h.place(id, start).ok_or_else(|| bad("block of an unknown module"))?;
                    blocks.push((e, offset, size, 1));
                }
            }
            // The counts file lists every block of the drcov file with its count.
            Some(text) => {
                for l in text.lines().filter(|l| !l.starts_with('#') && !l.trim().is_empty()) {
                    let f: Vec<&str> = l.split_whitespace().collect();
                    let parsed = (|| {
                        let id = f.first()?.parse::<usize>().ok()?;
                        let start = u64::from_str_radix(f.get(1)?.trim_start_matches("0x"), 16).ok()?;
                        let size = f.get(2)?.parse::<u16>().ok()?;
                        let count = f.get(3)?.parse::<u64>().ok()?;
                        let (e, offset) = h.place(id, start)?;
                        Some((e, offset, size, count))
                    })();
                    blocks.push(parsed.ok_or_else(|| bad(&format!("execution counts: bad line {l:?}")))?);
                }
            }
        }
        self.files += 1;
        let file = self.files;
        let slots: Vec<usize> = h
            .entries
            .iter()
            .map(|e| {
                *self.index.entry(e.path.clone()).or_insert_with(|| {
                    self.modules.push((e.path.clone(), FxHashMap::default()));
                    self.modules.len() - 1
                })
            })
            .collect();
        for (e, offset, size, count) in blocks {
            let (total, last) = self.modules[slots[e]].1.entry((offset, size)).or_insert((0, 0));
            // A block listed twice in one file counts once.
            if *last != file {
                *total += count;
                *last = file;
            }
        }
        Ok(())
    }

    /// The merged coverage.
    pub fn finish(self) -> Coverage {
        let ran = |blocks: Counts| blocks.into_iter().filter(|b| b.1 .0 > 0).map(|(k, (c, _))| (k, c)).collect();
        self.modules
            .into_iter()
            .map(|(path, blocks)| (path, ran(blocks)))
            .filter(|m: &(String, BTreeMap<BlockKey, u64>)| !m.1.is_empty())
            .collect()
    }
}

/// The execution counts file `rewire run -t cov --hitcount` writes beside a drcov file.
pub fn hits_path(drcov: &Path) -> std::path::PathBuf {
    drcov.with_extension("hits.txt")
}

/// Drcov files read and merged.
#[derive(Debug, Clone, Default)]
pub struct Merged {
    /// The merged coverage.
    pub coverage: Coverage,
    /// The first module of the first file: the program (drcov lists it first).
    pub program: Option<String>,
    /// How many drcov files were read.
    pub files: usize,
}

/// Reads and merges drcov files one at a time (memory grows with the distinct blocks, not
/// with the number of files), with the counts of a `.hits.txt` beside each. An input that is
/// not a drcov file, or a damaged one (a process killed while writing it), is passed to
/// `skipped` with the reason and left out.
pub fn read_files(paths: &[String], skipped: &mut dyn FnMut(&str, &str)) -> Result<Merged, CovError> {
    let mut merger = Merger::default();
    for p in paths {
        let data = std::fs::read(p).map_err(|e| CovError::Io(p.clone(), e))?;
        if !is_drcov(&data) {
            let why = if p.ends_with(".hits.txt") { "execution counts (read with their drcov file)" } else { "not a drcov file" };
            skipped(p, why);
            continue;
        }
        let hits_file = hits_path(Path::new(p));
        let hits = match std::fs::read_to_string(&hits_file) {
            Ok(text) => Some(text),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(CovError::Io(hits_file.display().to_string(), e)),
        };
        match merger.add(p, &data, hits.as_deref()) {
            Err(CovError::Format(_, why)) => skipped(p, &why),
            other => other?,
        }
    }
    let (program, files) = (merger.modules.first().map(|m| m.0.clone()), merger.files);
    Ok(Merged { coverage: merger.finish(), program, files })
}

/// Writes `cov` as a drcov file (version 2: one module table line per module, block starts
/// relative to the module, which every known reader loads) and its execution counts as the
/// text of a `.hits.txt` file in the format `rewire run --hitcount` writes.
pub fn write(cov: &Coverage) -> (Vec<u8>, String) {
    let mut text = format!(
        "DRCOV VERSION: 2\nDRCOV FLAVOR: drcov-64\nModule Table: version 2, count {}\nColumns: id, base, end, entry, path\n",
        cov.len()
    );
    let mut hits = String::from("# module_id offset size hits\n");
    let mut records = Vec::new();
    for (id, (path, blocks)) in cov.iter().enumerate() {
        // Each module at a base of its own; readers only use offsets from it.
        let base = 0x1000_0000_0000u64 + ((id as u64) << 32);
        let end = blocks.keys().map(|&(o, s)| o + s as u64).max().unwrap_or(0);
        let _ = writeln!(text, "{id:3}, {base:#018x}, {:#018x}, {base:#018x}, {path}", base + end);
        for (&(offset, size), &count) in blocks {
            records.extend_from_slice(&(offset as u32).to_le_bytes());
            records.extend_from_slice(&size.to_le_bytes());
            records.extend_from_slice(&(id as u16).to_le_bytes());
            let _ = writeln!(hits, "{id} {offset:#x} {size} {count}");
        }
    }
    let _ = writeln!(text, "BB Table: {} bbs", records.len() / 8);
    let mut out = text.into_bytes();
    out.extend_from_slice(&records);
    (out, hits)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn written_files_read_back_with_their_counts() {
        let mut cov = Coverage::new();
        cov.entry("/bin/a, b".into()).or_default().extend([((0x10, 4), 7), ((0x20, 2), 1)]);
        cov.entry("/lib/c.so".into()).or_default().insert((0x1000, 9), 3);
        let (data, hits) = write(&cov);
        let mut back = Merger::default();
        back.add("x", &data, Some(&hits)).unwrap();
        back.add("y", &data, None).unwrap();
        let back = back.finish();
        assert_eq!(back["/bin/a, b"][&(0x10, 4)], 8);
        assert_eq!(back["/lib/c.so"][&(0x1000, 9)], 4);
        let mut again = Merger::default();
        again.add("x", &data, Some(&hits)).unwrap();
        assert_eq!(again.finish(), cov);
    }

    #[test]
    fn a_damaged_file_is_left_out_whole() {
        let mut cov = Coverage::new();
        cov.entry("/bin/a".into()).or_default().extend([((0x10, 4), 1), ((0x20, 2), 1)]);
        let (data, _) = write(&cov);
        let mut merger = Merger::default();
        assert!(merger.add("x", &data, Some("0 0x10 4 5\n7 0x20 2 1\n")).is_err());
        merger.add("y", &data, None).unwrap();
        assert_eq!(merger.finish(), cov);
    }

    #[test]
    fn a_short_table_is_an_error() {
        let (mut data, _) = write(&Coverage::from([("/bin/a".to_string(), BTreeMap::from([((0, 1), 1)]))]));
        data.truncate(data.len() - 1);
        assert!(matches!(Merger::default().add("x", &data, None), Err(CovError::Format(..))));
    }
}
