//! Hooks in other processes: `rewire launch` and `rewire inject` on C programs compiled here.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn build_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rewire-remote-tests-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Compiles `tests/c/<src>` with gcc into the build directory.
fn cc(src: &str, out: &str, args: &[&str]) -> PathBuf {
    let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c").join(src);
    let output = build_dir().join(out);
    let status = Command::new("gcc").args(["-O1", "-o"]).arg(&output).arg(&source).args(args).status().expect("gcc");
    assert!(status.success(), "gcc {src}");
    output
}

fn rewire(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rewire")).args(args).output().unwrap()
}

#[test]
fn launch_hooks_a_libc_function_and_one_of_the_program() {
    let target = cc("launch_target.c", "launch_target", &[]);
    let lib = cc("launch_hooks.c", "launch_hooks.so", &["-shared", "-fPIC"]);
    let native = Command::new(&target).output().unwrap();
    assert_eq!((native.status.code(), &native.stdout[..]), (Some(7), &b"hello\ncompute=41\n"[..]));
    let out = rewire(&[
        "launch",
        "--inject",
        lib.to_str().unwrap(),
        "--hook",
        "compute=my_compute",
        "--hook",
        "puts=my_puts",
        "--",
        target.to_str().unwrap(),
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "[hooked] hello\ncompute=1041\n", "{stderr}");
    assert_eq!(out.status.code(), Some(7), "exit status passes through");
    assert!(stderr.contains("hooked compute") && stderr.contains("hooked puts"), "{stderr}");
}

/// Starts `program` with piped stdout and waits for its first line.
fn start(program: &Path) -> (Child, BufReader<std::process::ChildStdout>) {
    let mut child = Command::new(program).stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut first = String::new();
    out.read_line(&mut first).unwrap();
    (child, out)
}

/// Reads lines until `done` accepts one, for at most 10 s.
fn wait_for_line(out: &mut BufReader<std::process::ChildStdout>, done: impl Fn(&str) -> bool) -> String {
    let start = Instant::now();
    let mut line = String::new();
    while start.elapsed() < Duration::from_secs(10) {
        line.clear();
        if out.read_line(&mut line).unwrap() == 0 {
            break;
        }
        if done(&line) {
            return line;
        }
    }
    panic!("no expected line; last: {line:?}");
}

fn stop(mut child: Child) {
    child.kill().unwrap();
    let status = child.wait().unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(libc::SIGKILL), "the program must not have crashed");
    let mut err = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut err).unwrap();
    assert!(err.is_empty(), "{err}");
}

/// threads.c built as `program` and running, and threads_hooks.c built as `lib`: the child,
/// its output, its pid and the library.
fn threads_and_hooks(program: &str, lib: &str) -> (Child, BufReader<std::process::ChildStdout>, String, PathBuf) {
    let program = cc("threads.c", program, &["-pthread"]);
    let lib = cc("threads_hooks.c", lib, &["-shared", "-fPIC"]);
    let (child, out) = start(&program);
    let pid = child.id().to_string();
    (child, out, pid, lib)
}

