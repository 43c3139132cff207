//! Tool output is never lost: however the program ends (exit from any thread, every signal
//! whose default action ends the process, sent by itself or from outside, `execve`), the
//! drcov file is complete and valid and the instruction count is reported, and the process
//! ends with the same status as natively. Output directories are made or refused before the
//! program starts, a failed write says what was lost, bad ELF files get clear errors, and the
//! program's stderr is its own.

use std::io::BufRead;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::{CommandExt, ExitStatusExt};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rewire-never-lost-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `c/dies.c`, built once.
fn dies() -> &'static str {
    static BUILT: OnceLock<String> = OnceLock::new();
    BUILT.get_or_init(|| {
        let out = scratch("build").join("dies");
        let source = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/c/dies.c");
        let ok = Command::new("gcc").args(["-O2", "-g", "-pthread", "-o"]).arg(&out).arg(&source).status().expect("gcc").success();
        assert!(ok, "gcc dies.c");
        out.to_str().unwrap().to_string()
    })
}

/// Link-time address of function `name` of the test program.
fn function_address(name: &str) -> u64 {
    let out = Command::new("nm").arg(dies()).output().expect("nm");
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.ends_with(&format!(" T {name}"))).unwrap_or_else(|| panic!("{name} in nm output"));
    u64::from_str_radix(line.split(' ').next().unwrap(), 16).unwrap()
}

/// `argv` natively, or under `rewire run OPTIONS --` when `options` is given; no core files,
/// every signal at its default action (whatever this test process inherited).
fn command(options: Option<&[&str]>, argv: &[&str]) -> Command {
    let mut cmd = match options {
        Some(opts) => {
            let mut c = Command::new(env!("CARGO_BIN_EXE_rewire"));
            c.arg("run").args(opts).arg("--").args(argv);
            c
        }
        None => {
            let mut c = Command::new(argv[0]);
            c.args(&argv[1..]);
            c
        }
    };
    cmd.current_dir("/tmp").stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    // SAFETY: setrlimit and signal are async-signal-safe; they change only the child's core
    // size limit and dispositions.
    unsafe {
        cmd.pre_exec(|| {
            let none = libc::rlimit { rlim_cur: 0, rlim_max: libc::RLIM_INFINITY };
            libc::setrlimit(libc::RLIMIT_CORE, &none);
            // Raw: glibc's signal() refuses 32 and 33, which it keeps for itself.
            let default = [0u64; 4];
            for sig in 1..=libc::SIGRTMAX() {
                libc::syscall(libc::SYS_rt_sigaction, sig, default.as_ptr(), 0usize, 8usize);
            }
            Ok(())
        })
    };
    cmd
}

/// How a run ended (the raw wait status) and its stderr.
#[derive(Debug)]
struct Ended {
    status: i32,
    stderr: String,
}

/// Waits for `child` (at most a minute: then it is killed and the test fails).
fn wait(child: Child) -> Ended {
    let pid = child.id() as i32;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || tx.send(child.wait_with_output()));
    let Ok(out) = rx.recv_timeout(std::time::Duration::from_secs(60)) else {
        // SAFETY: a signal to our own child.
        unsafe { libc::kill(pid, libc::SIGKILL) };
        panic!("the program did not end in a minute");
    };
    let out = out.expect("wait");
    Ended { status: out.status.into_raw(), stderr: String::from_utf8_lossy(&out.stderr).into_owned() }
}

fn run(mut cmd: Command) -> Ended {
    wait(cmd.spawn().expect("spawn"))
}

/// Runs `cmd` (a `dies wait` or `dies spin`), waits for its "ready" line, sends it `sig`.
fn run_killed(mut cmd: Command, sig: i32) -> Ended {
    let mut child = cmd.spawn().expect("spawn");
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    assert_eq!(line, "ready\n");
    // SAFETY: a signal to our own child.
    unsafe { libc::kill(child.id() as i32, sig) };
    wait(child)
}

