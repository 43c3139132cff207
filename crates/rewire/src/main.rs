//! The `rewire` command line.

mod hook_check;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// rewire rewrites running x86-64 Linux code: inline hooks (Detours style) and dynamic binary
/// instrumentation.
#[derive(Parser)]
#[command(name = "rewire", version, about, long_about = None, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Inline hooks.
    #[command(subcommand)]
    Hook(HookCommand),
}

#[derive(Subcommand)]
enum HookCommand {
    /// Report, for each exported function of a library (or the ones named), whether it can be
    /// hooked and, if not, which instruction at which address prevents it and why.
    Check {
        /// The library: a path, or a file name looked up in the system library directories.
        lib: String,
        /// Only these functions.
        symbols: Vec<String>,
        /// Print only the functions that cannot be hooked (and the summary).
        #[arg(long)]
        refused_only: bool,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Hook(HookCommand::Check { lib, symbols, refused_only }) => hook_check::run(&lib, &symbols, refused_only),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rewire: {e:#}");
            ExitCode::from(1)
        }
    }
}