#[test]
fn inject_into_a_running_program_with_four_threads_calling_the_target() {
    let (child, mut out, pid, lib) = threads_and_hooks("threads", "threads_hooks.so");
    let r = rewire(&["inject", "--pid", &pid, lib.to_str().unwrap(), "--hook", "compute=my_compute"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    wait_for_line(&mut out, |l| l.starts_with("hooked=") && !l.starts_with("hooked=0 "));
    // A worker may have returned from the original just before the patch and be counting it
    // only now: the baseline is the line after that, 20 ms later.
    let line = wait_for_line(&mut out, |_| true);
    let plain_at_hook: u64 = line.split("plain=").nth(1).unwrap().trim().parse().unwrap();
    // Once hooked, every call goes through the detour: plain calls stop growing.
    let later = wait_for_line(&mut out, |_| true);
    let later_plain: u64 = later.split("plain=").nth(1).unwrap().trim().parse().unwrap();
    assert_eq!(later_plain, plain_at_hook, "{line} then {later}");
    // Unhook: the detour stops being called, the original runs again, the trampoline is gone.
    let r = rewire(&["unhook", "--pid", &pid, "compute"]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let hooked = |l: &str| l.split("hooked=").nth(1).and_then(|r| r.split(' ').next()).and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    let plain = |l: &str| l.split("plain=").nth(1).and_then(|n| n.trim().parse::<u64>().ok()).unwrap_or(0);
    // A worker that returned from the detour just before the unhook may be descheduled
    // before it counts that call (on a loaded machine, for longer than a line's 20 ms): the
    // detour is gone when the hooked count stays put for ten lines (200 ms) while plain
    // calls go on, within five seconds. A detour still being called adds thousands a line.
    let mut last = wait_for_line(&mut out, |_| true);
    let mut still = 0;
    for _ in 0..250 {
        let line = wait_for_line(&mut out, |_| true);
        still = if hooked(&line) == hooked(&last) && plain(&line) > plain(&last) { still + 1 } else { 0 };
        last = line;
        if still == 10 {
            break;
        }
    }
    assert_eq!(still, 10, "no call reaches the detour after unhook: the hooked count still moves ({last})");
    let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
    assert!(!maps.contains("rewire-code"), "trampoline memory released");
    let again = rewire(&["unhook", "--pid", &pid, "compute"]);
    assert_eq!(again.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&again.stderr).contains("placed no hook on compute"));
    stop(child);
}

#[test]
fn threads_inside_the_patched_prologue_are_moved_and_continue() {
    let program = cc("prologue.c", "prologue", &["-pthread", "-mno-red-zone"]);
    let lib = cc("passthru.S", "passthru.so", &["-shared", "-fPIC"]);
    let (child, mut out) = start(&program);
    let pid = child.id().to_string();
    let r = rewire(&["inject", "--pid", &pid, lib.to_str().unwrap(), "--hook", "fill=my_fill"]);
    let stderr = String::from_utf8_lossy(&r.stderr);
    assert!(r.status.success(), "{stderr}");
    assert!(stderr.contains("moved") && stderr.contains("thread(s) out of the bytes patched"), "{stderr}");
    let calls = |l: &str| l.trim().strip_prefix("calls=").and_then(|n| n.parse::<u64>().ok()).unwrap_or(0);
    let after = calls(&wait_for_line(&mut out, |_| true));
    wait_for_line(&mut out, |l| calls(l) > after + 2);
    // Unhook while the workers run the relocated `rep stosb`: they are moved back.
    let r = rewire(&["unhook", "--pid", &pid]);
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    let after = calls(&wait_for_line(&mut out, |_| true));
    wait_for_line(&mut out, |l| calls(l) > after + 2);
    stop(child);
}

#[test]
fn errors_say_what_is_wrong() {
    let target = cc("launch_target.c", "err_target", &[]);
    let lib = cc("launch_hooks.c", "err_hooks.so", &["-shared", "-fPIC"]);
    let (t, l) = (target.to_str().unwrap(), lib.to_str().unwrap());
    let err = |o: std::process::Output| (o.status.code(), String::from_utf8_lossy(&o.stderr).into_owned());

    let (code, msg) = err(rewire(&["inject", "--pid", "999999999", l]));
    assert_eq!(code, Some(1));
    assert!(msg.contains("no process 999999999"), "{msg}");

    let (code, msg) = err(rewire(&["launch", "--inject", "/etc/passwd", "--", t]));
    assert_eq!(code, Some(1));
    assert!(msg.contains("cannot load /etc/passwd") && msg.contains("invalid ELF header"), "dlerror text: {msg}");

    let (code, msg) = err(rewire(&["launch", "--inject", l, "--hook", "computee=my_compute", "--", t]));
    assert_eq!(code, Some(1));
    assert!(msg.contains("no symbol \"computee\"") && msg.contains("compute"), "close matches: {msg}");

    let (code, msg) = err(rewire(&["launch", "--inject", l, "--", "/no/such/program"]));
    assert_eq!(code, Some(1));
    assert!(msg.contains("cannot launch /no/such/program: not found"), "{msg}");

    let (code, _) = err(rewire(&["launch", "--inject", l, "--hook", "compute", "--", t]));
    assert_eq!(code, Some(2), "usage error");
}

#[test]
fn a_process_traced_by_someone_else_is_refused_with_the_tracer_named() {
    let mut traced = Command::new("strace").args(["-o", "/dev/null", "sleep", "30"]).spawn().expect("strace");
    let start = Instant::now();
    let sleeper = loop {
        let tracer = traced.id().to_string();
        let pids = Command::new("pgrep").args(["-P", &tracer]).output().unwrap();
        if let Some(p) = String::from_utf8_lossy(&pids.stdout).lines().next() {
            break p.to_string();
        }
        assert!(start.elapsed() < Duration::from_secs(10));
        std::thread::sleep(Duration::from_millis(20));
    };
    let lib = cc("launch_hooks.c", "traced_hooks.so", &["-shared", "-fPIC"]);
    let out = rewire(&["inject", "--pid", &sleeper, lib.to_str().unwrap()]);
    let msg = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(msg.contains(&format!("already traced by process {}", traced.id())), "{msg}");
    traced.kill().unwrap();
    traced.wait().unwrap();
}

/// Writes a program with `n` functions `f0..` called in a loop, and a hook library with
/// detours `d0..` (each adds 1 to the original's result).
fn many_functions(n: usize) -> (PathBuf, PathBuf) {
    let dir = build_dir();
    let mut prog = String::from("#include <stdio.h>\n#include <unistd.h>\n");
    let mut lib = String::new();
    for i in 0..n {
        prog += &format!("__attribute__((noinline)) long f{i}(long x) {{ return x * {} + {i}; }}\n", i + 2);
        lib += &format!("long (*rewire_orig_d{i})(long);\nlong d{i}(long x) {{ return rewire_orig_d{i}(x) + 1; }}\n");
    }
    prog += "int main(void) { for (;;) { long s = 0;\n";
    for i in 0..n {
        prog += &format!("s += f{i}(s & 7);\n");
    }
    prog += "printf(\"%ld\\n\", s); fflush(stdout); usleep(10000); } }\n";
    std::fs::write(dir.join(format!("many{n}.c")), prog).unwrap();
    std::fs::write(dir.join(format!("many{n}_hooks.c")), lib).unwrap();
    let build = |src: String, out: String, extra: &[&str]| {
        let ok = Command::new("gcc").args(["-O1", "-o"]).arg(dir.join(&out)).arg(dir.join(src)).args(extra).status().unwrap().success();
        assert!(ok);
        dir.join(out)
    };
    (
        build(format!("many{n}.c"), format!("many{n}"), &[]),
        build(format!("many{n}_hooks.c"), format!("many{n}_hooks.so"), &["-shared", "-fPIC"]),
    )
}

/// Injects into a running program and sets `hooks` of its functions; returns the system
/// calls the hooks took, as rewire reports them.
fn syscalls_for_hooks(program: &Path, lib: &Path, hooks: usize) -> u64 {
    let (child, _out) = start(program);
    let pid = child.id().to_string();
    let mut args = vec!["inject".to_string(), "--pid".into(), pid, lib.to_str().unwrap().into()];
    for i in 0..hooks {
        args.push("--hook".into());
        args.push(format!("f{i}=d{i}"));
    }
    let out = Command::new(env!("CARGO_BIN_EXE_rewire")).args(&args).output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    stop(child);
    let line = stderr.lines().find(|l| l.contains("system calls on the process")).expect("count reported");
    line.split(" set with ").nth(1).and_then(|r| r.split(' ').next()).unwrap().parse().unwrap()
}

#[test]
fn a_remote_hook_costs_a_handful_of_system_calls() {
    let (program, lib) = many_functions(60);
    let ten = syscalls_for_hooks(&program, &lib, 10);
    let sixty = syscalls_for_hooks(&program, &lib, 60);
    let per_hook = (sixty - ten) as f64 / 50.0;
    eprintln!("10 hooks: {ten} system calls, 60 hooks: {sixty}; {per_hook:.1} per further hook");
    assert!(per_hook <= 8.0, "{per_hook} system calls per hook");
}

#[test]
fn the_rust_example_hook_library_works() {
    // `cargo test` builds the examples next to the binary under test.
    let examples = Path::new(env!("CARGO_BIN_EXE_rewire")).parent().unwrap().join("examples");
    let lib = examples.join("libputs_hook.so");
    if !lib.exists() {
        let release = examples.parent().is_some_and(|d| d.ends_with("release"));
        let mut build = Command::new(env!("CARGO"));
        build.args(["build", "-q", "-p", "rewire", "--example", "puts_hook"]);
        if release {
            build.arg("--release");
        }
        let ok = build.status().unwrap().success();
        assert!(ok && lib.exists(), "cannot build the example hook library");
    }
    let target = cc("launch_target.c", "rust_example_target", &[]);
    let out = rewire(&["launch", "--inject", lib.to_str().unwrap(), "--hook", "puts=my_puts", "--", target.to_str().unwrap()]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "[rust hook]\nhello\ncompute=41\n", "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(out.status.code(), Some(7));
}

#[test]
fn a_target_exiting_mid_operation_is_a_clean_error() {
    let program = cc("threads.c", "exiting_target", &["-pthread"]);
    let lib = cc("exits_on_load.c", "exits_on_load.so", &["-shared", "-fPIC"]);
    let (mut child, _out) = start(&program);
    let pid = child.id().to_string();
    let r = rewire(&["inject", "--pid", &pid, lib.to_str().unwrap(), "--hook", "compute=nothing"]);
    let msg = String::from_utf8_lossy(&r.stderr);
    assert_eq!(r.status.code(), Some(1), "{msg}");
    assert!(msg.contains(&format!("process {pid} exited during the operation")), "{msg}");
    assert_eq!(child.wait().unwrap().code(), Some(3));
}

#[test]
fn attaching_without_permission_names_the_rule_and_the_fix() {
    if !Path::new("/usr/sbin/runuser").exists() || unsafe { libc::geteuid() } != 0 {
        eprintln!("skipped: needs root and runuser to try as another user");
        return;
    }
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let pid = sleeper.id().to_string();
    let lib = cc("launch_hooks.c", "perm_hooks.so", &["-shared", "-fPIC"]);
    let out = Command::new("/usr/sbin/runuser")
        .args(["-u", "nobody", "--", env!("CARGO_BIN_EXE_rewire"), "inject", "--pid", &pid, lib.to_str().unwrap()])
        .output()
        .unwrap();
    let msg = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{msg}");
    assert!(msg.contains(&format!("not permitted to trace process {pid}")), "{msg}");
    assert!(msg.contains("run rewire as") || msg.contains("ptrace_scope"), "says what to do: {msg}");
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
}

#[test]
fn inject_with_a_missing_symbol_hooks_nothing_and_leaves_nothing_loaded() {
    let (child, mut out, pid, lib) = threads_and_hooks("threads_missing", "missing_hooks.so");
    // The first hook is fine; the second names a detour the library lacks, or a function the
    // program lacks: nothing is placed and the library goes away again.
    for bad in ["compute=no_such_detour", "no_such_function=my_compute"] {
        let r = rewire(&["inject", "--pid", &pid, lib.to_str().unwrap(), "--hook", "compute=my_compute", "--hook", bad]);
        let msg = String::from_utf8_lossy(&r.stderr);
        assert_eq!(r.status.code(), Some(1), "{msg}");
        assert!(msg.contains("nothing hooked;") && msg.contains("unloaded from process"), "{msg}");
        let maps = std::fs::read_to_string(format!("/proc/{pid}/maps")).unwrap();
        assert!(!maps.contains("missing_hooks.so"), "{bad}: still loaded:\n{maps}");
        assert!(!maps.contains("rewire-code"), "{bad}: trampoline memory left:\n{maps}");
    }
    // The program runs on unhooked.
    let line = wait_for_line(&mut out, |_| true);
    let line = wait_for_line(&mut out, |l| l != line);
    assert!(line.starts_with("hooked=0 "), "{line}");
    stop(child);
}