/// A drcov file, checked against the format: header, module table of the count it gives,
/// `BB Table: N bbs` and exactly N 8-byte records, each in a module of the table.
#[derive(Debug)]
struct Drcov {
    /// (id, start, end, preferred base, path) of each module table entry.
    modules: Vec<(u16, u64, u64, u64, String)>,
    blocks: Vec<(u32, u16, u16)>,
}

fn read_drcov(path: &Path) -> Drcov {
    let data = std::fs::read(path).unwrap();
    let split = data.windows(10).position(|w| w == b"BB Table: ").unwrap_or_else(|| panic!("{}: no BB table", path.display()));
    let head = std::str::from_utf8(&data[..split]).unwrap();
    let mut lines = head.lines();
    assert_eq!(lines.next(), Some("DRCOV VERSION: 3"), "{}", path.display());
    assert_eq!(lines.next(), Some("DRCOV FLAVOR: drcov-64"));
    let count: usize = lines.next().and_then(|l| l.strip_prefix("Module Table: version 5, count ")).expect("module table").parse().unwrap();
    assert!(lines.next().is_some_and(|l| l.starts_with("Columns: id, containing_id, start, end")));
    let hex = |s: &str| u64::from_str_radix(s.trim().trim_start_matches("0x"), 16).unwrap();
    let modules: Vec<_> = lines
        .map(|l| {
            let f: Vec<&str> = l.splitn(8, ", ").collect();
            (f[0].trim().parse().unwrap(), hex(f[2]), hex(f[3]), hex(f[6]), f[7].to_string())
        })
        .collect();
    assert_eq!(modules.len(), count, "module table count");
    let rest = &data[split..];
    let newline = rest.iter().position(|&b| b == b'\n').unwrap();
    let n: usize = std::str::from_utf8(&rest[10..newline]).unwrap().strip_suffix(" bbs").unwrap().parse().unwrap();
    let records = &rest[newline + 1..];
    assert_eq!(records.len(), n * 8, "{}: {n} records announced", path.display());
    // {u32 start, u16 size, u16 module id}, little-endian: one u64 each.
    let blocks: Vec<(u32, u16, u16)> = records
        .chunks_exact(8)
        .map(|r| u64::from_le_bytes(r.try_into().unwrap()))
        .map(|r| (r as u32, (r >> 32) as u16, (r >> 48) as u16))
        .collect();
    for &(start, size, id) in &blocks {
        let m = modules.get(id as usize).expect("a block's module is in the table");
        assert!(m.1 + start as u64 + size as u64 <= m.2, "block {start:#x}+{size} outside {m:?}");
    }
    Drcov { modules, blocks }
}

impl Drcov {
    /// Whether a block of the test program starts at link-time address `addr`.
    fn covers(&self, addr: u64) -> bool {
        self.blocks.iter().any(|&(start, _, id)| {
            let m = &self.modules[id as usize];
            m.4 == dies() && m.3 + start as u64 == addr
        })
    }
}

/// The one drcov file in `dir` (no temporary file left beside it).
fn only_drcov(dir: &Path) -> Drcov {
    let names: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].starts_with("drcov.dies.") && names[0].ends_with(".proc.log"), "{names:?}");
    read_drcov(&dir.join(&names[0]))
}

fn instructions_reported(stderr: &str) -> bool {
    stderr.lines().any(|l| l.strip_prefix("rewire: instructions: ").is_some_and(|n| n.parse::<u64>().is_ok_and(|n| n > 1000)))
}

/// Every signal whose default action ends the process (SIGKILL aside), real-time ones included.
fn terminating_signals() -> Vec<i32> {
    let not = [
        libc::SIGKILL,
        libc::SIGSTOP,
        libc::SIGTSTP,
        libc::SIGTTIN,
        libc::SIGTTOU,
        libc::SIGCHLD,
        libc::SIGURG,
        libc::SIGWINCH,
        libc::SIGCONT,
    ];
    (1..=libc::SIGRTMAX()).filter(|s| !not.contains(s)).collect()
}

