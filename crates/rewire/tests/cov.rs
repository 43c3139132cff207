//! `rewire cov`: reports from real runs of small C programs under `rewire run -t cov`,
//! checked against what the programs are known to do, and read by the tools users read them
//! with (genhtml, Chromium, xmllint with the Cobertura DTD).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn rewire(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_rewire")).args(args).current_dir("/tmp").output().expect("run rewire")
}

fn text(out: &Output) -> (String, String) {
    (String::from_utf8_lossy(&out.stdout).into_owned(), String::from_utf8_lossy(&out.stderr).into_owned())
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("rewire-cov-tests-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `squares` runs its loop body n times (line 6); `classify` takes its `if` (line 10) one way
/// for n > 10 and the other way otherwise; `never_called` never runs.
const PROGRAM: &str = r#"#include <stdio.h>
#include <stdlib.h>
__attribute__((noinline)) long squares(long n) {
    long s = 0;
    for (long i = 0; i < n; i++)
        s += i * i;
    return s;
}
__attribute__((noinline)) int classify(int x) {
    if (x > 10)
        return 2;
    return 1;
}
int never_called(int y) { return y * 7; }
int main(int argc, char **argv) {
    long n = atol(argv[1]);
    printf("%ld %d\n", squares(n), classify((int)n));
    return 0;
}
"#;

/// The test program, built once per test in `dir` (its source beside it), `-O0 -g`.
fn program(dir: &Path) -> (PathBuf, PathBuf) {
    let src = dir.join("prog.c");
    std::fs::write(&src, PROGRAM).unwrap();
    let exe = dir.join("prog");
    assert!(Command::new("gcc").args(["-O0", "-g", "-o"]).arg(&exe).arg(&src).status().unwrap().success());
    (exe, src)
}

/// Runs `exe arg` under `-t cov` (with `--hitcount` if asked) into a new directory `dir/out`
/// and returns the drcov file.
fn record(exe: &Path, arg: &str, dir: &Path, out: &str, hitcount: bool) -> String {
    let o = dir.join(out);
    std::fs::create_dir_all(&o).unwrap();
    let mut args = vec!["run", "-t", "cov", "-o", o.to_str().unwrap()];
    if hitcount {
        args.push("--hitcount");
    }
    args.extend(["--", exe.to_str().unwrap(), arg]);
    let r = rewire(&args);
    assert!(r.status.success(), "{:?}", text(&r));
    let log = std::fs::read_dir(&o).unwrap().map(|e| e.unwrap().path()).find(|p| p.extension().is_some_and(|e| e == "log"));
    log.expect("drcov file").to_str().unwrap().to_string()
}

/// Every file in `dir`, as a shell's `dir/*` gives them.
fn glob(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().path().to_str().unwrap().to_string()).collect();
    v.sort();
    v
}

/// The report's line for function `name`: (percent, covered bytes, size).
fn function_line(report: &str, name: &str) -> (f64, u64, u64) {
    let l = report.lines().find(|l| l.ends_with(&format!("  {name}"))).unwrap_or_else(|| panic!("{name} in {report}"));
    let f: Vec<&str> = l.split_whitespace().collect();
    (f[0].trim_end_matches('%').parse().unwrap(), f[1].parse().unwrap(), f[3].parse().unwrap())
}

/// Runs a tool that CI installs (.ci/run); its absence fails the test.
fn external(program: &str, args: &[&str]) -> Output {
    Command::new(program).args(args).output().unwrap_or_else(|e| panic!("{program} (.ci/run installs it): {e}"))
}

/// The lcov record of `source` in tracefile `text`.
fn lcov_record<'a>(text: &'a str, source: &Path) -> &'a str {
    text.split("end_of_record").find(|r| r.contains(&format!("SF:{}\n", source.display()))).expect(text)
}

fn lcov_values<'a>(record: &'a str, tag: &str) -> Vec<Vec<&'a str>> {
    record.lines().filter_map(|l| l.strip_prefix(tag)).map(|v| v.split(',').collect()).collect()
}

fn da(record: &str, line: u32) -> Option<u64> {
    lcov_values(record, "DA:").iter().find(|v| v[0] == line.to_string()).map(|v| v[1].parse().unwrap())
}

