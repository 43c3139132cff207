//! The `rewire` command line.
//!
//! `no_main`: Rust's start-up code would set SIGPIPE to "ignore" before `main`, and a
//! program run under the engine inherits this process's signal dispositions; it must get
//! the ones rewire was started with.
#![no_main]

mod cov_cmds;
mod docs;
mod hook_check;
mod remote_cmds;

use clap::{CommandFactory, Parser, Subcommand};
use std::ffi::OsString;
use std::path::PathBuf;

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
    /// Run a program with every instruction executed from the code cache; its output and
    /// exit status pass through unchanged.
    Run(RunArgs),
    /// Coverage reports from drcov files.
    #[command(subcommand)]
    Cov(CovCommand),
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
    /// Print a shell completion script: `rewire completions bash > /etc/bash_completion.d/rewire`
    /// (zsh: into a directory of $fpath as `_rewire`; fish: ~/.config/fish/completions/rewire.fish).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the manual page, rewire(1), as roff (`rewire man | man -l -`), or write it and a
    /// page per subcommand (rewire-run.1, rewire-cov-report.1, ...) into DIR.
    Man {
        /// Where to write every page (e.g. /usr/local/share/man/man1).
        #[arg(long, value_name = "DIR")]
        dir: Option<PathBuf>,
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

#[derive(clap::Args)]
struct RunArgs {
    /// The tool: cov (drcov coverage files), inscount (exact instruction count), bbcount
    /// (blocks built and executed, the hottest), opcodes (dynamic mnemonic mix), syscalls (a
    /// log of system calls), afl (AFL++ edge coverage and fork server, for afl-fuzz), null (none,
    /// the default).
    #[arg(short = 't', long = "tool", value_name = "TOOL")]
    tool: Option<String>,
    /// Directory for the files tools write (cov: drcov.PROGRAM.PID.SEQ.proc.log), created if
    /// missing. Default: the current directory.
    #[arg(short = 'o', long = "output-dir", value_name = "DIR")]
    output_dir: Option<PathBuf>,
    /// Append tool reports (and --stats, and how the program died) to FILE instead of stderr.
    #[arg(long, value_name = "FILE")]
    log: Option<PathBuf>,
    /// cov: drcov format version, 3 (module table version 5, per-segment offsets) or 2 (the
    /// legacy layout with module offsets, for older readers).
    #[arg(long, default_value_t = 3, value_name = "N")]
    drcov_version: u8,
    /// cov: also count how many times each block ran (inline per-thread counters), written
    /// to a .hits.txt file beside the drcov file.
    #[arg(long)]
    hitcount: bool,
    /// inscount: break the count down by module.
    #[arg(long)]
    per_module: bool,
    /// bbcount, opcodes: how many entries to list.
    #[arg(long, default_value_t = 20, value_name = "N")]
    top: usize,
    /// At exit, print what the engine did: blocks built per module, cache size, exits to the
    /// dispatcher by kind, links, indirect-branch lookup hits and misses, build rate.
    #[arg(long)]
    stats: bool,
    /// Log every block as it is built (address, module+offset, sizes), and say on stderr how
    /// the program died (a fault, a signal).
    #[arg(long)]
    verbose: bool,
    /// Rewrite the tool's output files (atomically) every SECS seconds while the program runs,
    /// so that a SIGKILL (which rewire cannot catch) loses at most that much.
    #[arg(long, value_name = "SECS", value_parser = parse_interval)]
    flush_interval: Option<std::time::Duration>,
    /// Executions of a trace head (a backward branch's target, or an exit of a trace)
    /// before the blocks that follow it are stitched into a trace.
    #[arg(long, default_value_t = rewire_dbi::engine::DEFAULT_THRESHOLD, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
    trace_threshold: u32,
    /// Most blocks in one trace.
    #[arg(long, default_value_t = rewire_dbi::engine::DEFAULT_MAX_BLOCKS, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    trace_max_blocks: u32,
    /// Run basic blocks only: build no traces.
    #[arg(long)]
    no_traces: bool,
    /// `argv[0]` for the program (default: PROGRAM as given).
    #[arg(long, value_name = "NAME")]
    argv0: Option<OsString>,
    /// Let programs that PROGRAM execs run natively (by default they run under rewire with
    /// the same tool and options).
    #[arg(long)]
    no_follow: bool,
    /// Run a set-user-ID, set-group-ID or file-capability PROGRAM without the privileges it
    /// would get natively (rewire cannot give them; by default it refuses to run it). Such
    /// programs that PROGRAM execs run natively, with their privileges, unless this is given.
    #[arg(long)]
    unprivileged: bool,
    /// Testing aid: never link exits, so every exit goes through the dispatcher.
    #[arg(long, hide = true)]
    no_link: bool,
    /// Testing aid: remove execute permission from the program's own code, so that an
    /// instruction run outside the code cache would crash the program.
    #[arg(long, hide = true)]
    strip_exec: bool,
    /// The program and its arguments.
    #[arg(last = true, required = true, value_name = "PROGRAM ARGS")]
    command: Vec<OsString>,
}

#[derive(Subcommand)]
enum CovCommand {
    /// Merge drcov files (rewire's or DynamoRIO's, with the counts of --hitcount files beside
    /// them) and print coverage per module and per function (bytes and instructions counted
    /// once); optionally write source-line, function and branch coverage from DWARF (also
    /// from separate debug files) as lcov, HTML, Cobertura XML or a JSON summary.
    Report {
        /// The drcov files.
        #[arg(required = true)]
        files: Vec<String>,
        /// List the functions (run and not) of modules whose path contains this (default: the
        /// first module, usually the program).
        #[arg(long, value_name = "SUBSTRING")]
        module: Option<String>,
        /// Write an lcov tracefile (lines with their counts, functions, branches) of the modules
        /// with DWARF line information.
        #[arg(long, value_name = "OUT")]
        lcov: Option<PathBuf>,
        /// Write an HTML report into DIR: index.html (per module, source file and function) and
        /// a page per source file.
        #[arg(long, value_name = "DIR")]
        html: Option<PathBuf>,
        /// A directory of separate debug files (build-id and debuglink layout, as
        /// /usr/lib/debug, the default); may be given more than once.
        #[arg(long = "debug-dir", value_name = "DIR")]
        debug_dirs: Vec<PathBuf>,
        /// Write Cobertura XML (for GitLab, Jenkins, Azure DevOps) to OUT.
        #[arg(long, value_name = "OUT")]
        cobertura: Option<PathBuf>,
        /// Write a JSON summary (totals, per module, function and source file) to OUT.
        #[arg(long, value_name = "OUT")]
        json: Option<PathBuf>,
        /// Only modules whose path contains this (may be given more than once; default: all).
        #[arg(long, value_name = "SUBSTRING")]
        include: Vec<String>,
    },
    /// What run B covers that run A does not, per function (each run a drcov file or a
    /// directory of them).
    Diff {
        /// The first run.
        a: String,
        /// The second run.
        b: String,
        /// Only modules whose path contains this (may be given more than once).
        #[arg(long, value_name = "SUBSTRING")]
        include: Vec<String>,
        /// As for `report`.
        #[arg(long = "debug-dir", value_name = "DIR")]
        debug_dirs: Vec<PathBuf>,
    },
    /// Combine runs as sets and write the result as a drcov file (with a .hits.txt of its
    /// counts beside it): `A | B` (either ran; counts added), `A & B` (both ran), `A - B` (A
    /// ran, B did not), parentheses; `&` binds tighter. Runs are drcov files or directories.
    Combine {
        /// The expression, as one argument or several (`a.log '|' b.log`).
        #[arg(required = true, value_name = "EXPR")]
        expr: Vec<String>,
        /// The drcov file to write.
        #[arg(short = 'o', long, value_name = "OUT")]
        output: PathBuf,
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

/// The C entry point (see the `no_main` note above).
#[no_mangle]
extern "C" fn main(_argc: std::ffi::c_int, _argv: *const *const std::ffi::c_char) -> std::ffi::c_int {
    rewire_main().into()
}

fn rewire_main() -> u8 {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Run(args) => run(args),
        Command::Cov(CovCommand::Report { files, module, lcov, html, cobertura, json, debug_dirs, include }) => {
            cov_cmds::report(cov_cmds::ReportArgs { files, module, debug_dirs, include, lcov, html, cobertura, json })
        }
        Command::Cov(CovCommand::Diff { a, b, include, debug_dirs }) => cov_cmds::diff(&a, &b, &include, debug_dirs),
        Command::Cov(CovCommand::Combine { expr, output }) => cov_cmds::combine(&expr, &output),
        Command::Hook(HookCommand::Check { lib, symbols, refused_only }) => hook_check::run(&lib, &symbols, refused_only),
        Command::Completions { shell } => Ok(docs::completions(Cli::command(), shell)),
        Command::Man { dir } => docs::man(Cli::command(), dir.as_deref()),
        Command::Inject { pid, lib, hooks } => remote_cmds::inject(pid, &lib, &hooks),
        Command::Launch { lib, hooks, command } => remote_cmds::launch(&lib, &hooks, &command),
        Command::Unhook { pid, symbols } => remote_cmds::unhook(pid, &symbols),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("rewire: {e:#}");
            1
        }
    }
}

fn run(args: RunArgs) -> anyhow::Result<u8> {
    let opts = rewire_dbi::Options {
        command: args.command,
        argv0: args.argv0,
        engine: rewire_dbi::EngineOptions {
            tool: args.tool,
            tool_options: rewire_dbi::tool::ToolOptions {
                drcov_version: args.drcov_version,
                hitcount: args.hitcount,
                per_module: args.per_module,
                top: args.top,
            },
            output: rewire_dbi::tool::Output { dir: args.output_dir, log: args.log },
            stats: args.stats,
            verbose: args.verbose,
            flush_interval: args.flush_interval,
            no_link: args.no_link,
            strip_exec: args.strip_exec,
            no_follow: args.no_follow,
            unprivileged: args.unprivileged,
            traces: rewire_dbi::engine::TraceOptions {
                enabled: !args.no_traces,
                threshold: args.trace_threshold,
                max_blocks: args.trace_max_blocks,
            },
            fork_server: None,
        },
    };
    match rewire_dbi::run(opts) {
        Ok(never) => match never {},
        Err(e) => {
            eprintln!("rewire: {e}");
            // The shell's convention: 127 for a command not found, 126 for one that cannot run;
            // 1 for settings rewire cannot use.
            Ok(match e {
                rewire_dbi::RunError::NotFound(_) => 127,
                rewire_dbi::RunError::ToolSettings(_) | rewire_dbi::RunError::Output(..) | rewire_dbi::RunError::Privileged(..) => 1,
                _ => 126,
            })
        }
    }
}

/// `--flush-interval`: a positive number of seconds.
fn parse_interval(s: &str) -> Result<std::time::Duration, String> {
    match s.parse::<f64>() {
        Ok(secs) if secs > 0.0 && secs.is_finite() => Ok(std::time::Duration::from_secs_f64(secs)),
        _ => Err(format!("{s:?} is not a positive number of seconds")),
    }
}
