//! Real programs and the cases they exercise (issue 16): a program runs under `rewire run`
//! as it runs natively: the same stdout, stderr and exit status or signal, under the null
//! tool, `-t cov` and `-t inscount`.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// How a run ended and what it wrote.
#[derive(Debug, PartialEq, Eq)]
struct Outcome {
    code: Option<i32>,
    signal: Option<i32>,
    stdout: String,
    stderr: String,
}

fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = std::env::temp_dir().join(format!("rewire-real-tests-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    })
}

fn source(name: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests").join(name)
}

/// Compiles `tests/SOURCE` with `compiler` (the command and its options) into the test
/// directory as NAME (once per test process).
fn compiled(name: &str, source_file: &str, compiler: &[&str]) -> PathBuf {
    static BUILDING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = BUILDING.lock().unwrap_or_else(|p| p.into_inner());
    let out = dir().join(name);
    if !out.exists() {
        let tmp = dir().join(format!("{name}.tmp"));
        let ok = Command::new(compiler[0]).args(&compiler[1..]).arg("-o").arg(&tmp).arg(source(source_file)).status().unwrap();
        assert!(ok.success(), "{compiler:?} {source_file}");
        std::fs::rename(tmp, &out).unwrap();
    }
    out
}

/// `tests/c/NAME.c`, compiled.
fn c_program(name: &str) -> PathBuf {
    compiled(name, &format!("c/{name}.c"), &["gcc", "-O2", "-g", "-pthread"])
}

/// `tests/real/NAME.rs`, compiled with rustc.
fn rust_program(name: &str) -> PathBuf {
    compiled(name, &format!("real/{name}.rs"), &["rustc", "-O", "--edition", "2021"])
}

/// Runs `cmd` in the test directory; `clean` rewrites the output
/// where it holds what differs from run to run (pids, times).
fn execute(cmd: &mut Command, clean: fn(&str) -> String) -> Outcome {
    let out = cmd.current_dir(dir()).stdin(Stdio::null()).output().expect("spawn");
    Outcome {
        code: out.status.code(),
        signal: out.status.signal(),
        stdout: clean(&String::from_utf8_lossy(&out.stdout)),
        stderr: clean(&String::from_utf8_lossy(&out.stderr)),
    }
}

fn rewire() -> Command {
    Command::new(env!("CARGO_BIN_EXE_rewire"))
}

/// The tools every case runs under: null, cov, inscount (their reports kept out of stderr);
/// with `thorough`, also inscount with a trace built at every trace head's first run.
fn tool_options(thorough: bool) -> Vec<Vec<String>> {
    let d = dir().to_str().unwrap().to_string();
    let log = format!("{d}/tools.log");
    let tool = |t: &str| ["-t", t, "-o", &d, "--log", &log].map(String::from).to_vec();
    let mut all = vec![vec![], tool("cov"), tool("inscount")];
    if thorough {
        all.push([tool("inscount"), vec!["--trace-threshold".into(), "1".into()]].concat());
    }
    all
}

/// Asserts that `argv` behaves as natively under every tool (`thorough`: see
/// [`tool_options`]), its output rewritten by `clean`; returns the native outcome.
fn same_with(argv: &[&str], thorough: bool, clean: fn(&str) -> String) -> Outcome {
    let native = execute(Command::new(argv[0]).args(&argv[1..]), clean);
    for options in tool_options(thorough) {
        let under = execute(rewire().arg("run").args(&options).arg("--").args(argv), clean);
        assert_eq!(native, under, "{argv:?} under {options:?} differs from native");
    }
    native
}

/// `same_with`, thorough and the output as it is.
fn same(argv: &[&str]) -> Outcome {
    same_with(argv, true, |s| s.to_string())
}

/// `same_with` for the JVM, whose runs are long: the three tools.
fn same_jvm(argv: &[&str]) -> Outcome {
    same_with(argv, false, |s| s.to_string())
}

/// Replaces runs of digits inside parentheses ("thread 'main' (1234)") by `N`.
fn without_ids(s: &str) -> String {
    let mut out = String::new();
    let mut rest = s;
    while let Some(open) = rest.find('(') {
        out.push_str(&rest[..=open]);
        rest = &rest[open + 1..];
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if digits > 0 && rest[digits..].starts_with(')') {
            out.push('N');
            rest = &rest[digits..];
        }
    }
    out.push_str(rest);
    out
}

#[test]
fn stack_overflow_handled_on_an_alternate_stack() {
    let p = c_program("stack_overflow");
    for mode in ["main", "thread"] {
        let n = same(&[p.to_str().unwrap(), mode]);
        assert_eq!(n.code, Some(3), "{n:?}");
        assert!(n.stdout.contains("caught signal 11, on alternate stack 1, change refused 1"), "{n:?}");
    }
}

#[test]
fn rust_reports_its_stack_overflow_and_aborts() {
    let p = rust_program("overflow");
    for mode in ["main", "thread"] {
        let n = same_with(&[p.to_str().unwrap(), mode], true, without_ids);
        assert_eq!(n.signal, Some(libc::SIGABRT), "{n:?}");
        assert!(n.stderr.contains("has overflowed its stack"), "{n:?}");
    }
}

/// `tests/java/Work.java` compiled by javac natively (once per test process): its directory.
fn java_classes() -> &'static Path {
    static CLASSES: OnceLock<PathBuf> = OnceLock::new();
    CLASSES.get_or_init(|| {
        let out = dir().join("classes");
        let ok = Command::new("javac").arg("-d").arg(&out).arg(source("java/Work.java")).status().expect("javac");
        assert!(ok.success(), "javac");
        out
    })
}

