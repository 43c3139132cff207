//! The built-in tools of `rewire run -t`: drcov files readable by a reader written here from
//! the format description, exact instruction counts, the system call log.

use std::path::PathBuf;
use std::process::Command;

fn rewire(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_rewire")).args(args).current_dir("/tmp").output().expect("run rewire")
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rewire-tools-tests-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn cc(source: &str, name: &str, flags: &[&str]) -> PathBuf {
    let dir = scratch(&format!("cc-{name}"));
    let src = dir.join(format!("{name}.c"));
    std::fs::write(&src, source).unwrap();
    let out = dir.join(name);
    assert!(Command::new("gcc").args(["-O2", "-g", "-o"]).arg(&out).arg(&src).args(flags).status().unwrap().success());
    out
}

const LOOP: &str = r#"
#include <stdlib.h>
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    __asm__ volatile("1: dec %0\n\tjnz 1b" : "+r"(n));   /* exactly 2 instructions per round */
    return (int)n;
}
"#;

/// Branches and indirect calls that go one way or another at random (a fixed xorshift
/// sequence, so every run takes the same path): traces built from it are left early through
/// their side exits and inlined call checks that miss.
const RANDOM_PATHS: &str = r#"
#include <stdio.h>
#include <stdlib.h>
static unsigned long x = 88172645463325252UL;
static unsigned long next(void) { x ^= x << 13; x ^= x >> 7; x ^= x << 17; return x; }
__attribute__((noinline)) static long f0(long a) { return a + 1; }
__attribute__((noinline)) static long f1(long a) { return a * 3; }
__attribute__((noinline)) static long f2(long a) { return a ^ 0x55; }
__attribute__((noinline)) static long f3(long a) { return a - 7; }
static long (*volatile table[4])(long) = {f0, f1, f2, f3};
int main(int argc, char **argv) {
    long n = atol(argv[1]), s = 0;
    for (long i = 0; i < n; i++) {
        unsigned long r = next();
        if (r & 1) s += table[(r >> 1) & 3](s);
        else if (r & 2) s ^= (long)r;
        else s -= i;
        switch ((r >> 8) & 7) {
        case 0: s += 3; break;
        case 1: s *= 5; break;
        case 5: s >>= 1; break;
        default: break;
        }
    }
    printf("%ld\n", s);
    return 0;
}
"#;

/// A drcov file as the format describes it.
#[derive(Debug)]
struct Drcov {
    version: u32,
    modules: Vec<Vec<String>>,
    blocks: Vec<(u32, u16, u16)>,
}

fn parse_drcov(data: &[u8]) -> Drcov {
    let mut pos = 0;
    let mut line = || {
        let end = pos + data[pos..].iter().position(|&b| b == b'\n').expect("a header line");
        let l = String::from_utf8(data[pos..end].to_vec()).unwrap();
        pos = end + 1;
        l
    };
    let version: u32 = line().strip_prefix("DRCOV VERSION: ").expect("version line").parse().unwrap();
    assert_eq!(line(), "DRCOV FLAVOR: drcov-64");
    let table = line();
    let (table_version, count) =
        table.strip_prefix("Module Table: version ").and_then(|r| r.split_once(", count ")).expect("module table line");
    let columns = line();
    let mut modules = Vec::new();
    for _ in 0..count.parse::<usize>().unwrap() {
        modules.push(line().split(", ").map(|f| f.trim().to_string()).collect::<Vec<_>>());
    }
    match version {
        3 => {
            assert_eq!(table_version, "5");
            assert_eq!(columns, "Columns: id, containing_id, start, end, entry, offset, preferred_base, path");
        }
        2 => {
            assert_eq!(table_version, "2");
            assert_eq!(columns, "Columns: id, base, end, entry, path");
        }
        v => panic!("unexpected version {v}"),
    }
    let n: usize = line().strip_prefix("BB Table: ").and_then(|r| r.strip_suffix(" bbs")).expect("BB table line").parse().unwrap();
    let rest = &data[pos..];
    assert_eq!(rest.len(), n * 8, "exactly N 8-byte records follow");
    let blocks = rest
        .chunks_exact(8)
        .map(|r| {
            (
                u32::from_le_bytes(r[..4].try_into().unwrap()),
                u16::from_le_bytes(r[4..6].try_into().unwrap()),
                u16::from_le_bytes(r[6..].try_into().unwrap()),
            )
        })
        .collect();
    Drcov { version, modules, blocks }
}

fn hex(s: &str) -> u64 {
    u64::from_str_radix(s.trim_start_matches("0x"), 16).unwrap()
}

