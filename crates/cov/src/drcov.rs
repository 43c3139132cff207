//! Reading drcov files: header, module table (versions 2 to 5, with or without
//! `containing_id`, `offset`, `preferred_base`), binary BB table. Blocks come out as
//! (module path, offset from the module's base, size), which merge across files and runs.

use crate::CovError;
use std::collections::{BTreeMap, BTreeSet};

/// Covered blocks per module path: (offset from the module base, size).
pub type Coverage = BTreeMap<String, BTreeSet<(u64, u16)>>;

struct Entry {
    containing: usize,
    start: u64,
    path: String,
}

/// Reads one drcov file into `into`.
pub fn read_into(name: &str, data: &[u8], into: &mut Coverage) -> Result<(), CovError> {
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
    let (version, count) = if let Some(rest) = table.strip_prefix("Module Table: version ") {
        let (v, c) = rest.split_once(", count ").ok_or_else(|| bad("module table line"))?;
        (v.trim().parse::<u32>().map_err(|_| bad("module table version"))?, c.trim().parse::<usize>().map_err(|_| bad("module count"))?)
    } else if let Some(c) = table.strip_prefix("Module Table: ") {
        (1, c.trim().parse::<usize>().map_err(|_| bad("module count"))?)
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
    let mut entries: Vec<Entry> = Vec::with_capacity(count);
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
    let header = line()?;
    let n: usize = header
        .strip_prefix("BB Table: ")
        .and_then(|r| r.strip_suffix(" bbs"))
        .and_then(|r| r.trim().parse().ok())
        .ok_or_else(|| bad("no BB Table line"))?;
    let records = &data[pos..];
    if records.len() < n * 8 {
        return Err(bad("BB table shorter than announced"));
    }
    for r in records[..n * 8].chunks_exact(8) {
        let start = u32::from_le_bytes(r[..4].try_into().expect("4 bytes")) as u64;
        let size = u16::from_le_bytes(r[4..6].try_into().expect("2 bytes"));
        let id = u16::from_le_bytes(r[6..].try_into().expect("2 bytes")) as usize;
        let Some(e) = entries.get(id) else { return Err(bad("block of an unknown module")) };
        let base = entries.get(e.containing).map_or(e.start, |m| m.start);
        // Version 2 starts are module offsets already; later ones are segment offsets.
        let offset = if version <= 2 { start } else { e.start + start - base };
        into.entry(e.path.clone()).or_default().insert((offset, size));
    }
    Ok(())
}

/// Reads and merges drcov files.
pub fn read_files(paths: &[String]) -> Result<Coverage, CovError> {
    let mut cov = Coverage::new();
    for p in paths {
        let data = std::fs::read(p).map_err(|e| CovError::Io(p.clone(), e))?;
        read_into(p, &data, &mut cov)?;
    }
    Ok(cov)
}