#[test]
fn covered_bytes_are_counted_once_and_a_fully_run_function_is_100_percent() {
    let dir = scratch("exact");
    let (exe, _) = program(&dir);
    // Two runs of the same path into one directory, with their .hits.txt files beside them:
    // `dir/*` also matches those, which are skipped with a warning.
    record(&exe, "37", &dir, "cov", true);
    record(&exe, "37", &dir, "cov", true);
    let mut files = glob(&dir.join("cov"));
    let notes = dir.join("notes.txt");
    std::fs::write(&notes, "not coverage\n").unwrap();
    files.push(notes.to_str().unwrap().to_string());
    // A file cut short (its process killed while writing) is left out too.
    let whole = std::fs::read(files.iter().find(|f| f.ends_with(".log")).unwrap()).unwrap();
    let cut = dir.join("cut.log");
    std::fs::write(&cut, &whole[..whole.len() - 3]).unwrap();
    files.push(cut.to_str().unwrap().to_string());
    let mut args = vec!["cov", "report"];
    args.extend(files.iter().map(String::as_str));
    let out = rewire(&args);
    let (report, err) = text(&out);
    assert!(out.status.success(), "{err}");
    assert_eq!(err.matches("rewire: warning: ").count(), 4, "{err}");
    assert!(err.contains("notes.txt: skipped: not a drcov file"), "{err}");
    assert!(err.contains("cut.log: skipped: BB table shorter than announced"), "{err}");
    for name in ["squares", "main"] {
        let (pct, covered, size) = function_line(&report, name);
        assert_eq!((pct, covered), (100.0, size), "{name}: {report}");
    }
    assert_eq!(function_line(&report, "never_called").1, 0);
    let (pct, covered, size) = function_line(&report, "classify");
    assert!(pct < 100.0 && covered < size && covered > 0, "{report}");
    for l in report.lines().filter(|l| l.contains('%')) {
        let pct: f64 = l.split_whitespace().find(|w| w.contains('%')).unwrap().trim_matches(|c| "(%)".contains(c)).parse().unwrap();
        assert!(pct <= 100.0, "{l}");
    }
}

#[test]
fn data_mappings_are_not_listed_as_modules() {
    // A drcov file that names /etc/ld.so.cache in its module table (as a loader's mapping).
    let dir = scratch("data-mapping");
    let (exe, _) = program(&dir);
    let mut data = format!(
        "DRCOV VERSION: 2\nDRCOV FLAVOR: drcov-64\nModule Table: version 2, count 2\nColumns: id, base, end, entry, path\n\
         0, 0x555555554000, 0x555555558000, 0x0, {}\n1, 0x7ffff7fc0000, 0x7ffff7fc9000, 0x0, /etc/ld.so.cache\nBB Table: 2 bbs\n",
        exe.display()
    )
    .into_bytes();
    for (start, id) in [(0x1139u32, 0u16), (0x10, 1)] {
        data.extend(start.to_le_bytes());
        data.extend(4u16.to_le_bytes());
        data.extend(id.to_le_bytes());
    }
    let file = dir.join("mapped.log");
    std::fs::write(&file, data).unwrap();
    let out = rewire(&["cov", "report", file.to_str().unwrap()]);
    let (report, err) = text(&out);
    assert!(out.status.success(), "{err}");
    assert!(report.contains(&format!("{}: 1 blocks, 4 bytes", exe.display())), "{report}");
    assert!(!report.contains("ld.so.cache"), "{report}");
}

/// The program built in a new scratch directory `name`, run with 37 under `--hitcount`, and
/// its module reported with `options` (each a flag and a path in the directory): the
/// directory, the program, its source and the paths.
fn reported(name: &str, options: &[(&str, &str)]) -> (PathBuf, PathBuf, PathBuf, Vec<PathBuf>) {
    let dir = scratch(name);
    let (exe, src) = program(&dir);
    let run = record(&exe, "37", &dir, "cov", true);
    let outputs: Vec<PathBuf> = options.iter().map(|o| dir.join(o.1)).collect();
    // Only the program: the libraries' sources are not on this machine (genhtml needs them).
    let mut args = vec!["cov", "report", &run, "--include", exe.to_str().unwrap()];
    for (o, path) in options.iter().zip(&outputs) {
        args.extend([o.0, path.to_str().unwrap()]);
    }
    let out = rewire(&args);
    assert!(out.status.success(), "{:?}", text(&out));
    (dir, exe, src, outputs)
}