/// Runs `argv` natively and under `-t cov` and `-t inscount` (ended by `end`): the same wait
/// status, a valid drcov file holding `marker`'s block, the instruction count.
fn check_end(argv: &[&str], end: &dyn Fn(Command) -> Ended, what: &str) {
    let native = end(command(None, argv));
    let dir = scratch(&format!("cov-{}", what.replace(' ', "-")));
    let d = dir.to_str().unwrap();
    let cov = end(command(Some(&["-t", "cov", "-o", d]), argv));
    assert_eq!(cov.status, native.status, "{what}: status under -t cov; rewire said: {}", cov.stderr);
    let drcov = only_drcov(&dir);
    assert!(drcov.covers(function_address("marker")), "{what}: marker's block is in the drcov file");
    let count = end(command(Some(&["-t", "inscount"]), argv));
    assert_eq!(count.status, native.status, "{what}: status under -t inscount; rewire said: {}", count.stderr);
    assert!(instructions_reported(&count.stderr), "{what}: {}", count.stderr);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn every_terminating_signal_sent_by_the_program_itself() {
    for sig in terminating_signals() {
        let s = sig.to_string();
        check_end(&[dies(), "raise", &s], &run, &format!("raise {sig}"));
    }
    // Blocked when sent: it comes when the program unblocks it.
    for sig in [libc::SIGTERM, libc::SIGQUIT, libc::SIGRTMAX()] {
        let s = sig.to_string();
        check_end(&[dies(), "blocked", &s], &run, &format!("blocked {sig}"));
    }
}

#[test]
fn every_terminating_signal_sent_from_outside() {
    for sig in terminating_signals() {
        check_end(&[dies(), "wait"], &|cmd| run_killed(cmd, sig), &format!("kill {sig} in pause"));
    }
    // Signals that come while the program runs in the cache, not in a system call.
    for sig in [libc::SIGTERM, libc::SIGINT, libc::SIGUSR1, libc::SIGRTMIN()] {
        check_end(&[dies(), "spin"], &|cmd| run_killed(cmd, sig), &format!("kill {sig} while looping"));
    }
    // ... while another thread keeps taking the engine's lock.
    for sig in [libc::SIGTERM, libc::SIGINT] {
        check_end(&[dies(), "spin-busy"], &|cmd| run_killed(cmd, sig), &format!("kill {sig} while looping beside a busy thread"));
    }
}

#[test]
fn faults_timers_broken_pipes_and_abort() {
    for kind in ["segv", "bus", "fpe", "ill"] {
        check_end(&[dies(), "fault", kind], &run, &format!("fault {kind}"));
    }
    for kind in ["real", "virtual", "prof"] {
        check_end(&[dies(), "timer", kind], &run, &format!("timer {kind}"));
    }
    check_end(&[dies(), "pipe"], &run, "pipe");
    check_end(&[dies(), "abort"], &run, "abort");
}

#[test]
fn exits_from_any_thread_and_exec() {
    for (mode, status) in [("exit", 0), ("thread-exit-group", 3), ("thread-exit", 5), ("main-exit", 4)] {
        check_end(&[dies(), mode, "0"], &run, mode);
        let dir = scratch(&format!("threads-{mode}"));
        let out = run(command(Some(&["-t", "cov", "-o", dir.to_str().unwrap()]), &[dies(), mode, "0"]));
        assert_eq!(out.status, status << 8, "{mode}: {}", out.stderr);
        if mode.ends_with("-exit") {
            assert!(only_drcov(&dir).covers(function_address("after_thread")), "{mode}: the blocks run after the thread's exit");
        }
    }
    // execve: the program's file is written before the exec, the new program writes its own.
    let dir = scratch("exec");
    let out = run(command(Some(&["-t", "cov", "-o", dir.to_str().unwrap()]), &[dies(), "exec"]));
    assert_eq!(out.status, 0, "{}", out.stderr);
    let mut names: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(names[0].starts_with("drcov.dies.") && names[1].starts_with("drcov.true."), "{names:?}");
    assert!(read_drcov(&dir.join(&names[0])).covers(function_address("marker")));
    read_drcov(&dir.join(&names[1]));
}

#[test]
fn the_program_sees_its_own_dispositions() {
    let argv = [dies(), "dispositions"];
    let stdout = |mut cmd: Command| {
        let out = cmd.output().unwrap();
        (out.status.into_raw(), String::from_utf8(out.stdout).unwrap())
    };
    let native = stdout(command(None, &argv));
    let dir = scratch("dispositions");
    let under = stdout(command(Some(&["-t", "cov", "-o", dir.to_str().unwrap()]), &argv));
    assert_eq!(under, native);
    assert_eq!(native.0, libc::SIGUSR1);
    assert!(native.1.starts_with("15:default 2:default 1:default 10:default 11:default"), "{}", native.1);
    assert!(only_drcov(&dir).covers(function_address("marker")));
}

#[test]
fn core_dumping_signals_dump_core_as_natively() {
    let dir = scratch("core");
    let with_core = |options: Option<&[&str]>, argv: &[&str]| {
        let mut cmd = command(options, argv);
        cmd.current_dir(&dir);
        // SAFETY: setrlimit only changes the child's core size limit.
        unsafe {
            cmd.pre_exec(|| {
                let any = libc::rlimit { rlim_cur: libc::RLIM_INFINITY, rlim_max: libc::RLIM_INFINITY };
                libc::setrlimit(libc::RLIMIT_CORE, &any);
                Ok(())
            })
        };
        cmd
    };
    for argv in [&[dies(), "raise", "3"][..], &[dies(), "fault", "segv"]] {
        let native = run(with_core(None, argv));
        let under = run(with_core(Some(&[]), argv));
        assert_eq!(under.status, native.status, "{argv:?}: {}", under.stderr);
        for e in std::fs::read_dir(&dir).unwrap() {
            let _ = std::fs::remove_file(e.unwrap().path());
        }
    }
}

#[test]
fn stderr_is_the_programs_own_unless_asked() {
    for argv in [&[dies(), "abort"][..], &[dies(), "fault", "segv"], &[dies(), "raise", "15"]] {
        let native = run(command(None, argv));
        let under = run(command(Some(&[]), argv));
        assert_eq!(under.status, native.status);
        assert_eq!(under.stderr, native.stderr, "{argv:?}: stderr differs");
    }
    let verbose = run(command(Some(&["--verbose"]), &[dies(), "fault", "segv"]));
    assert!(verbose.stderr.contains("rewire: the program was killed by SIGSEGV at "), "{}", verbose.stderr);
    let log = scratch("log").join("rewire.log");
    let logged = run(command(Some(&["--log", log.to_str().unwrap()]), &[dies(), "fault", "segv"]));
    assert_eq!(logged.stderr, "");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(text.contains("rewire: the program was killed by SIGSEGV at ") && text.contains("(dies+0x"), "{text}");
}

#[test]
fn flush_interval_bounds_what_sigkill_loses() {
    let dir = scratch("interval");
    let mut cmd = command(Some(&["-t", "cov", "--flush-interval", "0.1", "-o", dir.to_str().unwrap()]), &[dies(), "spin"]);
    let mut child = cmd.spawn().unwrap();
    let mut line = String::new();
    std::io::BufReader::new(child.stdout.as_mut().unwrap()).read_line(&mut line).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(400));
    assert!(only_drcov(&dir).covers(function_address("marker")), "written while the program runs");
    child.kill().unwrap();
    let out = wait(child);
    assert_eq!(out.status, libc::SIGKILL);
    let names: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    let drcov: Vec<&String> = names.iter().filter(|n| !n.starts_with('.')).collect();
    assert_eq!(drcov.len(), 1, "{names:?}");
    assert!(read_drcov(&dir.join(drcov[0])).covers(function_address("marker")), "complete after SIGKILL");
}

