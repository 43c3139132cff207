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

#[test]
fn afl_fuzz_finds_the_planted_crash_and_it_reproduces_natively() {
    let seeds = dir().join("seeds");
    std::fs::create_dir_all(&seeds).unwrap();
    // One of the two comparisons is met by the seed; the fuzzer must find the other byte.
    std::fs::write(seeds.join("seed"), b"F-seed").unwrap();
    let out = dir().join("findings");
    let run = Command::new("afl-fuzz")
        .envs([
            ("AFL_NO_UI", "1"),
            ("AFL_SKIP_CPUFREQ", "1"),
            ("AFL_BENCH_UNTIL_CRASH", "1"),
            ("AFL_I_DONT_CARE_ABOUT_MISSING_CRASHES", "1"),
        ])
        .env("AFL_NO_AFFINITY", "1")
        .args(["-s", "7", "-V", "90", "-i"])
        .arg(&seeds)
        .arg("-o")
        .arg(&out)
        .args(["--", rewire(), "run", "-t", "afl", "--"])
        .arg(target())
        .arg("@@")
        .output()
        .expect("afl-fuzz (Debian package afl++)");
    let log = String::from_utf8_lossy(&run.stdout);
    assert!(run.status.success(), "afl-fuzz failed: {log}{}", String::from_utf8_lossy(&run.stderr));
    let crashes: Vec<PathBuf> = std::fs::read_dir(out.join("default/crashes"))
        .map(|d| {
            d.filter_map(|e| e.ok())
                .map(|e| e.path())
                .filter(|p| p.file_name().is_some_and(|n| n.to_string_lossy().starts_with("id:")))
                .collect()
        })
        .unwrap_or_default();
    let stats = std::fs::read_to_string(out.join("default/fuzzer_stats")).unwrap_or_default();
    assert!(!crashes.is_empty(), "a crash found within 90 s: {stats}");
    let native = Command::new(target()).arg(&crashes[0]).output().unwrap();
    assert_eq!(native.status.signal(), Some(libc_sigsegv()), "the crash file crashes the program natively too");
    let stability = stats.lines().find(|l| l.starts_with("stability")).unwrap_or_default();
    assert!(stability.contains("100.00%"), "a deterministic target is stable: {stability}");
}

fn libc_sigsegv() -> i32 {
    11
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
