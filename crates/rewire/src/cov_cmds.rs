//! `rewire cov`: reports from drcov files.

use anyhow::Context as _;
use rewire_cov::debuginfo::DebugSearch;
use rewire_cov::drcov::{self, Coverage};
use std::path::PathBuf;

/// What `rewire cov report` writes besides its text.
pub struct ReportArgs {
    pub files: Vec<String>,
    pub module: Option<String>,
    pub debug_dirs: Vec<PathBuf>,
    pub include: Vec<String>,
    pub lcov: Option<PathBuf>,
    pub html: Option<PathBuf>,
    pub cobertura: Option<PathBuf>,
    pub json: Option<PathBuf>,
}

/// Reads and merges drcov files, warning about (and skipping) inputs that are not drcov files.
fn read(files: &[String]) -> anyhow::Result<Coverage> {
    Ok(drcov::read_files(files, &mut |path, why| eprintln!("rewire: warning: {path}: skipped: {why}"))?)
}

fn write(path: &std::path::Path, data: impl AsRef<[u8]>) -> anyhow::Result<()> {
    std::fs::write(path, data).with_context(|| format!("{}", path.display()))
}

pub fn report(args: ReportArgs) -> anyhow::Result<u8> {
    let start = std::time::Instant::now();
    let mut cov = read(&args.files)?;
    if !args.include.is_empty() {
        cov.retain(|path, _| args.include.iter().any(|i| path.contains(i.as_str())));
    }
    let mut debug = DebugSearch::default();
    if !args.debug_dirs.is_empty() {
        debug.dirs = args.debug_dirs;
    }
    let modules = rewire_cov::report::modules(&cov, &debug);
    // The first module of a drcov file is the program.
    let detail = args.module.or_else(|| modules.first().map(|m| m.path.clone())).unwrap_or_default();
    for line in rewire_cov::report::text(&modules, &detail) {
        println!("{line}");
    }
    let sources = rewire_cov::report::sources(&modules);
    if let Some(out) = &args.lcov {
        write(out, rewire_cov::lcov::tracefile(&sources))?;
        println!("lcov: {} source files in {}", sources.len(), out.display());
    }
    if let Some(dir) = &args.html {
        rewire_cov::html::write(&modules, &sources, dir)?;
        println!("html: {}", dir.join("index.html").display());
    }
    if let Some(out) = &args.cobertura {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs());
        write(out, rewire_cov::cobertura::document(&modules, now))?;
        println!("cobertura: {}", out.display());
    }
    if let Some(out) = &args.json {
        write(out, rewire_cov::json::summary(&modules, &sources))?;
        println!("json: {}", out.display());
    }
    eprintln!("rewire: {} input files, {} modules in {:.2} s", args.files.len(), modules.len(), start.elapsed().as_secs_f64());
    Ok(0)
}