#[test]
fn the_module_table_lists_only_elf_files() {
    let dir = scratch("modules");
    let out = run(command(Some(&["-t", "cov", "-o", dir.to_str().unwrap()]), &["ls", "/"]));
    assert_eq!(out.status, 0, "{}", out.stderr);
    let names: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
    let d = read_drcov(&names[0]);
    for (_, _, _, _, path) in &d.modules {
        assert!(path == "[vdso]" || std::fs::read(path).unwrap().starts_with(b"\x7fELF"), "{path} in the module table");
    }
    assert!(d.modules.iter().any(|m| m.4.contains("libc.so")));
}

#[test]
fn output_directories_are_made_or_refused_before_the_program_runs() {
    let base = scratch("outdir");
    let ran = base.join("ran");
    let touch = ["touch", ran.to_str().unwrap()];
    // Missing: made, with its parents.
    let nested = base.join("a/b/c");
    let out = run(command(Some(&["-t", "cov", "-o", nested.to_str().unwrap()]), &touch));
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert_eq!(std::fs::read_dir(&nested).unwrap().count(), 1);
    std::fs::remove_file(&ran).unwrap();
    // Relative: to where rewire started, even when the program changes directory.
    let mut cmd = command(Some(&["-t", "cov", "-o", "rel/out"]), &["sh", "-c", "cd / && echo"]);
    cmd.current_dir(&base);
    let out = run(cmd);
    assert_eq!(out.status, 0, "{}", out.stderr);
    assert!(std::fs::read_dir(base.join("rel/out")).unwrap().any(|e| e.unwrap().file_name().to_string_lossy().starts_with("drcov.")));
    // A regular file, and a path under one: refused, exit 1, the program not run.
    let file = base.join("file");
    std::fs::write(&file, "").unwrap();
    for bad in [file.clone(), file.join("sub")] {
        let out = run(command(Some(&["-t", "cov", "-o", bad.to_str().unwrap()]), &touch));
        assert_eq!(out.status, 1 << 8, "{}", out.stderr);
        assert!(
            out.stderr.starts_with(&format!("rewire: {}: cannot write output there: Not a directory", bad.display())),
            "{}",
            out.stderr
        );
        assert!(!ran.exists(), "the program ran");
    }
    // A read-only file system (root ignores permission bits, not that).
    let ro = base.join("ro");
    std::fs::create_dir(&ro).unwrap();
    if !mount_tmpfs(&ro, "ro,size=64k") {
        return;
    }
    let out = run(command(Some(&["-t", "cov", "-o", ro.to_str().unwrap()]), &touch));
    unmount(&ro);
    assert_eq!(out.status, 1 << 8, "{}", out.stderr);
    assert!(out.stderr.contains("cannot write output there: Read-only file system"), "{}", out.stderr);
    assert!(!ran.exists(), "the program ran");
}

