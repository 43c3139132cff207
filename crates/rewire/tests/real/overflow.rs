// Runs off its stack: Rust's runtime reports "has overflowed its stack" and aborts.
fn recurse(n: u64, prev: &[u8; 512]) -> u64 {
    let frame = std::hint::black_box([n as u8; 512]);
    recurse(n + 1, &frame) + u64::from(prev[0]) + u64::from(frame[(n % 512) as usize])
}

fn main() {
    if std::env::args().nth(1).as_deref() == Some("thread") {
        std::thread::Builder::new().name("worker".into()).spawn(|| recurse(0, &[0; 512])).unwrap().join().unwrap();
    } else {
        println!("{}", recurse(0, &[0; 512]));
    }
}