#[test]
fn lcov_has_hit_counts_functions_and_branches_and_genhtml_renders_it_without_warnings() {
    let (dir, _, src, outputs) = reported("lcov", &[("--lcov", "cov.info")]);
    let info = &outputs[0];
    let tracefile = std::fs::read_to_string(info).unwrap();
    let r = lcov_record(&tracefile, &src);
    // The loop body ran 37 times, its `for` line 38 times (the last test fails), the rest once.
    assert_eq!(da(r, 6), Some(37), "{r}");
    assert_eq!(da(r, 5), Some(38), "{r}");
    assert_eq!(da(r, 4), Some(1), "{r}");
    assert_eq!((da(r, 11), da(r, 12), da(r, 14)), (Some(1), Some(0), Some(0)), "{r}");
    let fnda = lcov_values(r, "FNDA:");
    for (name, calls) in [("squares", "1"), ("classify", "1"), ("main", "1"), ("never_called", "0")] {
        assert!(fnda.iter().any(|v| v == &[calls, name]), "{name}: {r}");
    }
    assert!(lcov_values(r, "FN:").iter().any(|v| v == &["3", "squares"]), "{r}");
    assert!(r.contains("FNF:4\nFNH:3\n"), "{r}");
    // `if (x > 10)` with 37: one outcome ran once, the other never: half covered.
    let mut line10: Vec<&str> = lcov_values(r, "BRDA:").into_iter().filter(|v| v[0] == "10").map(|v| v[3]).collect();
    line10.sort();
    assert_eq!(line10, ["0", "1"], "{r}");
    let (lf, lh) = (lcov_values(r, "LF:")[0][0], lcov_values(r, "LH:")[0][0]);
    assert_eq!(lf.parse::<usize>().unwrap(), lcov_values(r, "DA:").len());
    assert_eq!(lh.parse::<usize>().unwrap(), lcov_values(r, "DA:").iter().filter(|v| v[1] != "0").count());

    // genhtml reads it with function and branch data and nothing to warn about.
    let html = dir.join("genhtml");
    let g = external("genhtml", &["--branch-coverage", "--function-coverage", "-o", html.to_str().unwrap(), info.to_str().unwrap()]);
    let (gout, gerr) = text(&g);
    assert!(g.status.success(), "{gout}{gerr}");
    assert!(!gerr.to_lowercase().contains("warning") && !gout.to_lowercase().contains("warning"), "{gout}{gerr}");
    let summary =
        |what: &str| gout.lines().find(|l| l.trim_start().starts_with(what)).unwrap_or_else(|| panic!("{what}: {gout}")).to_string();
    assert!(!summary("functions").contains("no data"), "{gout}");
    assert!(!summary("branches").contains("no data"), "{gout}");
}

