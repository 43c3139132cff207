//! The `rewire` binary as users run it.

use std::process::Command;

fn rewire(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_rewire")).args(args).output().unwrap();
    (out.status.code().unwrap_or(-1), String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

#[test]
fn help_and_version() {
    let (code, out, _) = rewire(&["--help"]);
    assert_eq!(code, 0);
    assert!(out.contains("hook"));
    let (code, out, _) = rewire(&["--version"]);
    assert_eq!((code, out.trim()), (0, concat!("rewire ", env!("CARGO_PKG_VERSION"))));
}

#[test]
fn hook_check_reports_every_libc_export_with_reasons() {
    let (code, out, _) = rewire(&["hook", "check", "libc.so.6"]);
    assert_eq!(code, 0);
    let last = out.lines().last().unwrap();
    let (n, m) = last.strip_prefix("hookable: ").and_then(|r| r.split_once(" of ")).unwrap();
    let (n, m): (usize, usize) = (n.parse().unwrap(), m.parse().unwrap());
    assert_eq!(out.lines().count(), m + 1, "one line per function");
    assert!(n as f64 >= 0.997 * m as f64, "{last}");
    for line in out.lines().filter(|l| l.starts_with("no ")) {
        assert!(line.contains(" at 0x") && line.contains('`'), "refusal without instruction and address: {line}");
    }
}

#[test]
fn hook_check_named_symbols_and_unknown_names() {
    let (code, out, _) = rewire(&["hook", "check", "/lib/x86_64-linux-gnu/libc.so.6", "puts", "sem_trywait", "getpidd"]);
    assert_eq!(code, 0);
    assert!(out.contains("ok  puts"));
    assert!(out.contains("no  sem_trywait") && out.contains("inside the bytes the patch overwrites"));
    assert!(out.contains("close matches: getpid"));
    assert!(out.ends_with("hookable: 1 of 3\n"), "{out}");
}

#[test]
fn unreadable_library_and_usage_errors() {
    let (code, _, err) = rewire(&["hook", "check", "/etc/passwd"]);
    assert_eq!(code, 1);
    assert!(err.starts_with("rewire: cannot use /etc/passwd: not an ELF file"), "{err}");
    let (code, _, err) = rewire(&["hook", "check", "/no/such/lib.so"]);
    assert_eq!(code, 1);
    assert!(err.contains("No such file"), "{err}");
    let (code, _, _) = rewire(&["hook", "frobnicate"]);
    assert_eq!(code, 2);
}

#[test]
fn shell_completions_and_man_pages_come_from_the_command_definitions() {
    let (code, bash, _) = rewire(&["completions", "bash"]);
    assert_eq!(code, 0);
    assert!(bash.contains("combine") && bash.contains("--hitcount"), "{bash}");
    let check = Command::new("bash").args(["-n", "-c", &bash]).status().unwrap();
    assert!(check.success(), "bash cannot parse its completions");
    let (code, zsh, _) = rewire(&["completions", "zsh"]);
    assert!(code == 0 && zsh.starts_with("#compdef rewire"), "{zsh}");
    let (code, fish, _) = rewire(&["completions", "fish"]);
    assert!(code == 0 && fish.contains("complete -c rewire"), "{fish}");
    let (code, _, err) = rewire(&["completions", "tcsh"]);
    assert_eq!(code, 2, "{err}");

    let (code, page, _) = rewire(&["man"]);
    assert!(code == 0 && page.contains(".TH rewire 1"), "{page}");
    let dir = std::env::temp_dir().join(format!("rewire-man-{}", std::process::id()));
    let (code, _, err) = rewire(&["man", "--dir", dir.to_str().unwrap()]);
    assert_eq!(code, 0, "{err}");
    for page in [
        "rewire.1",
        "rewire-run.1",
        "rewire-cov.1",
        "rewire-cov-report.1",
        "rewire-cov-diff.1",
        "rewire-cov-combine.1",
        "rewire-hook-check.1",
    ] {
        let text = std::fs::read_to_string(dir.join(page)).unwrap_or_else(|e| panic!("{page}: {e}"));
        assert!(text.contains(".TH rewire"), "{page}: {text}");
    }
    assert!(std::fs::read_to_string(dir.join("rewire-cov-report.1")).unwrap().contains("cobertura"));
    std::fs::remove_dir_all(dir).unwrap();
}
