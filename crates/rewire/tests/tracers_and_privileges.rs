//! Programs rewire must hand back to the kernel: a debugger's or strace's program (the
//! tracer must see the program itself, registers and all), set-user-ID programs (only an
//! exec by the kernel grants their privileges) and Valgrind's engines (binary translators
//! themselves). Each run compared with the native one.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

fn dir() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = std::env::temp_dir().join(format!("rewire-tracer-tests-{}", std::process::id()));
        std::fs::create_dir_all(&d).unwrap();
        d
    })
}

fn rewire() -> &'static str {
    env!("CARGO_BIN_EXE_rewire")
}

/// `tests/c/NAME.c` built with `gcc FLAGS`, once.
fn build(name: &str, flags: &[&str]) -> PathBuf {
    static LOCK: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _one_at_a_time = LOCK.lock().unwrap();
    let out = dir().join(name);
    if !out.exists() {
        let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("tests/c/{name}.c"));
        let st = Command::new("gcc").args(flags).arg("-o").arg(&out).arg(&src).status().expect("gcc");
        assert!(st.success(), "gcc failed");
    }
    out
}

fn run(argv: &[&str]) -> Output {
    Command::new(argv[0]).args(&argv[1..]).current_dir(dir()).output().expect("spawn")
}

/// `argv` natively and under `rewire run --`: the same stdout, stderr and status.
fn same_as_native(argv: &[&str]) {
    let native = run(argv);
    let mut under = vec![rewire(), "run", "--"];
    under.extend_from_slice(argv);
    let rewired = run(&under);
    let text = |o: &Output| (String::from_utf8_lossy(&o.stdout).into_owned(), String::from_utf8_lossy(&o.stderr).into_owned(), o.status);
    assert_eq!(text(&rewired), text(&native), "{argv:?}");
}

#[test]
fn a_tracer_sees_the_registers_of_a_fault_as_natively() {
    let program = build("traced_fault", &["-O2"]);
    let p = program.to_str().unwrap();
    // At the default action, and with a handler of the program's that the tracer passes
    // the signal on to.
    same_as_native(&[p]);
    same_as_native(&[p, "with-handler"]);
}

#[test]
fn gdb_under_rewire_debugs_a_program_as_natively() {
    let program = build("crash_in_function", &["-g", "-O0"]);
    // The debuggee runs natively (its exec is traced); gdb's own start-up probe (a traced
    // child that jumps to a non-executable page) sees the fault's real registers.
    same_as_native(&[
        "gdb",
        "-nx",
        "-batch",
        "-ex",
        "break crash",
        "-ex",
        "run",
        "-ex",
        "bt",
        "-ex",
        "continue",
        "-ex",
        "bt",
        program.to_str().unwrap(),
    ]);
}

#[test]
fn strace_under_rewire_traces_its_program_as_natively() {
    let program = build("crash_in_function", &["-g", "-O0"]);
    let log = |name: &str| dir().join(name).to_string_lossy().into_owned();
    let (native, rewired) = (log("native.strace"), log("rewired.strace"));
    let trace =
        |out: &str| ["strace", "-qq", "-e", "trace=write,exit_group", "-o", out, program.to_str().unwrap(), "no-crash"].map(String::from);
    let n = run(&trace(&native).iter().map(String::as_str).collect::<Vec<_>>());
    let r_args: Vec<String> = [rewire(), "run", "--"].iter().map(|s| s.to_string()).chain(trace(&rewired)).collect();
    let r = run(&r_args.iter().map(String::as_str).collect::<Vec<_>>());
    assert_eq!((r.status, &r.stdout), (n.status, &n.stdout), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(std::fs::read_to_string(&rewired).unwrap(), std::fs::read_to_string(&native).unwrap());
}

/// A copy of rewire that any user can run (the build directory may be private to root).
fn rewire_for_anyone() -> &'static str {
    static COPY: OnceLock<String> = OnceLock::new();
    COPY.get_or_init(|| {
        use std::os::unix::fs::PermissionsExt;
        let copy = dir().join("rewire");
        std::fs::copy(rewire(), &copy).unwrap();
        std::fs::set_permissions(&copy, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::set_permissions(dir(), std::fs::Permissions::from_mode(0o755)).unwrap();
        copy.to_string_lossy().into_owned()
    })
}

/// `argv` as user nobody when this is root (root gains nothing from set-user-ID root).
fn as_ordinary_user(argv: &[&str]) -> Output {
    // SAFETY: geteuid has no effects.
    let root = unsafe { libc::geteuid() } == 0;
    let mut full: Vec<&str> = if root { vec!["runuser", "-u", "nobody", "--"] } else { vec![] };
    full.extend_from_slice(argv);
    Command::new(full[0]).args(&full[1..]).current_dir("/").output().expect("spawn (runuser: Debian package util-linux)")
}

#[test]
fn a_set_user_id_program_is_refused_up_front_and_runs_natively_when_a_program_execs_it() {
    let passwd = ["/usr/bin/passwd", "-S", "nobody"];
    let native = as_ordinary_user(&passwd);
    assert!(native.status.success(), "passwd -S natively: {}", String::from_utf8_lossy(&native.stderr));
    // Named to rewire: a clear error before anything runs.
    let rewire = rewire_for_anyone();
    let refused = as_ordinary_user(&[rewire, "run", "--", passwd[0], passwd[1], passwd[2]]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    assert!(err.starts_with("rewire: /usr/bin/passwd: the program is set-user-ID") && err.contains("--unprivileged"), "{err}");
    assert!(refused.stdout.is_empty(), "the program did not run");
    // --unprivileged: it runs, as this user (shadow entries unreadable, so it says less).
    let unprivileged = as_ordinary_user(&[rewire, "run", "--unprivileged", "--", passwd[0], passwd[1], passwd[2]]);
    assert!(unprivileged.status.success() && unprivileged.stdout.starts_with(b"nobody "), "{unprivileged:?}");
    // Exec'd by a program under rewire (a script calling passwd): natively, privileges and all.
    let script = as_ordinary_user(&[rewire, "run", "--", "/bin/sh", "-c", "/usr/bin/passwd -S nobody"]);
    assert_eq!(
        (script.status.code(), &script.stdout),
        (native.status.code(), &native.stdout),
        "{}",
        String::from_utf8_lossy(&script.stderr)
    );
}

#[test]
fn valgrind_under_rewire_checks_its_program_as_natively() {
    let program = build("crash_in_function", &["-g", "-O0"]);
    let memcheck = ["valgrind", "--error-exitcode=9", "--leak-check=full", program.to_str().unwrap(), "no-crash"];
    // Valgrind's lines carry its pid (==1234==).
    let without_pid = |o: &Output| {
        let err = String::from_utf8_lossy(&o.stderr)
            .lines()
            .map(|l| l.split_once("== ").map_or(l.to_string(), |(_, rest)| rest.to_string()))
            .collect::<Vec<_>>();
        (String::from_utf8_lossy(&o.stdout).into_owned(), err, o.status)
    };
    let native = run(&memcheck);
    let mut under = vec![rewire(), "run", "--"];
    under.extend_from_slice(&memcheck);
    assert_eq!(without_pid(&run(&under)), without_pid(&native));
}