fn mount_tmpfs(dir: &Path, options: &str) -> bool {
    let ok = Command::new("mount").args(["-t", "tmpfs", "-o", options, "tmpfs"]).arg(dir).status().is_ok_and(|s| s.success());
    if !ok {
        eprintln!("cannot mount a tmpfs (not root?): the read-only and full file system cases are skipped");
    }
    ok
}

fn unmount(dir: &Path) {
    assert!(Command::new("umount").arg(dir).status().unwrap().success());
}

#[test]
fn a_full_disk_says_what_was_lost_and_fails_only_a_successful_exit() {
    let dir = scratch("full");
    if !mount_tmpfs(&dir, "size=16k") {
        return;
    }
    // Fill it (the directory still takes new, empty files).
    let _ = std::fs::write(dir.join("filler"), vec![0u8; 64 << 10]);
    let d = dir.to_str().unwrap();
    let cases = [(&[dies(), "exit", "0"][..], 125 << 8), (&[dies(), "exit", "3"], 3 << 8), (&[dies(), "abort"], libc::SIGABRT)];
    let results: Vec<Ended> = cases.iter().map(|(argv, _)| run(command(Some(&["-t", "cov", "-o", d]), argv))).collect();
    let leftovers = std::fs::read_dir(&dir).unwrap().count();
    unmount(&dir);
    for ((argv, status), out) in cases.iter().zip(results) {
        assert_eq!(out.status, *status, "{argv:?}: {}", out.stderr);
        assert!(out.stderr.contains(&format!("rewire: cov: could not write {d}/drcov.dies.")), "{}", out.stderr);
        assert!(
            out.stderr.contains("No space left on device") && out.stderr.contains(": lost ") && out.stderr.contains(" blocks of coverage"),
            "{}",
            out.stderr
        );
    }
    assert_eq!(leftovers, 1, "only the filler: no partial or temporary files");
}