#[test]
fn java_version() {
    let n = same_jvm(&["java", "-version"]);
    assert!(n.stderr.contains("openjdk version"), "{n:?}");
}

// The heap limits make the collector run (natively, -Xlog:gc shows 5 pauses at -Xint with
// 8 MiB, 11 with JIT-compiled code and 32 MiB).
#[test]
fn java_interpreted_with_threads_exceptions_and_gc() {
    let classes = java_classes().to_str().unwrap();
    let n = same_jvm(&["java", "-Xint", "-Xmx8m", "-cp", classes, "Work", "40"]);
    assert!(n.stdout.starts_with("total "), "{n:?}");
}

#[test]
fn java_jit_compiled_with_threads_exceptions_and_gc() {
    let classes = java_classes().to_str().unwrap();
    let n = same_jvm(&["java", "-Xmx32m", "-cp", classes, "Work", "200"]);
    assert!(n.stdout.starts_with("total "), "{n:?}");
}

#[test]
fn javac_compiles_a_small_file() {
    let out = dir().join("javac-out");
    std::fs::create_dir_all(&out).unwrap();
    let n = same_jvm(&["javac", "-d", out.to_str().unwrap(), source("java/Work.java").to_str().unwrap()]);
    assert_eq!(n.code, Some(0), "{n:?}");
}

#[test]
fn the_program_sees_only_its_own_descriptors() {
    let p = c_program("descriptors");
    let p = p.to_str().unwrap();
    for redirect in ["", "2>&-", ">&-", "<&- 2>&-"] {
        let n = same(&["/bin/sh", "-c", &format!("exec {p} {redirect}")]);
        assert!(n.stdout.contains("open gives") || n.stderr.contains("open gives"), "{redirect}: {n:?}");
    }
}

#[test]
fn a_daemon_does_not_hold_its_callers_pipes() {
    let p = c_program("descriptors");
    let started = std::time::Instant::now();
    let n = same(&[p.to_str().unwrap(), "daemon"]);
    assert_eq!(n.stdout, "parent done\n");
    // Five runs (native and four tool settings); the daemons live 3 s each.
    assert!(started.elapsed() < std::time::Duration::from_secs(3), "took {:?}", started.elapsed());
}

/// Asserts that `tests/c/NAME.c` behaves as natively (see [`same`]) and prints each of `lines`.
fn same_and_prints(name: &str, lines: &[&str]) {
    let n = same(&[c_program(name).to_str().unwrap()]);
    for line in lines {
        assert!(n.stdout.contains(line), "{line:?} missing: {n:?}");
    }
}