#[test]
fn dwarf_and_symbols_come_from_separate_debug_files() {
    let dir = scratch("debug-files");
    let (exe, src) = program(&dir);
    // As distributions ship it: a stripped program, its DWARF and symbols in a .debug file.
    let sh = |cmd: &str| assert!(Command::new("sh").args(["-ec", cmd]).current_dir(&dir).status().unwrap().success(), "{cmd}");
    sh("objcopy --only-keep-debug prog prog.debug && strip --strip-all prog && objcopy --add-gnu-debuglink=prog.debug prog");
    let id = String::from_utf8(
        Command::new("sh").args(["-c", "readelf -n prog | sed -n 's/.*Build ID: //p'"]).current_dir(&dir).output().unwrap().stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    assert!(id.len() > 2, "build id of {}", exe.display());
    let run = record(&exe, "37", &dir, "cov", false);
    let debug = dir.join("prog.debug");
    let root = dir.join("debug-root");
    let cache = dir.join("debuginfod");
    let report = |place: &Path, env_cache: &Path| {
        std::fs::create_dir_all(place.parent().unwrap()).unwrap();
        std::fs::rename(&debug, place).unwrap();
        let info = dir.join("out.info");
        let out = Command::new(env!("CARGO_BIN_EXE_rewire"))
            .args(["cov", "report", &run, "--include", exe.to_str().unwrap(), "--debug-dir", root.to_str().unwrap()])
            .arg("--lcov")
            .arg(&info)
            .env("DEBUGINFOD_CACHE_PATH", env_cache)
            .output()
            .unwrap();
        std::fs::rename(place, &debug).unwrap();
        let (report, err) = text(&out);
        assert!(out.status.success(), "{err}");
        let tracefile = std::fs::read_to_string(&info).unwrap();
        assert_eq!(da(lcov_record(&tracefile, &src), 11), Some(1), "{}: {tracefile}", place.display());
        assert_eq!(function_line(&report, "squares").0, 100.0, "{}: {report}", place.display());
    };
    let nowhere = dir.join("no-cache");
    // By build id under a debug directory, by debuglink next to the program, in its .debug/,
    // under a debug directory by the program's own directory, and in debuginfod's cache.
    report(&root.join(".build-id").join(&id[..2]).join(format!("{}.debug", &id[2..])), &nowhere);
    report(&dir.join("prog.debug"), &nowhere);
    report(&dir.join(".debug/prog.debug"), &nowhere);
    report(&root.join(dir.strip_prefix("/").unwrap()).join("prog.debug"), &nowhere);
    report(&cache.join(&id).join("debuginfo"), &cache);
}

/// The DOM of `page` after its scripts ran, as headless Chromium gives it.
fn chromium_dom(page: &Path) -> String {
    let out = external("chromium", &["--headless", "--no-sandbox", "--disable-gpu", "--dump-dom", &format!("file://{}", page.display())]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    String::from_utf8(out.stdout).unwrap()
}

#[test]
fn html_index_opens_in_chromium_lists_modules_and_functions_and_sorts() {
    let (_, exe, src, outputs) = reported("html", &[("--html", "html")]);
    let html = &outputs[0];
    let dom = chromium_dom(&html.join("index.html"));
    // The script ran (it marks sortable headings), the module and its functions are listed,
    // each function linked to its line on the source page.
    assert!(dom.contains("<th class=\"sortable\">function</th>"), "{dom}");
    assert!(dom.contains(&format!("<td>{}</td>", exe.display())), "{dom}");
    for name in ["squares", "classify", "never_called", "main"] {
        assert!(dom.contains(&format!("<tr><td>{name}</td>")), "{name}: {dom}");
    }
    assert!(dom.contains(&format!("<a href=\"files/0.html#L3\">{}:3</a>", src.display())), "{dom}");
    assert!(!dom.contains("http:") && !dom.contains("https:"), "nothing from the network: {dom}");

    // A click on "entered" sorts the functions by it: never_called (0 times) comes first.
    let index = std::fs::read_to_string(html.join("index.html")).unwrap();
    let clicked = index.replace("</body>", "<script>document.querySelectorAll('#functions th')[6].click()</script></body>");
    std::fs::write(html.join("clicked.html"), clicked).unwrap();
    let dom = chromium_dom(&html.join("clicked.html"));
    let functions = &dom[dom.find("id=\"functions\"").unwrap()..];
    let first = functions.split("<tr><td>").nth(1).unwrap();
    assert!(first.starts_with("never_called<"), "{functions}");

    // The source page: counts per line, branches per line, a link back.
    let page = std::fs::read_to_string(html.join("files/0.html")).unwrap();
    assert!(page.contains("<a href=\"../index.html\">"), "{page}");
    assert!(page.contains("<tr id=L6 class=\"hit\"><td class=c>6<td class=c>37<td class=c><td class=src>"), "{page}");
    assert!(page.contains("<tr id=L10 class=\"part\"><td class=c>10<td class=c>1<td class=c>1/2<td class=src>"), "{page}");
    assert!(page.contains("<tr id=L12 class=\"miss\"><td class=c>12<td class=c>0<td class=c><td class=src>"), "{page}");
}

#[test]
fn cobertura_validates_against_its_dtd_and_json_summarises() {
    let (_, exe, src, outputs) = reported("cobertura", &[("--cobertura", "cov.xml"), ("--json", "cov.json")]);
    let (xml, json) = (&outputs[0], &outputs[1]);
    let dtd = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/coverage-04.dtd");
    let v = external("xmllint", &["--noout", "--nonet", "--dtdvalid", dtd.to_str().unwrap(), xml.to_str().unwrap()]);
    assert!(v.status.success() && v.stderr.is_empty(), "{}", String::from_utf8_lossy(&v.stderr));
    let doc = std::fs::read_to_string(xml).unwrap();
    let class = &doc[doc.find(&format!("filename=\"{}\"", src.to_str().unwrap().trim_start_matches('/'))).expect(&doc)..];
    assert!(class.contains("<line number=\"6\" hits=\"37\" branch=\"false\"/>"), "{class}");
    assert!(class.contains("<line number=\"10\" hits=\"1\" branch=\"true\" condition-coverage=\"50% (1/2)\">"), "{class}");
    assert!(class.contains("<method name=\"never_called\" signature=\"\" line-rate=\"0.0000\""), "{class}");

    // The JSON summary parses, and says of the program what the text report says.
    let check = format!(
        "import json,sys; d=json.load(open('{}')); m=[m for m in d['modules'] if m['path']=='{}'][0]; \
         f={{f['name']:f for f in m['function_list']}}; \
         assert f['squares']['bytes_covered']==f['squares']['size'], f['squares']; \
         assert f['never_called']['entered']==0 and f['squares']['entered']==1; \
         s=[s for s in d['files'] if s['path']=='{}'][0]; assert s['functions']==4 and s['functions_hit']==3, s; \
         assert d['totals']['lines_hit']<=d['totals']['lines']",
        json.display(),
        exe.display(),
        src.display()
    );
    let p = Command::new("python3").args(["-c", &check]).output().unwrap();
    assert!(p.status.success(), "{}", String::from_utf8_lossy(&p.stderr));
}

/// The lcov DA counts of the program's source lines for a run or combination.
fn line_counts(dir: &Path, exe: &Path, src: &Path, inputs: &[&str]) -> Vec<(u32, u64)> {
    let info = dir.join("lines.info");
    let mut args = vec!["cov", "report", "--include", exe.to_str().unwrap(), "--lcov", info.to_str().unwrap()];
    args.extend(inputs);
    let out = rewire(&args);
    assert!(out.status.success(), "{:?}", text(&out));
    let tracefile = std::fs::read_to_string(&info).unwrap();
    lcov_values(lcov_record(&tracefile, src), "DA:").iter().map(|v| (v[0].parse().unwrap(), v[1].parse().unwrap())).collect()
}

#[test]
fn diff_and_set_expressions_over_two_runs_with_different_paths() {
    let dir = scratch("algebra");
    let (exe, src) = program(&dir);
    // 37 returns 2 from classify (line 11), 5 returns 1 (line 12); both run the rest.
    let big = record(&exe, "37", &dir, "big", true);
    let small = record(&exe, "5", &dir, "small", true);
    let include = exe.to_str().unwrap();

    let out = rewire(&["cov", "diff", &big, dir.join("small").to_str().unwrap(), "--include", include]);
    let (report, err) = text(&out);
    assert!(out.status.success(), "{err}");
    let gained: Vec<&str> = report.lines().filter(|l| l.starts_with("  +")).collect();
    assert_eq!(gained.len(), 1, "{report}");
    assert!(gained[0].ends_with("  classify") && !gained[0].contains("newly entered"), "{report}");
    assert!(report.lines().last().unwrap().contains("in 1 functions that A does not (0 functions A never entered)"), "{report}");

    let combine = |expr: &str, name: &str| {
        let out_file = dir.join(name);
        let out = rewire(&["cov", "combine", expr, "-o", out_file.to_str().unwrap()]);
        assert!(out.status.success(), "{expr}: {:?}", text(&out));
        out_file.to_str().unwrap().to_string()
    };
    let either = combine(&format!("{big} | {small}"), "either.log");
    let both = combine(&format!("{big} & {small}"), "both.log");
    let only_big = combine(&format!("{big} - {small}"), "only-big.log");
    let only_small = combine(&format!("{small} - ( {big} )"), "only-small.log");
    let count = |lines: &[(u32, u64)], n: u32| lines.iter().find(|l| l.0 == n).map(|l| l.1);
    // Union: both returns ran, and the counts add up (37 + 5 loop rounds).
    let l = line_counts(&dir, &exe, &src, &[&either]);
    assert_eq!((count(&l, 11), count(&l, 12), count(&l, 6)), (Some(1), Some(1), Some(42)), "{l:?}");
    // Intersection: the common part ran, neither return.
    let l = line_counts(&dir, &exe, &src, &[&both]);
    assert_eq!((count(&l, 11), count(&l, 12), count(&l, 6)), (Some(0), Some(0), Some(1)), "{l:?}");
    // Differences: only the other return.
    let l = line_counts(&dir, &exe, &src, &[&only_big]);
    assert_eq!((count(&l, 11), count(&l, 12), count(&l, 6)), (Some(1), Some(0), Some(0)), "{l:?}");
    let l = line_counts(&dir, &exe, &src, &[&only_small]);
    assert_eq!((count(&l, 11), count(&l, 12), count(&l, 4)), (Some(0), Some(1), Some(0)), "{l:?}");

    // The files are drcov version 2 with the module table readers expect.
    let data = std::fs::read(&either).unwrap();
    let header = String::from_utf8_lossy(&data[..200]);
    assert!(header.starts_with("DRCOV VERSION: 2\nDRCOV FLAVOR: drcov-64\nModule Table: version 2, count "), "{header}");
    assert!(header.contains("\nColumns: id, base, end, entry, path\n"), "{header}");

    // Merging is associative: partial merges combine into the same file.
    let third = record(&exe, "12", &dir, "third", true);
    let left = combine(&format!("( {big} | {small} ) | {third}"), "left.log");
    let right = combine(&format!("{big} | ( {small} | {third} )"), "right.log");
    let partial = combine(&format!("{small} | {third}"), "partial.log");
    let from_partial = combine(&format!("{big} | {partial}"), "from-partial.log");
    let read = |p: &str| (std::fs::read(p).unwrap(), std::fs::read(p.replace(".log", ".hits.txt")).unwrap());
    assert_eq!(read(&left), read(&right));
    assert_eq!(read(&left), read(&from_partial));
}

/// Runs `rewire args` and returns its peak RSS in KiB, measured with wait4.
#[allow(clippy::zombie_processes, reason = "reaped by wait4, which also gives its resource usage")]
fn peak_rss(args: &[&str]) -> i64 {
    let child = Command::new(env!("CARGO_BIN_EXE_rewire"))
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let (mut status, mut usage) = (0, unsafe { std::mem::zeroed::<libc::rusage>() });
    // SAFETY: the child is ours and not waited for elsewhere; status and usage are valid.
    assert_eq!(unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) }, child.id() as i32);
    assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0, "{args:?}: {status}");
    usage.ru_maxrss
}

