//! `rewire hook check LIB [SYMBOL...]`.

use rewire_hook::check::check_module;
use rewire_hook::elf::ElfModule;
use std::io::Write;
use std::path::Path;

/// Where a bare library file name is looked for.
const LIBRARY_DIRS: [&str; 4] = ["/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib64", "/usr/lib"];

fn find_library(lib: &str) -> String {
    if lib.contains('/') || Path::new(lib).exists() {
        return lib.to_string();
    }
    LIBRARY_DIRS.iter().map(|d| format!("{d}/{lib}")).find(|p| Path::new(p).exists()).unwrap_or_else(|| lib.to_string())
}

/// Prints one line per function and the closing `hookable: N of M`.
pub fn run(lib: &str, symbols: &[String], refused_only: bool) -> anyhow::Result<u8> {
    let path = find_library(lib);
    let module = ElfModule::open(&path)?;
    let verdicts = check_module(&module, symbols);
    let mut out = std::io::stdout().lock();
    let mut hookable = 0;
    for v in &verdicts {
        match &v.outcome {
            Ok(bytes) => {
                hookable += 1;
                if !refused_only {
                    writeln!(out, "ok  {:<40} {:#x}  ({bytes} bytes relocated)", v.export.name, v.export.addr)?;
                }
            }
            Err(e) => writeln!(out, "no  {:<40} {:#x}  {e}", v.export.name, v.export.addr)?,
        }
    }
    writeln!(out, "hookable: {hookable} of {}", verdicts.len())?;
    Ok(0)
}
