//! What the user asked of the engine, and the `rewire run` options that say it again when
//! the engine follows an `execve`.

use crate::engine::fork_server::options::ForkServerOptions;
use crate::engine::traces::TraceOptions;
use crate::tool::{Output, ToolOptions};
use std::ffi::{CString, OsString};

/// What the user asked of the engine.
#[derive(Debug, Clone, Default)]
pub struct EngineOptions {
    /// The built-in tool (`-t`), `None` for the null tool.
    pub tool: Option<String>,
    /// Options of the built-in tools.
    pub tool_options: ToolOptions,
    /// Where tool output goes.
    pub output: Output,
    /// Print statistics at exit.
    pub stats: bool,
    /// Log every block built, and report how the program died on stderr.
    pub verbose: bool,
    /// Rewrite the tool's files this often while the program runs (`--flush-interval`).
    pub flush_interval: Option<std::time::Duration>,
    /// Never link exits (every exit goes through the dispatcher): a testing aid.
    pub no_link: bool,
    /// Let programs the program execs run natively (not under the engine).
    pub no_follow: bool,
    /// Run a set-user-ID, set-group-ID or file-capability program without the privileges
    /// it would get natively, instead of refusing to.
    pub unprivileged: bool,
    /// Take execute permission away from the application's own code, so that any
    /// instruction run outside the cache would fault: a testing aid.
    pub strip_exec: bool,
    /// Hot traces.
    pub traces: TraceOptions,
    /// Become an AFL++ fork server at the program's entry point (`-t afl`).
    pub fork_server: Option<ForkServerOptions>,
}

impl EngineOptions {
    /// The `rewire run` options that give these settings (passed on across `execve`).
    pub fn to_args(&self) -> Vec<CString> {
        let t = &self.tool_options;
        let flags = [
            (self.stats, c"--stats"),
            (self.verbose, c"--verbose"),
            (self.no_link, c"--no-link"),
            (self.strip_exec, c"--strip-exec"),
            (self.no_follow, c"--no-follow"),
            (self.unprivileged, c"--unprivileged"),
            (t.hitcount, c"--hitcount"),
            (t.per_module, c"--per-module"),
            (!self.traces.enabled, c"--no-traces"),
        ];
        let mut out: Vec<CString> = flags.into_iter().filter(|(on, _)| *on).map(|(_, f)| f.to_owned()).collect();
        let mut valued = |flag: &str, value: &[u8]| {
            let mut v = flag.as_bytes().to_vec();
            v.push(b'=');
            v.extend_from_slice(value);
            out.push(CString::new(v).expect("no NUL in options"));
        };
        if let Some(tool) = &self.tool {
            valued("--tool", tool.as_bytes());
        }
        valued("--drcov-version", t.drcov_version.to_string().as_bytes());
        valued("--top", t.top.to_string().as_bytes());
        valued("--trace-threshold", self.traces.threshold.to_string().as_bytes());
        valued("--trace-max-blocks", self.traces.max_blocks.to_string().as_bytes());
        if let Some(every) = self.flush_interval {
            valued("--flush-interval", every.as_secs_f64().to_string().as_bytes());
        }
        // Absolute since `Output::prepare`, so that a program that changed directory still
        // writes where the user asked.
        if let Some(dir) = &self.output.dir {
            valued("--output-dir", dir.as_os_str().as_encoded_bytes());
        }
        if let Some(log) = &self.output.log {
            valued("--log", log.as_os_str().as_encoded_bytes());
        }
        out
    }
}

/// A program to run under the engine.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The program and its arguments.
    pub command: Vec<OsString>,
    /// `argv[0]` for the program, when it differs from the command's first word.
    pub argv0: Option<OsString>,
    /// What the engine does.
    pub engine: EngineOptions,
}
