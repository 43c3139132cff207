//! Hooks in another process: time to attach to a running program, load a hook library, set
//! 100 hooks and detach, and the system calls each hook costs.
//!
//! Run with `cargo bench -p rewire-bench --bench remote`.

use rewire_hook::remote::RemoteProcess;
use rewire_hook::{Interceptor, Sharing};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

const HOOKS: usize = 100;

/// Builds a program with `HOOKS` functions called in a loop and a library of detours.
fn build(dir: &Path) -> (PathBuf, PathBuf) {
    let mut prog = String::from("#include <unistd.h>\n");
    let mut lib = String::new();
    for i in 0..HOOKS {
        prog += &format!("__attribute__((noinline)) long f{i}(long x) {{ return x * {} + {i}; }}\n", i + 2);
        lib += &format!("long (*rewire_orig_d{i})(long);\nlong d{i}(long x) {{ return rewire_orig_d{i}(x) + 1; }}\n");
    }
    prog += "volatile long sink;\nint main(void) { for (;;) { long s = 0;\n";
    for i in 0..HOOKS {
        prog += &format!("s += f{i}(s & 7);\n");
    }
    prog += "sink = s; usleep(1000); } }\n";
    std::fs::write(dir.join("prog.c"), prog).unwrap();
    std::fs::write(dir.join("hooks.c"), lib).unwrap();
    let cc = |args: &[&str]| assert!(Command::new("gcc").args(args).current_dir(dir).status().unwrap().success());
    cc(&["-O1", "-o", "prog", "prog.c"]);
    cc(&["-O1", "-shared", "-fPIC", "-o", "hooks.so", "hooks.c"]);
    (dir.join("prog"), dir.join("hooks.so"))
}

fn main() {
    let dir = std::env::temp_dir().join(format!("rewire-bench-remote-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (prog, lib) = build(&dir);
    let mut runs = Vec::new();
    let mut per_hook = 0.0;
    for _ in 0..5 {
        let mut child = Command::new(&prog).stdout(Stdio::null()).spawn().unwrap();
        std::thread::sleep(std::time::Duration::from_millis(50));
        let start = Instant::now();
        let process = RemoteProcess::attach(child.id() as i32).unwrap();
        let lib_path = lib.to_str().unwrap();
        process.inject(lib_path).unwrap();
        let interceptor = Interceptor::for_process(process.clone(), Sharing::Shared);
        let before = process.kernel_calls();
        for i in 0..HOOKS {
            let target = process.find_function(&format!("f{i}")).unwrap();
            let detour = process.symbol(lib_path, &format!("d{i}")).unwrap();
            let cell = process.symbol(lib_path, &format!("rewire_orig_d{i}")).unwrap();
            let mut tx = interceptor.transaction();
            // SAFETY: d{i} has f{i}'s signature; the process is stopped.
            unsafe { tx.hook_disabled(target, detour) };
            let hook = tx.commit().unwrap().pop().unwrap();
            process.write_u64(cell, hook.trampoline()).unwrap();
            hook.enable().unwrap();
            hook.leak();
        }
        per_hook = (process.kernel_calls() - before) as f64 / HOOKS as f64;
        process.detach();
        runs.push(start.elapsed().as_secs_f64() * 1e3);
        child.kill().unwrap();
        child.wait().unwrap();
    }
    runs.sort_by(f64::total_cmp);
    println!(
        "attach + inject + {HOOKS} hooks + detach: median {:.2} ms (runs {:.2}..{:.2} ms)",
        runs[runs.len() / 2],
        runs[0],
        runs[runs.len() - 1]
    );
    println!("system calls on the process per hook: {per_hook:.1}");
    let _ = std::fs::remove_dir_all(&dir);
}