#[test]
fn posix_spawn_and_vfork_share_the_parents_memory() {
    same_and_prints(
        "spawn",
        &["posix_spawn missing: No such file or directory", "vfork child stored 42, exit 7", "parent's handler still runs: 1"],
    );
}

#[test]
fn clone_of_a_process_on_the_parents_memory() {
    same_and_prints(
        "clone_vm",
        &[
            "flags 0x111: exit 7, parent sees 499500",
            "flags 0x800700: exit 7, parent sees 499501",
            "valid in parent: 1, exit 0",
            "handler ran in the child: exit 3",
        ],
    );
}

/// `tests/c/sanitized.c` built with `-fsanitize=SANITIZER`.
fn sanitized(sanitizer: &str) -> PathBuf {
    let option = format!("-fsanitize={sanitizer}");
    compiled(&format!("sanitized-{sanitizer}"), "c/sanitized.c", &["gcc", "-O0", "-g", "-pthread", &option])
}

/// Sanitizer reports without what differs from run to run: pids (`==123==`, `pid=123`),
/// addresses and thread ids.
fn without_addresses(s: &str) -> String {
    static VARYING: OnceLock<regex::Regex> = OnceLock::new();
    VARYING.get_or_init(|| regex::Regex::new(r"==\d+==|0x[0-9a-f]+|tid=\d+|pid=\d+").unwrap()).replace_all(s, "N").into_owned()
}

#[test]
fn sanitizer_builds_report_as_natively() {
    let asan = sanitized("address");
    let leak = same_with(&[asan.to_str().unwrap(), "leak"], true, without_addresses);
    assert!(leak.stderr.contains("SUMMARY: AddressSanitizer: 40 byte(s) leaked in 4 allocation(s)."), "{leak:?}");
    let overflow = same_with(&[asan.to_str().unwrap(), "overflow"], false, without_addresses);
    assert!(overflow.stderr.contains("SUMMARY: AddressSanitizer: heap-buffer-overflow"), "{overflow:?}");
    let tsan = sanitized("thread");
    let race = same_with(&[tsan.to_str().unwrap(), "race"], false, without_addresses);
    assert!(race.stderr.contains("WARNING: ThreadSanitizer: data race"), "{race:?}");
}

#[test]
fn variables_for_the_loader_are_the_programs() {
    // `ldd` runs the dynamic loader with LD_TRACE_LOADED_OBJECTS=1: it must list the program's
    // libraries, not rewire's; the variables reach the program in their place and order.
    let script = "env; ldd /bin/ls; LD_BIND_NOW=1 /bin/echo bound";
    let argv = ["/usr/bin/env", "-i", "A=1", "LD_LIBRARY_PATH=/nonexistent", "B=2", "MALLOC_PERTURB_=7", "/bin/sh", "-c", script];
    let n = same_with(&argv, true, without_addresses);
    assert!(n.stdout.contains("LD_LIBRARY_PATH=/nonexistent\n") && n.stdout.contains("MALLOC_PERTURB_=7\n"), "{n:?}");
    assert!(n.stdout.contains("libselinux.so.1 =>") && n.stdout.ends_with("bound\n"), "{n:?}");
}

#[test]
fn rust_command_reports_a_missing_program() {
    let n = same(&[rust_program("spawn_missing").to_str().unwrap()]);
    assert!(n.stdout.starts_with("missing: NotFound\n"), "{n:?}");
}

#[test]
fn fexecve_and_execveat_run_the_program() {
    same_and_prints("execveat", &["run by fexecve\nfexecve: exit 0", "run by execveat\nexecveat: exit 0"]);
}

#[test]
fn proc_self_cmdline_is_the_programs() {
    let n = same(&["/bin/cat", "/proc/self/cmdline"]);
    assert_eq!(n.stdout, "/bin/cat\0/proc/self/cmdline\0");
}

