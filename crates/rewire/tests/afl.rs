//! `rewire run -t afl`: AFL++'s own tools (Debian's afl++) drive an uninstrumented program
//! built with plain gcc through rewire's fork server and read its edge coverage.

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("rewire-afl-tests-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

/// The test target, built with `gcc -O2` (no instrumentation).
fn target() -> &'static Path {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT.get_or_init(|| {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/afl_target.c");
        let out = dir().join("afl_target");
        let st = Command::new("gcc").args(["-O2", "-o"]).arg(&out).arg(&src).status().expect("gcc");
        assert!(st.success(), "gcc failed");
        out
    })
}

fn input(name: &str, bytes: &[u8]) -> PathBuf {
    let p = dir().join(name);
    std::fs::write(&p, bytes).unwrap();
    p
}

fn rewire() -> &'static str {
    env!("CARGO_BIN_EXE_rewire")
}

/// `afl-showmap` of the target on `file` under rewire: its exit status and the map's lines.
fn showmap(file: &Path, name: &str) -> (Option<i32>, Vec<String>) {
    let map = dir().join(name);
    let out = Command::new("afl-showmap")
        .env("AFL_QUIET", "1")
        .arg("-q")
        .arg("-o")
        .arg(&map)
        .args(["--", rewire(), "run", "-t", "afl", "--"])
        .arg(target())
        .arg(file)
        .output()
        .expect("afl-showmap (Debian package afl++)");
    let lines = std::fs::read_to_string(&map).unwrap_or_default().lines().map(String::from).collect();
    (out.status.code(), lines)
}

#[test]
fn afl_showmap_sees_edges_that_differ_by_path_and_repeat_exactly() {
    let plain = input("plain", b"hello");
    let other = input("other", b"Faaaaaaaaaaaaaaaaaaaaaaa");
    let (st1, a) = showmap(&plain, "a");
    let (st2, b) = showmap(&plain, "b");
    let (st3, c) = showmap(&other, "c");
    assert_eq!((st1, st2, st3), (Some(0), Some(0), Some(0)));
    assert!(a.len() > 10, "a map of the program's edges: {a:?}");
    assert_eq!(a, b, "the same input gives the same map");
    assert_ne!(a, c, "another path gives another map");
    // A crash reaches afl-showmap as a crash (its status 2), as natively.
    let crash = input("crash", b"FZ!");
    assert_eq!(showmap(&crash, "d").0, Some(2));
}

/// An `afl-fuzz` command on `program` under `rewire run -t afl`, seeded with `seed`, its
/// findings in a directory of `name`, for at most `seconds` (fixed random seed), with the
/// fuzzer options `extra`.
fn afl_fuzz(name: &str, program: &Path, seed: &[u8], seconds: u32, extra: &[&str]) -> (Command, PathBuf) {
    let seeds = dir().join(format!("{name}-seeds"));
    std::fs::create_dir_all(&seeds).unwrap();
    std::fs::write(seeds.join("seed"), seed).unwrap();
    let out = dir().join(format!("{name}-findings"));
    let mut cmd = Command::new("afl-fuzz");
    cmd.envs([("AFL_NO_UI", "1"), ("AFL_SKIP_CPUFREQ", "1"), ("AFL_NO_AFFINITY", "1"), ("AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES", "1")])
        .args(extra)
        .args(["-s", "7", "-V", &seconds.to_string(), "-i"])
        .arg(&seeds)
        .arg("-o")
        .arg(&out)
        .args(["--", rewire(), "run", "-t", "afl", "--"])
        .arg(program)
        .arg("@@");
    (cmd, out)
}

/// What one instance of a campaign left in `dir`: its crash files and the fields of its
/// `fuzzer_stats`.
fn findings(dir: &Path) -> (Vec<PathBuf>, String) {
    let crashes = std::fs::read_dir(dir.join("crashes"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("id:")))
                .collect()
        })
        .unwrap_or_default();
    (crashes, std::fs::read_to_string(dir.join("fuzzer_stats")).unwrap_or_default())
}

/// A field of `fuzzer_stats`.
fn stat<'a>(stats: &'a str, key: &str) -> &'a str {
    stats.lines().find(|l| l.split(':').next().is_some_and(|k| k.trim() == key)).and_then(|l| l.split(':').nth(1)).map_or("", str::trim)
}

