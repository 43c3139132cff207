// Rust's Command reports a missing program as the spawn error, and runs a present one.
use std::process::Command;

fn main() {
    match Command::new("no-such-program-anywhere").spawn() {
        Ok(_) => println!("spawned?"),
        Err(e) => println!("missing: {:?}", e.kind()),
    }
    match Command::new("/nonexistent/program").arg("x").status() {
        Ok(s) => println!("ran? {s}"),
        Err(e) => println!("missing by path: {:?}", e.kind()),
    }
    let out = Command::new("echo").arg("from a child").output().unwrap();
    print!("{}", String::from_utf8_lossy(&out.stdout));
}
