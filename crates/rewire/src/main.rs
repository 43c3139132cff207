//! The `rewire` command line.

mod hook_check;
mod remote_cmds;

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
    /// Load a shared library into a running process (with its own dlopen) and set hooks there.
    Inject {
        /// The process.
        #[arg(long)]
        pid: i32,
        /// The shared library to load.
        lib: String,
        /// Hook SYMBOL (in the program or its libraries) with LIB_SYMBOL of the library; the
        /// library's `rewire_orig_<LIB_SYMBOL>` pointer receives the original.
        #[arg(long = "hook", value_name = "SYMBOL=LIB_SYMBOL", value_parser = remote_cmds::parse_hook)]
        hooks: Vec<(String, String)>,
    },
    /// Remove hooks that rewire placed in a running process (all, or those on the named
    /// functions), restoring the original bytes.
    Unhook {
        /// The process.
        #[arg(long)]
        pid: i32,
        /// Only the hooks on these functions.
        symbols: Vec<String>,
    },
    /// Start a program stopped before its first instruction, load a library into it, set
    /// hooks, then let it run; its output and exit status pass through.
    Launch {
        /// The shared library to load.
        #[arg(long = "inject", value_name = "LIB.so")]
        lib: String,
        /// As for `inject`.
        #[arg(long = "hook", value_name = "SYMBOL=LIB_SYMBOL", value_parser = remote_cmds::parse_hook)]
        hooks: Vec<(String, String)>,
        /// The program and its arguments.
        #[arg(last = true, required = true, value_name = "PROGRAM ARGS")]
        command: Vec<String>,
    },
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
        Command::Inject { pid, lib, hooks } => remote_cmds::inject(pid, &lib, &hooks),
        Command::Launch { lib, hooks, command } => remote_cmds::launch(&lib, &hooks, &command),
        Command::Unhook { pid, symbols } => remote_cmds::unhook(pid, &symbols),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rewire: {e:#}");
            ExitCode::from(1)
        }
    }
}