/// Runs `afl_fuzz` until the first crash (or `seconds`), with `extra` options first: the
/// crash files, the stats and afl-fuzz's output.
fn fuzz_until_crash(name: &str, program: &Path, seed: &[u8], seconds: u32, extra: &[&str]) -> (Vec<PathBuf>, String, String) {
    let (mut cmd, out) = afl_fuzz(name, program, seed, seconds, extra);
    let run = cmd.env("AFL_BENCH_UNTIL_CRASH", "1").output().expect("afl-fuzz (Debian package afl++)");
    let log = String::from_utf8_lossy(&run.stdout).into_owned();
    assert!(run.status.success(), "afl-fuzz failed: {log}{}", String::from_utf8_lossy(&run.stderr));
    let (crashes, stats) = findings(&out.join("default"));
    (crashes, stats, log)
}

#[test]
fn afl_fuzz_finds_the_planted_crash_and_it_reproduces_natively() {
    // One of the two comparisons is met by the seed; the fuzzer must find the other byte.
    let (crashes, stats, log) = fuzz_until_crash("planted", target(), b"F-seed", 90, &[]);
    assert!(!crashes.is_empty(), "a crash found within 90 s: {stats}");
    let native = Command::new(target()).arg(&crashes[0]).output().unwrap();
    assert_eq!(native.status.signal(), Some(libc_sigsegv()), "the crash file crashes the program natively too");
    assert_eq!(stat(&stats, "stability"), "100.00%", "a deterministic target is stable");
    // afl-fuzz offers 8 MiB while it asks for the size; a target that took it all would
    // have the fuzzer clear and scan 8 MiB after every run.
    assert!(log.contains("Target map size: 65536"), "rewire answers its own map size: {log}");
}

fn libc_sigsegv() -> i32 {
    libc::SIGSEGV
}

/// `tests/c/NAME.c` built with `gcc -O2`, once however many tests ask at the same time.
fn build(name: &str) -> PathBuf {
    static BUILT: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut built = BUILT.lock().unwrap();
    let out = dir().join(name);
    if !built.iter().any(|b| b == name) {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c"));
        let st = Command::new("gcc").args(["-O2", "-o"]).arg(&out).arg(&src).status().expect("gcc");
        assert!(st.success(), "gcc failed");
        built.push(name.to_string());
    }
    out
}

/// The link-time address of function `name` of `program` (from `nm`).
fn symbol(program: &Path, name: &str) -> String {
    let nm = Command::new("nm").arg(program).output().expect("nm");
    let text = String::from_utf8_lossy(&nm.stdout);
    let line = text.lines().find(|l| l.ends_with(&format!(" T {name}"))).expect("the symbol");
    format!("0x{}", line.split(' ').next().unwrap())
}

/// A fork-server client in the classic protocol, as AFL++ 4.04c speaks it: runs `program`
/// under `rewire run -t afl` with `env`, and for each input writes it to `file`, asks for a
/// run and collects (pid, wait status). Returns those and the program's output.
fn drive(env: &[(&str, &str)], program: &Path, file: &Path, inputs: &[&[u8]]) -> (Vec<(u32, i32)>, String) {
    use std::io::{Read, Write};
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::process::CommandExt;
    let pipe = || {
        let mut fds = [0; 2];
        // SAFETY: pipe2 fills two descriptors we then own.
        assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
        // SAFETY: fresh descriptors nobody else owns.
        unsafe { (std::fs::File::from(OwnedFd::from_raw_fd(fds[0])), std::fs::File::from(OwnedFd::from_raw_fd(fds[1]))) }
    };
    let (ctl_r, mut ctl_w) = pipe();
    let (mut st_r, st_w) = pipe();
    let (ctl, st) = (ctl_r.as_raw_fd(), st_w.as_raw_fd());
    let mut cmd = Command::new(rewire());
    cmd.args(["run", "-t", "afl", "--"]).arg(program).arg(file).envs(env.iter().copied()).env("REWIRE_AFL_PROTOCOL", "classic");
    cmd.stdout(std::process::Stdio::piped());
    // SAFETY: only dup2 between fork and exec (async-signal-safe): the pipes become the
    // fork server's descriptors 198 and 199.
    unsafe {
        cmd.pre_exec(move || {
            if libc::dup2(ctl, 198) < 0 || libc::dup2(st, 199) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        })
    };
    let mut child = cmd.spawn().expect("rewire");
    drop((ctl_r, st_w));
    let mut word = || {
        let mut b = [0u8; 4];
        st_r.read_exact(&mut b).expect("a word from the fork server");
        u32::from_le_bytes(b)
    };
    let options = word();
    assert_eq!(options & 0x8000_0001, 0x8000_0001, "the classic options word: {options:#x}");
    let mut runs = Vec::new();
    for input in inputs {
        std::fs::write(file, input).unwrap();
        ctl_w.write_all(&[0; 4]).unwrap();
        let pid = word();
        runs.push((pid, word() as i32));
    }
    drop(ctl_w);
    let mut out = String::new();
    child.stdout.take().unwrap().read_to_string(&mut out).unwrap();
    assert!(child.wait().unwrap().success(), "the fork server ends when its fuzzer does");
    (runs, out)
}