/// Every record of `d` must land inside its module entry and decode, from the file on disk,
/// as whole instructions ending in a control transfer (or at the engine's block limits).
fn check_blocks(d: &Drcov) {
    let mut ends_in_transfer = 0;
    for &(start, size, id) in &d.blocks {
        let m = &d.modules[id as usize];
        let (base, end, file_offset, path) =
            if d.version == 3 { (hex(&m[2]), hex(&m[3]), hex(&m[5]), m[7].clone()) } else { (hex(&m[1]), hex(&m[2]), 0, m[4].clone()) };
        let addr = base + start as u64;
        assert!(addr + size as u64 <= end, "block {addr:#x}+{size} outside module {m:?}");
        if !path.starts_with('/') {
            continue; // [vdso]: no file to read
        }
        let bytes = std::fs::read(&path).unwrap();
        // Version 2 offsets are from the module base: for ELF files of this machine the first
        // segment maps file offset 0, and later ones keep file offset = address - base within
        // their page, which holds for the blocks of code segments.
        let at = if d.version == 3 { (file_offset + start as u64) as usize } else { file_offset_of(&bytes, start as u64) };
        let code = &bytes[at..at + size as usize];
        let mut decoder = iced_x86::Decoder::with_ip(64, code, addr, iced_x86::DecoderOptions::NONE);
        let insns: Vec<_> = decoder.iter().collect();
        assert!(insns.iter().all(|i| !i.is_invalid()), "block at {addr:#x} in {path} does not decode");
        assert_eq!(insns.iter().map(|i| i.len()).sum::<usize>(), size as usize, "block at {addr:#x} is not whole instructions");
        let last = insns.last().unwrap();
        if last.flow_control() != iced_x86::FlowControl::Next {
            ends_in_transfer += 1;
        } else {
            assert!(insns.len() == 64 || size >= 1024, "block at {addr:#x} in {path} ends at {last} without reaching a limit");
        }
    }
    assert!(ends_in_transfer * 100 >= d.blocks.len() * 95, "{ends_in_transfer} of {} blocks end at a control transfer", d.blocks.len());
}

/// File offset of module offset `off` (link-time address for ET_DYN files) via the PT_LOADs.
fn file_offset_of(elf: &[u8], off: u64) -> usize {
    let phoff = u64::from_le_bytes(elf[32..40].try_into().unwrap()) as usize;
    let phnum = u16::from_le_bytes(elf[56..58].try_into().unwrap()) as usize;
    for i in 0..phnum {
        let p = &elf[phoff + i * 56..phoff + (i + 1) * 56];
        let kind = u32::from_le_bytes(p[..4].try_into().unwrap());
        let (offset, vaddr, filesz) = (
            u64::from_le_bytes(p[8..16].try_into().unwrap()),
            u64::from_le_bytes(p[16..24].try_into().unwrap()),
            u64::from_le_bytes(p[32..40].try_into().unwrap()),
        );
        if kind == 1 && (vaddr..vaddr + filesz).contains(&off) {
            return (off - vaddr + offset) as usize;
        }
    }
    panic!("offset {off:#x} in no PT_LOAD");
}

#[test]
fn cov_writes_drcov_files_a_reader_of_the_format_accepts() {
    let program = cc(LOOP, "loop", &[]);
    for version in ["3", "2"] {
        let dir = scratch(&format!("cov{version}"));
        let out =
            rewire(&["run", "-t", "cov", "--drcov-version", version, "-o", dir.to_str().unwrap(), "--", program.to_str().unwrap(), "100"]);
        assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
        assert!(out.stdout.is_empty(), "tool output never goes to stdout");
        let files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
        assert_eq!(files.len(), 1, "{files:?}");
        let name = files[0].file_name().unwrap().to_str().unwrap().to_string();
        assert!(name.starts_with("drcov.loop.") && name.ends_with(".0000.proc.log"), "{name}");
        let d = parse_drcov(&std::fs::read(&files[0]).unwrap());
        assert!(d.blocks.len() > 500, "{} blocks", d.blocks.len());
        let paths: Vec<&str> = d.modules.iter().map(|m| m.last().unwrap().as_str()).collect();
        for needed in [program.to_str().unwrap(), "/usr/lib/x86_64-linux-gnu/libc.so.6", "/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"] {
            assert!(paths.contains(&needed), "{needed} missing from {paths:?}");
        }
        check_blocks(&d);
        // The program's loop block is there.
        let main_module = paths.iter().position(|p| *p == program.to_str().unwrap()).unwrap();
        assert!(d
            .blocks
            .iter()
            .any(|b| b.2 as usize >= main_module && d.modules[b.2 as usize].last().unwrap() == program.to_str().unwrap()));
    }
}

