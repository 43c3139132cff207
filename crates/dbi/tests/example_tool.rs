//! The example tool (`examples/call_edges.rs`) built on the public tool API: inline counters
//! and clean calls with register arguments, transparent to the program.

use std::path::PathBuf;
use std::process::Command;

fn example() -> PathBuf {
    // target/<profile>/deps/<this test> → target/<profile>/examples/call_edges
    let exe = std::env::current_exe().unwrap();
    exe.parent().unwrap().parent().unwrap().join("examples/call_edges")
}

#[test]
fn the_example_tool_counts_calls_and_sees_indirect_call_targets() {
    let example = example();
    assert!(example.exists(), "cargo test builds the examples: {}", example.display());
    let script = "import json; print(json.dumps({'k': [1, 2, 3]}))";
    let native = Command::new("/usr/bin/python3.11").args(["-c", script]).output().unwrap();
    let under = Command::new(&example).args(["/usr/bin/python3.11", "-c", script]).output().unwrap();
    assert_eq!(native.stdout, under.stdout);
    assert_eq!(native.status.code(), under.status.code());
    let report = String::from_utf8_lossy(&under.stderr);
    let value =
        |key: &str| -> u64 { report.lines().find_map(|l| l.strip_prefix(&format!("rewire: {key}: "))).expect(&report).parse().unwrap() };
    assert!(value("calls") > 100_000, "{report}");
    assert!(value("indirect call edges through registers") > 50, "{report}");
}