#[test]
fn persistent_mode_runs_the_function_n_times_in_one_process_with_the_results_of_separate_runs() {
    let program = build("afl_persistent");
    let addr = symbol(&program, "fuzz_one");
    let file = dir().join("persistent.in");
    let inputs: Vec<Vec<u8>> = (0..7).map(|k| format!("input {k}{}", "x".repeat(k)).into_bytes()).collect();
    let inputs: Vec<&[u8]> = inputs.iter().map(|v| v.as_slice()).collect();
    let env = [("REWIRE_AFL_PERSISTENT_ADDR", addr.as_str()), ("REWIRE_AFL_PERSISTENT_CNT", "3")];
    let (runs, out) = drive(&env, &program, &file, &inputs);
    // Three iterations per child: two stop after their iteration, the third returns and the
    // program exits; then a new child.
    let pids: Vec<u32> = runs.iter().map(|r| r.0).collect();
    assert!(pids[0] == pids[1] && pids[1] == pids[2] && pids[3] != pids[2] && pids[3] == pids[5] && pids[6] != pids[5], "{runs:?}");
    let stopped = |s: i32| libc::WIFSTOPPED(s) && libc::WSTOPSIG(s) == libc::SIGSTOP;
    assert!(stopped(runs[0].1) && stopped(runs[1].1) && runs[2].1 == 0 && stopped(runs[3].1), "{runs:?}");
    // Each iteration read its own input: the same lines as separate native runs.
    let mut native = String::new();
    for input in &inputs {
        std::fs::write(&file, input).unwrap();
        native.push_str(&String::from_utf8_lossy(&Command::new(&program).arg(&file).output().unwrap().stdout));
    }
    assert_eq!(out, native);
    // A crash in an iteration is the program's own signal.
    let crash: &[u8] = b"FZ";
    let (runs, _) = drive(&env, &program, &file, &[b"ok", crash, b"ok"]);
    assert!(libc::WIFSIGNALED(runs[1].1) && libc::WTERMSIG(runs[1].1) == libc::SIGABRT, "{runs:?}");
    assert_ne!(runs[2].0, runs[1].0, "a new child after the crash");
}

#[test]
fn cmplog_gets_the_fuzzer_through_a_magic_number_strcmp_and_memcmp() {
    let program = build("afl_cmplog");
    let seed = [b'A'; 28];
    // Without comparison logging, 32 bits of magic and 20 bytes of strings are out of reach.
    let (without, _, _) = fuzz_until_crash("no-cmplog", &program, &seed, 8, &[]);
    assert!(without.is_empty());
    // With it (`-c 0`: the same command, run again with __AFL_CMPLOG_SHM_ID), in seconds.
    let (with, stats, _) = fuzz_until_crash("cmplog", &program, &seed, 90, &["-c", "0"]);
    assert_eq!(with.len(), 1, "{stats}");
}