#[test]
fn truncated_and_corrupted_elf_files_get_clear_errors() {
    let dir = scratch("elf");
    let ls = std::fs::read("/bin/ls").unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let p = dir.join(name);
        std::fs::write(&p, bytes).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
        p.to_str().unwrap().to_string()
    };
    let mut cases = Vec::new();
    let phoff = u64::from_le_bytes(ls[32..40].try_into().unwrap()) as usize;
    let phnum = u16::from_le_bytes(ls[56..58].try_into().unwrap()) as usize;
    let field = |at: usize| u64::from_le_bytes(ls[at..at + 8].try_into().unwrap());
    let kind_at = |o: usize| u32::from_le_bytes(ls[o..o + 4].try_into().unwrap());
    let phdrs: Vec<usize> = (0..phnum).map(|i| phoff + i * 56).collect();
    // The end of the last PT_LOAD's bytes in the file: cuts before it truncate a segment.
    let loads_end = phdrs.iter().filter(|&&o| kind_at(o) == 1).map(|&o| field(o + 8) + field(o + 32)).max().unwrap() as usize;
    for cut in [20, 63, 64, 300, 4096, 30_000, loads_end / 2, loads_end - 1] {
        cases.push((write(&format!("ls-{cut}"), &ls[..cut]), "truncated ELF file"));
    }
    let phdr = |kind: u32| phdrs.iter().copied().find(|&o| kind_at(o) == kind).unwrap();
    let (load, interp) = (phdr(1), phdr(3));
    let corrupt = |name: &str, at: usize, value: u64| {
        let mut b = ls.clone();
        b[at..at + 8].copy_from_slice(&value.to_le_bytes());
        write(name, &b)
    };
    cases.push((corrupt("offset", load + 8, 1 << 40), "truncated ELF file"));
    cases.push((corrupt("filesz", load + 32, 1 << 40), "invalid ELF file: program header"));
    cases.push((corrupt("vaddr", load + 16, 0x1234), "invalid ELF file: program header"));
    cases.push((corrupt("memsz", load + 40, u64::MAX - 10), "invalid ELF file: program header"));
    cases.push((corrupt("interp", interp + 32, 1 << 20), "invalid ELF file: program header"));
    let mut phentsize = ls.clone();
    phentsize[54] = 40;
    cases.push((write("phentsize", &phentsize), "invalid ELF file: program header entries of 40 bytes"));
    for (path, message) in cases {
        let out = run(command(Some(&[]), &[&path]));
        assert_eq!(out.status, 126 << 8, "{path}: {}", out.stderr);
        assert_eq!(out.stderr.lines().count(), 1, "{path}: {}", out.stderr);
        assert!(out.stderr.starts_with(&format!("rewire: {path}: {message}")), "{path}: {}", out.stderr);
    }
}

/// A program that used up its descriptors (the soft `ulimit -n`) still gets its coverage
/// written, and keeps its own limit.
#[test]
fn output_written_when_the_program_used_up_its_descriptors() {
    let out = scratch("nofile");
    let script = "import os, resource\n\
        resource.setrlimit(resource.RLIMIT_NOFILE, (20, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))\n\
        try:\n    [os.open('/dev/null', 0) for _ in range(100)]\nexcept OSError as e:\n    print(e.errno)\n\
        print(resource.getrlimit(resource.RLIMIT_NOFILE)[0])\n";
    let result = Command::new(env!("CARGO_BIN_EXE_rewire"))
        .args(["run", "-t", "cov", "-o"])
        .arg(&out)
        .args(["--", "/usr/bin/python3.11", "-c", script])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&result.stdout), "24\n20\n");
    assert!(result.status.success(), "{}", String::from_utf8_lossy(&result.stderr));
    let names: Vec<_> = std::fs::read_dir(&out).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    assert!(names.len() == 1 && names[0].starts_with("drcov.python3.11."), "{names:?}");
}