#[test]
fn hitcount_counts_block_executions() {
    let program = cc(LOOP, "loop-hits", &[]);
    let dir = scratch("hits");
    let out = rewire(&["run", "-t", "cov", "--hitcount", "-o", dir.to_str().unwrap(), "--", program.to_str().unwrap(), "12345"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let hits = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_str().unwrap().ends_with(".hits.txt"))
        .expect("hits file");
    let text = std::fs::read_to_string(hits).unwrap();
    // The loop body `dec; jnz` is a block of its own (the jnz target): it runs 12345 times
    // (12344 from its own back edge plus the entry).
    assert!(text.lines().any(|l| l.ends_with(" 12345") || l.ends_with(" 12344")), "{text}");
}

#[test]
fn inscount_is_exact() {
    let program = cc(LOOP, "loop-count", &[]);
    let count = |n: &str| {
        let out = rewire(&["run", "-t", "inscount", "--", program.to_str().unwrap(), n]);
        let err = String::from_utf8_lossy(&out.stderr).into_owned();
        err.lines().find_map(|l| l.strip_prefix("rewire: instructions: ")).expect(&err).parse::<u64>().unwrap()
    };
    // Same digits, so argument parsing runs the same instructions: the difference is the loop.
    assert_eq!(count("2000000") - count("1000000"), 2_000_000);

    // The per-module rows add up to the total, and the loop (two instructions a turn) is
    // counted in the program's own module.
    let out = rewire(&["run", "-t", "inscount", "--per-module", "--", program.to_str().unwrap(), "1000000"]);
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    let total: u64 = err.lines().find_map(|l| l.strip_prefix("rewire: instructions: ")).expect(&err).parse().unwrap();
    let rows: Vec<(u64, &str)> = err
        .lines()
        .filter_map(|l| l.strip_prefix("rewire: ")?.trim_start().split_once("  "))
        .filter_map(|(n, m)| Some((n.parse().ok()?, m.trim())))
        .collect();
    assert_eq!(rows.iter().map(|r| r.0).sum::<u64>(), total, "{err}");
    let own = rows.iter().find(|r| r.1 == program.to_str().unwrap()).expect(&err);
    assert!(own.0 > 2_000_000 && own.0 < 2_100_000, "{err}");
}

/// valgrind's lackey counts guest instructions too, but its run differs from a native one:
/// it preloads vgpreload_core (more work for ld.so) and reports a CPU without AVX-512, so
/// glibc's IFUNCs pick other string functions. The counts agree within those differences
/// (about 12% on this machine, both ways measured at the time of writing: 127,679 vs 112,488).
#[test]
fn inscount_of_bin_true_is_close_to_valgrind_lackey() {
    let out = rewire(&["run", "-t", "inscount", "--", "/bin/true"]);
    let ours: f64 =
        String::from_utf8_lossy(&out.stderr).lines().find_map(|l| l.strip_prefix("rewire: instructions: ")).unwrap().parse().unwrap();
    let lackey = Command::new("valgrind").args(["--tool=lackey", "/bin/true"]).output().expect("valgrind (CI installs it)");
    let text = String::from_utf8_lossy(&lackey.stderr);
    let theirs: f64 = text.lines().find_map(|l| l.split("guest instrs:").nth(1)).expect(&text).trim().replace(',', "").parse().unwrap();
    assert!((ours - theirs).abs() / theirs < 0.2, "rewire {ours} vs lackey {theirs}");
}

#[test]
fn syscalls_log_shows_cat_opening_reading_and_writing() {
    let dir = scratch("syscalls");
    let file = dir.join("input.txt");
    std::fs::write(&file, "twelve bytes").unwrap();
    let out = rewire(&["run", "-t", "syscalls", "--", "cat", file.to_str().unwrap()]);
    assert_eq!(out.stdout, b"twelve bytes");
    let log = String::from_utf8_lossy(&out.stderr);
    let path = file.to_str().unwrap();
    assert!(log.lines().any(|l| l.contains(&format!("openat(AT_FDCWD, \"{path}\", O_RDONLY")) && l.ends_with(" = 3")), "{log}");
    assert!(log.lines().any(|l| l.contains("] read(3, ") && l.ends_with(", 131072) = 12")), "{log}");
    assert!(log.lines().any(|l| l.contains("] write(1, ") && l.ends_with(", 12) = 12")), "{log}");
    assert!(log.lines().any(|l| l.contains("openat(AT_FDCWD, \"/nonexistent") || l.contains("= -1 ENOENT")), "{log}");
    assert!(log.lines().any(|l| l.contains("exit_group(0) = ?")), "{log}");
}

#[test]
fn counting_tools_report_and_leave_stdout_alone() {
    let native = Command::new("ls").arg("/usr").output().unwrap();
    for (tool, expect) in [("bbcount", "blocks executed: "), ("opcodes", "distinct mnemonics"), ("inscount", "instructions: ")] {
        let log = scratch(&format!("log-{tool}")).join("report.txt");
        let out = rewire(&["run", "-t", tool, "--log", log.to_str().unwrap(), "--", "ls", "/usr"]);
        assert_eq!(out.stdout, native.stdout, "{tool}");
        assert!(!String::from_utf8_lossy(&out.stderr).contains(expect), "{tool}: the report goes to --log only");
        let report = std::fs::read_to_string(&log).unwrap();
        assert!(report.contains(expect), "{tool}: {report}");
    }
    let out = rewire(&["run", "-t", "nosuchtool", "--", "/bin/true"]);
    assert_eq!(out.status.code(), Some(126));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no tool named \"nosuchtool\""));
}