#[test]
fn a_main_and_a_secondary_instance_each_run_their_own_fork_server_and_sync() {
    let start = |role: &str, name: &str, seconds: u32| {
        let (mut cmd, _) = afl_fuzz("parallel", target(), b"F-seed", seconds, &[role, name]);
        // The secondary imports what the main instance found before its own first cycle.
        cmd.env("AFL_IMPORT_FIRST", "1").stdout(std::process::Stdio::null()).spawn().expect("afl-fuzz (Debian package afl++)")
    };
    let mut main = start("-M", "main", 8);
    std::thread::sleep(std::time::Duration::from_secs(3));
    let mut secondary = start("-S", "second", 5);
    assert!(main.wait().unwrap().success() && secondary.wait().unwrap().success());
    let out = dir().join("parallel-findings");
    for name in ["main", "second"] {
        let (_, stats) = findings(&out.join(name));
        assert!(stat(&stats, "execs_done").parse::<u64>().unwrap_or(0) > 100, "{name}: {stats}");
        assert_eq!(stat(&stats, "stability"), "100.00%", "{name}: {stats}");
    }
    // The secondary read the main instance's queue (AFL++ records what it synced).
    assert!(out.join("second/.synced/main").exists(), "the secondary synced from the main instance");
}

#[test]
fn afl_fuzz_in_persistent_mode_sees_every_iteration_alike() {
    let program = build("afl_persistent");
    let addr = symbol(&program, "fuzz_one");
    let (mut cmd, out) = afl_fuzz("persistent", &program, b"hello", 5, &[]);
    let run = cmd.env("REWIRE_AFL_PERSISTENT_ADDR", &addr).output().expect("afl-fuzz (Debian package afl++)");
    assert!(run.status.success(), "afl-fuzz failed: {}", String::from_utf8_lossy(&run.stdout));
    let (_, stats) = findings(&out.join("default"));
    // The way from the entry point to the loop is not part of the first iteration's map.
    assert_eq!(stat(&stats, "stability"), "100.00%", "{stats}");
}

#[test]
fn a_persistent_address_that_is_not_a_function_start_is_refused() {
    let program = build("afl_persistent");
    let addr = symbol(&program, "fuzz_one");
    let inside = format!("{:#x}", u64::from_str_radix(addr.trim_start_matches("0x"), 16).unwrap() + 1);
    let file = input("refused.in", b"hello");
    for (value, says) in
        [(inside.as_str(), "not the start of a function"), ("0x10", "not in the code"), ("zz", "not a hexadecimal address")]
    {
        let out = Command::new(rewire())
            .args(["run", "-t", "afl", "--"])
            .arg(&program)
            .arg(&file)
            .env("AFL_QEMU_PERSISTENT_ADDR", value)
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{value}: {err}");
        assert!(err.starts_with("rewire: ") && err.contains(says), "{value}: {err}");
        assert!(out.stdout.is_empty());
    }
}

fn run_alone(env: &[(&str, &str)], file: &Path) -> Output {
    Command::new(rewire()).args(["run", "-t", "afl", "--"]).arg(target()).arg(file).envs(env.iter().copied()).output().unwrap()
}

#[test]
fn outside_a_fuzzer_the_program_runs_once_and_bad_settings_are_refused_before_it_runs() {
    let plain = input("alone", b"hello");
    let native = Command::new(target()).arg(&plain).output().unwrap();
    let alone = run_alone(&[], &plain);
    assert_eq!((alone.status.code(), &alone.stdout), (native.status.code(), &native.stdout), "{}", String::from_utf8_lossy(&alone.stderr));
    for (env, says) in [
        (vec![("AFL_MAP_SIZE", "lots")], "AFL_MAP_SIZE=lots"),
        (vec![("REWIRE_AFL_MAP_SIZE", "12")], "REWIRE_AFL_MAP_SIZE=12"),
        (vec![("__AFL_SHM_ID", "x")], "__AFL_SHM_ID=x"),
        (vec![("__AFL_SHM_ID", "2147483646")], "cannot attach System V shared memory segment"),
        (vec![("AFL_ENTRYPOINT", "main")], "AFL_ENTRYPOINT=main"),
        (vec![("AFL_QEMU_INST_RANGES", "0x9-0x1")], "AFL_QEMU_INST_RANGES"),
    ] {
        let out = run_alone(&env, &plain);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{env:?}: {err}");
        assert!(err.starts_with("rewire: ") && err.contains(says), "{env:?}: {err}");
        assert!(out.stdout.is_empty(), "the program did not run");
    }
}
