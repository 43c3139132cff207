//! `rewire cov`: reports from drcov files.

use anyhow::Context as _;
use rewire_cov::algebra::Expr;
use rewire_cov::debuginfo::DebugSearch;
use rewire_cov::drcov::{self, Coverage, Merged};
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

/// Reads and merges drcov files and the files in directories named, warning about (and
/// skipping) inputs that are not drcov files.
fn read_merged(files: &[String]) -> Result<Merged, rewire_cov::CovError> {
    let mut paths = Vec::new();
    for f in files {
        match std::fs::read_dir(f) {
            Ok(dir) => {
                // A directory's .hits.txt files are read with their drcov files.
                let mut inside: Vec<String> =
                    dir.filter_map(|e| Some(e.ok()?.path().to_str()?.to_string())).filter(|p| !p.ends_with(".hits.txt")).collect();
                inside.sort();
                paths.extend(inside);
            }
            Err(_) => paths.push(f.clone()),
        }
    }
    drcov::read_files(&paths, &mut |path, why| eprintln!("rewire: warning: {path}: skipped: {why}"))
}

/// The coverage of [`read_merged`].
fn read(files: &[String]) -> Result<Coverage, rewire_cov::CovError> {
    Ok(read_merged(files)?.coverage)
}

fn debug_search(dirs: Vec<PathBuf>) -> DebugSearch {
    let mut debug = DebugSearch::default();
    if !dirs.is_empty() {
        debug.dirs = dirs;
    }
    debug
}

/// Keeps the modules whose path contains one of `include` (all when it is empty).
fn filter(cov: &mut Coverage, include: &[String]) {
    if !include.is_empty() {
        cov.retain(|path, _| include.iter().any(|i| path.contains(i.as_str())));
    }
}

fn write(path: &std::path::Path, data: impl AsRef<[u8]>) -> anyhow::Result<()> {
    std::fs::write(path, data).with_context(|| format!("{}", path.display()))
}

pub fn report(args: ReportArgs) -> anyhow::Result<u8> {
    let start = std::time::Instant::now();
    let Merged { coverage: mut cov, program, files: inputs } = read_merged(&args.files)?;
    filter(&mut cov, &args.include);
    let mut modules = rewire_cov::report::modules(&cov, &debug_search(args.debug_dirs));
    // The program first, then the libraries by path.
    modules.sort_by_key(|m| Some(&m.path) != program.as_ref());
    let detail = args.module.or(program).unwrap_or_default();
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
    eprintln!("rewire: {inputs} input files, {} modules in {:.2} s", modules.len(), start.elapsed().as_secs_f64());
    Ok(0)
}

/// `rewire cov diff A B`: what run B covers that run A does not, per function.
pub fn diff(a: &str, b: &str, include: &[String], debug_dirs: Vec<PathBuf>) -> anyhow::Result<u8> {
    let (mut base, mut second) = (read(&[a.to_string()])?, read(&[b.to_string()])?);
    filter(&mut base, include);
    filter(&mut second, include);
    let gained = Expr::Difference(Box::new(Expr::Run("B".into())), Box::new(Expr::Run("A".into())))
        .eval(&mut |run| Ok(if run == "B" { second.clone() } else { base.clone() }))?;
    let debug = debug_search(debug_dirs);
    let lines = rewire_cov::report::diff_text(&rewire_cov::report::modules(&base, &debug), &rewire_cov::report::modules(&gained, &debug));
    for line in lines {
        println!("{line}");
    }
    Ok(0)
}

/// `rewire cov combine EXPR -o OUT`: a set expression over runs, written as a drcov file (and
/// its counts as a .hits.txt beside it).
pub fn combine(expr: &[String], out: &std::path::Path) -> anyhow::Result<u8> {
    let cov = Expr::parse(expr)?.eval(&mut |run| read(&[run.to_string()]))?;
    let (data, hits) = drcov::write(&cov);
    write(out, data)?;
    write(&drcov::hits_path(out), hits)?;
    let blocks: usize = cov.values().map(|b| b.len()).sum();
    println!("combine: {blocks} blocks of {} modules in {}", cov.len(), out.display());
    Ok(0)
}