#[test]
fn thousands_of_files_merge_in_bounded_memory() {
    // Copies of a real run of ls, each missing a different tenth of its blocks.
    let dir = scratch("scale");
    let run = record(Path::new("/bin/ls"), "/usr", &dir, "ls", false);
    let data = std::fs::read(&run).unwrap();
    let table = data.windows(10).position(|w| w == b"BB Table: ").unwrap();
    let records_at = table + data[table..].iter().position(|&b| b == b'\n').unwrap() + 1;
    let records: Vec<&[u8]> = data[records_at..].chunks_exact(8).collect();
    let write = |sub: &str, n: usize| {
        let d = dir.join(sub);
        std::fs::create_dir_all(&d).unwrap();
        for i in 0..n {
            let kept: Vec<&[u8]> = records.iter().enumerate().filter(|(j, _)| (j + i) % 10 != 0).map(|(_, r)| *r).collect();
            let mut file = data[..table].to_vec();
            file.extend(format!("BB Table: {} bbs\n", kept.len()).bytes());
            kept.iter().for_each(|r| file.extend_from_slice(r));
            std::fs::write(d.join(format!("drcov.ls.{i:05}.0000.proc.log")), file).unwrap();
        }
        d.to_str().unwrap().to_string()
    };
    let (few, many) = (write("few", 200), write("many", 4000));
    let rss_few = peak_rss(&["cov", "report", "--include", "/ls", &few]);
    let start = std::time::Instant::now();
    let rss_many = peak_rss(&["cov", "report", "--include", "/ls", &many]);
    let secs = start.elapsed().as_secs_f64();
    // Twenty times the files, about the same memory: only the distinct blocks are kept.
    assert!(rss_many < rss_few + 8 * 1024, "200 files: {rss_few} KiB, 4000 files: {rss_many} KiB");
    assert!(secs < 20.0, "4000 files in {secs:.1} s");
    // Every block of the run was in some copy, so the merge has them all.
    let merged = rewire(&["cov", "report", &many, "--include", "/ls"]);
    let single = rewire(&["cov", "report", &run, "--include", "/ls"]);
    assert_eq!(text(&merged).0.lines().next(), text(&single).0.lines().next());
}

#[test]
fn the_program_comes_first_with_its_functions_wherever_it_lives() {
    // A path that sorts after /usr/lib, where the libraries are.
    let dir = Path::new("/var/tmp").join(format!("rewire-cov-tests-{}-first", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (exe, _) = program(&dir);
    let run = record(&exe, "3", &dir, "cov", false);
    let (report, err) = text(&rewire(&["cov", "report", &run]));
    let mut lines = report.lines();
    assert!(lines.next().unwrap().starts_with(&format!("{}: ", exe.display())), "{report}{err}");
    assert!(lines.next().unwrap().contains("%  "), "{report}");
    assert!(report.contains("/libc.so.6: "), "{report}");
    std::fs::remove_dir_all(&dir).unwrap();
}
