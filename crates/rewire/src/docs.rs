//! Manual pages and shell completions, generated from the clap definitions.

use anyhow::Context as _;
use std::path::Path;

/// Writes a page for `cmd` (built, so that a subcommand's display name is `rewire-cov-report`)
/// and for each of its subcommands.
fn write_pages(cmd: &clap::Command, dir: &Path) -> anyhow::Result<()> {
    let path = dir.join(format!("{}.1", cmd.get_display_name().unwrap_or(cmd.get_name())));
    let mut out = Vec::new();
    clap_mangen::Man::new(cmd.clone()).render(&mut out)?;
    std::fs::write(&path, out).with_context(|| path.display().to_string())?;
    for sub in cmd.get_subcommands().filter(|s| s.get_name() != "help") {
        write_pages(sub, dir)?;
    }
    Ok(())
}

/// `rewire man`: rewire(1) on stdout, or with `dir` every page (rewire.1, rewire-run.1,
/// rewire-cov-report.1, ...) written there.
pub fn man(mut cmd: clap::Command, dir: Option<&Path>) -> anyhow::Result<u8> {
    cmd.build();
    match dir {
        None => clap_mangen::Man::new(cmd).render(&mut std::io::stdout())?,
        Some(dir) => {
            std::fs::create_dir_all(dir).with_context(|| dir.display().to_string())?;
            write_pages(&cmd, dir)?;
        }
    }
    Ok(0)
}

/// `rewire completions SHELL`: the completion script on stdout.
pub fn completions(mut cmd: clap::Command, shell: clap_complete::Shell) -> u8 {
    clap_complete::generate(shell, &mut cmd, "rewire", &mut std::io::stdout());
    0
}
