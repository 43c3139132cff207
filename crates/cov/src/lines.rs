//! Source lines from DWARF: which lines of which files have code (rows of the line programs
//! inside the module's function symbols) and which of them ran (a row overlapping a covered
//! block). Written as an lcov tracefile (for `genhtml`) or as HTML pages.

use crate::drcov::Coverage;
use crate::report::link_ranges;
use crate::CovError;
use object::{Object, ObjectSymbol, SymbolKind};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;

/// Per source file: line → ran.
pub type SourceLines = BTreeMap<String, BTreeMap<u32, bool>>;

/// The source lines of the modules whose path contains `filter` (all when empty) that have
/// DWARF line information.
pub fn source_lines(cov: &Coverage, filter: &str) -> SourceLines {
    let mut out = SourceLines::new();
    for (path, blocks) in cov.iter().filter(|(p, _)| p.contains(filter)) {
        let Ok(data) = std::fs::read(path) else { continue };
        let Ok(file) = object::File::parse(&*data) else { continue };
        let Ok(loader) = addr2line::Loader::new(path) else { continue };
        let ranges = link_ranges(&file, blocks);
        let ran = |lo: u64, hi: u64| ranges.iter().any(|&(a, b)| a < hi && lo < b);
        for s in file.symbols() {
            if s.kind() != SymbolKind::Text || s.size() == 0 {
                continue;
            }
            let Ok(rows) = loader.find_location_range(s.address(), s.address() + s.size()) else { continue };
            for (addr, len, loc) in rows {
                if let (Some(f), Some(line)) = (loc.file, loc.line) {
                    if line == 0 {
                        continue;
                    }
                    *out.entry(f.to_string()).or_default().entry(line).or_insert(false) |= ran(addr, addr + len);
                }
            }
        }
    }
    out
}

/// The lcov tracefile for `lines`.
pub fn lcov(lines: &SourceLines) -> String {
    let mut s = String::from("TN:\n");
    for (file, ls) in lines {
        let _ = writeln!(s, "SF:{file}");
        for (line, ran) in ls {
            let _ = writeln!(s, "DA:{line},{}", *ran as u32);
        }
        let _ = writeln!(s, "LF:{}\nLH:{}\nend_of_record", ls.len(), ls.values().filter(|r| **r).count());
    }
    s
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

const STYLE: &str = "body{font-family:sans-serif}td{padding:0 .5em}pre{margin:0}.hit{background:#cfc}.miss{background:#fcc}.num{text-align:right;color:#888}";

/// Writes `index.html` and a page per source file into `dir`.
pub fn html(lines: &SourceLines, dir: &Path) -> Result<(), CovError> {
    let io = |p: &Path, e| CovError::Io(p.display().to_string(), e);
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let mut index = format!("<!doctype html><meta charset=utf-8><title>rewire coverage</title><style>{STYLE}</style><h1>Line coverage</h1><table><tr><th>file<th>lines run<th>lines<th>%");
    for (n, (file, ls)) in lines.iter().enumerate() {
        let hit = ls.values().filter(|r| **r).count();
        let page = format!("file{n}.html");
        let _ = write!(
            index,
            "<tr><td><a href=\"{page}\">{}</a><td>{hit}<td>{}<td>{:.1}",
            escape(file),
            ls.len(),
            100.0 * hit as f64 / ls.len().max(1) as f64
        );
        let source = std::fs::read_to_string(file).unwrap_or_default();
        let mut body = format!(
            "<!doctype html><meta charset=utf-8><title>{0}</title><style>{STYLE}</style><h1>{0}</h1><p>{hit} of {1} lines run<table>",
            escape(file),
            ls.len()
        );
        for (i, text) in source.lines().enumerate() {
            let class = match ls.get(&(i as u32 + 1)) {
                Some(true) => "hit",
                Some(false) => "miss",
                None => "",
            };
            let _ = write!(body, "<tr class=\"{class}\"><td class=num>{}<td><pre>{}</pre>", i + 1, escape(text));
        }
        body.push_str("</table>");
        let p = dir.join(&page);
        std::fs::write(&p, body).map_err(|e| io(&p, e))?;
    }
    index.push_str("</table>");
    let p = dir.join("index.html");
    std::fs::write(&p, index).map_err(|e| io(&p, e))
}