#[test]
fn proc_self_maps_shows_the_programs_own_mappings() {
    let n = same(&[c_program("maps").to_str().unwrap()]);
    assert_eq!(n.stdout, "mapping made after open: 1\nheap: 1\nstack: 1, vdso: 1\nengine seen: 0\n");
    // `cat`'s own view: the same files at the same offsets with the same rights, about as
    // many anonymous mappings (how the kernel merges neighbours depends on the layout).
    let view = |cmd: &mut Command| {
        let text = String::from_utf8(cmd.arg("/proc/self/maps").output().expect("spawn").stdout).unwrap();
        let (named, anonymous): (Vec<&str>, Vec<&str>) =
            text.lines().map(|l| l.split_once(' ').unwrap().1).partition(|l| !l.ends_with(" 0 "));
        let mut named: Vec<String> = named.into_iter().map(String::from).collect();
        named.sort();
        (named, anonymous.len())
    };
    let native = view(&mut Command::new("/bin/cat"));
    for options in tool_options(false) {
        let under = view(rewire().arg("run").args(&options).args(["--", "/bin/cat"]));
        assert_eq!(under.0, native.0, "under {options:?}");
        assert!(under.1.abs_diff(native.1) <= 2, "{} anonymous mappings under {options:?}, {} natively", under.1, native.1);
    }
}

#[test]
fn proc_self_status_and_stat_show_the_programs_signal_dispositions() {
    let script = "import signal\n\
        signal.signal(signal.SIGUSR1, lambda *a: 0)\n\
        signal.signal(signal.SIGHUP, signal.SIG_IGN)\n\
        print([l for l in open('/proc/self/status') if l.startswith(('SigIgn', 'SigCgt', 'SigBlk'))])\n\
        print(open('/proc/self/stat').read().rsplit(') ', 1)[1].split()[30:32])\n";
    let n = same(&["/usr/bin/python3.11", "-c", script]);
    assert!(n.stdout.contains("'SigCgt:\\t0000000000000202\\n'"), "{n:?}");
}

#[test]
fn proc_self_stat_has_the_programs_code_and_data() {
    // startcode, endcode, startdata, enddata (fields 26, 27, 45, 46): their sizes and the
    // distance between them are the program's, wherever it was loaded.
    let layout = |cmd: &mut Command| {
        let text = String::from_utf8(cmd.arg("/proc/self/stat").output().expect("spawn").stdout).unwrap();
        let fields: Vec<u64> = text.rsplit_once(") ").unwrap().1.split(' ').map(|f| f.trim().parse().unwrap_or(0)).collect();
        let field = |n: usize| fields[n - 3];
        (field(27) - field(26), field(45) - field(26), field(46) - field(45))
    };
    let native = layout(&mut Command::new("/bin/cat"));
    assert_eq!(layout(rewire().args(["run", "--", "/bin/cat"])), native);
}

#[test]
fn cpython_test_suite_modules_pass_as_natively() {
    // CPython's own tests of what a DBI is most likely to break (subprocesses, fault and
    // signal handling, mmap), run in two worker processes. Debian: libpython3.11-testsuite.
    let modules = ["test_faulthandler", "test_subprocess", "test_signal", "test_mmap", "test_json", "test_re"];
    let verdict = |cmd: &mut Command| {
        let out = cmd.args(["-m", "test", "-j2"]).args(modules).current_dir(dir()).stdin(Stdio::null()).output().expect("spawn");
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let summary: Vec<String> = text
            .lines()
            .filter(|l| l.starts_with("Tests result:") || l.contains(" tests OK") || l.contains("failed"))
            .map(String::from)
            .collect();
        (out.status.code(), summary, text)
    };
    let native = verdict(&mut Command::new("/usr/bin/python3.11"));
    assert!(native.1.iter().any(|l| l == "Tests result: SUCCESS"), "the modules pass natively (libpython3.11-testsuite): {}", native.2);
    let under = verdict(rewire().args(["run", "--", "/usr/bin/python3.11"]));
    assert_eq!((under.0, &under.1), (native.0, &native.1), "{}", under.2);
}
