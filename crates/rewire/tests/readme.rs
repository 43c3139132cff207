//! README's Rust snippets compile as written in a crate made by today's `cargo new`.

use std::path::{Path, PathBuf};
use std::process::Command;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").canonicalize().unwrap()
}

/// The ```rust blocks of README.md.
fn snippets() -> Vec<String> {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let mut out = Vec::new();
    let mut rest = readme.as_str();
    while let Some(start) = rest.find("```rust\n") {
        let body = &rest[start + 8..];
        let end = body.find("```").expect("closed block");
        out.push(body[..end].to_string());
        rest = &body[end..];
    }
    out
}

#[test]
fn readme_rust_snippets_compile_in_a_new_crate() {
    let snippets = snippets();
    assert!(snippets.len() >= 2, "{snippets:?}");
    let dir = std::env::temp_dir().join(format!("rewire-readme-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Shared between runs, apart from the workspace's own target directory (which the cargo
    // running this test has locked).
    let target = Path::new(env!("CARGO_BIN_EXE_rewire")).parent().unwrap().parent().unwrap().join("readme-snippets");
    for (i, code) in snippets.iter().enumerate() {
        let name = format!("snippet{i}");
        let library = !code.contains("fn main");
        let new = Command::new("cargo")
            .args(["new", "--quiet", "--vcs", "none", if library { "--lib" } else { "--bin" }, &name])
            .current_dir(&dir)
            .env_remove("CARGO_TARGET_DIR")
            .status()
            .unwrap();
        assert!(new.success());
        let krate = dir.join(&name);
        let manifest = std::fs::read_to_string(krate.join("Cargo.toml")).unwrap();
        assert!(manifest.contains("edition = \"2024\""), "today's cargo new: {manifest}");
        let hook = workspace().join("crates/hook");
        let mut manifest = manifest
            .replace("[dependencies]", &format!("[dependencies]\nrewire-hook = {{ path = \"{}\" }}\nlibc = \"0.2\"", hook.display()));
        if library {
            manifest.push_str("\n[lib]\ncrate-type = [\"cdylib\"]\n");
        }
        std::fs::write(krate.join("Cargo.toml"), manifest).unwrap();
        std::fs::write(krate.join(if library { "src/lib.rs" } else { "src/main.rs" }), code).unwrap();
        // The workspace's versions, so nothing new is fetched.
        std::fs::copy(workspace().join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
        let out = Command::new("cargo")
            .args(["check", "--quiet", "--all-targets"])
            .current_dir(&krate)
            .env("CARGO_TARGET_DIR", &target)
            .output()
            .unwrap();
        assert!(out.status.success(), "snippet {i}:\n{code}\n{}", String::from_utf8_lossy(&out.stderr));
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