#[test]
fn each_process_writes_its_own_coverage_file() {
    // A shell that forks and execs: bash, its forked children, and the programs they exec
    // each write a drcov file of their own (named by program and pid).
    let dir = scratch("fork-cov");
    let out = rewire(&["run", "-t", "cov", "-o", dir.to_str().unwrap(), "--", "bash", "-c", "x=$(echo hi); /bin/echo $x; (exit 3)"]);
    assert_eq!(out.stdout, b"hi\n");
    assert_eq!(out.status.code(), Some(3));
    let mut names: Vec<String> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().file_name().to_str().unwrap().to_string()).collect();
    names.sort();
    assert!(names.iter().filter(|n| n.starts_with("drcov.bash.")).count() >= 2, "{names:?}");
    assert!(names.iter().any(|n| n.starts_with("drcov.echo.")), "{names:?}");
    // One file per process image: a forked child that execs writes one before the exec and
    // the new program one at its end (same pid, other program name).
    let images: std::collections::HashSet<(&str, &str)> =
        names.iter().map(|n| (n.split('.').nth(1).unwrap(), n.split('.').nth(2).unwrap())).collect();
    assert_eq!(images.len(), names.len(), "{names:?}");
    for n in &names {
        let d = parse_drcov(&std::fs::read(dir.join(n)).unwrap());
        assert!(!d.blocks.is_empty(), "{n}");
    }
}

/// inscount of the loop program, of the random-paths program and of `ls`, drcov blocks, hit
/// counts of the random-paths program.
type ToolResults = (String, String, String, Vec<(u32, u16, u16)>, String);

/// Tool results do not depend on traces: the same instruction counts, the same covered
/// blocks and hit counts with traces built at once, by default, and without traces.
#[test]
fn tool_results_are_the_same_with_and_without_traces() {
    let program = cc(LOOP, "loop-traces", &[]);
    let random_paths = cc(RANDOM_PATHS, "random-paths", &["-O1"]);
    let modes: [&[&str]; 3] = [&[], &["--trace-threshold", "1"], &["--no-traces"]];
    let results: Vec<ToolResults> = modes
        .iter()
        .enumerate()
        .map(|(i, mode)| {
            let run = |tool_args: &[&str], argv: &[&str]| {
                let mut args = vec!["run"];
                args.extend_from_slice(tool_args);
                args.extend_from_slice(mode);
                args.push("--");
                args.extend_from_slice(argv);
                let out = rewire(&args);
                assert!(out.status.code().is_some(), "{args:?}");
                String::from_utf8_lossy(&out.stderr).into_owned()
            };
            let count = |argv: &[&str]| {
                run(&["-t", "inscount"], argv).lines().find(|l| l.starts_with("rewire: instructions: ")).unwrap().to_string()
            };
            let loop_count = count(&[program.to_str().unwrap(), "100000"]);
            let random_count = count(&[random_paths.to_str().unwrap(), "300000"]);
            let ls_count = count(&["ls", "/usr"]);
            let dir = scratch(&format!("traces-cov-{i}"));
            run(&["-t", "cov", "--hitcount", "-o", dir.to_str().unwrap()], &[random_paths.to_str().unwrap(), "50000"]);
            let files: Vec<PathBuf> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).collect();
            let drcov = files.iter().find(|p| p.extension().is_some_and(|e| e == "log")).expect("drcov file");
            let mut blocks = parse_drcov(&std::fs::read(drcov).unwrap()).blocks;
            blocks.sort();
            let hits_file = files.iter().find(|p| p.to_str().unwrap().ends_with(".hits.txt")).expect("hits file");
            let mut hits: Vec<String> = std::fs::read_to_string(hits_file).unwrap().lines().map(str::to_string).collect();
            hits.sort();
            (loop_count, random_count, ls_count, blocks, hits.join("\n"))
        })
        .collect();
    for (mode, r) in modes.iter().zip(&results).skip(1) {
        assert_eq!(r.0, results[0].0, "inscount of the loop with {mode:?}");
        assert_eq!(r.1, results[0].1, "inscount of the random-paths program with {mode:?}");
        assert_eq!(r.2, results[0].2, "inscount of ls with {mode:?}");
        assert_eq!(r.3, results[0].3, "covered blocks with {mode:?}");
        assert_eq!(r.4, results[0].4, "hit counts with {mode:?}");
    }
}
