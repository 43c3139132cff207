//! What the program reads of `/proc/self/status` and `/proc/self/stat`: the kernel's text
//! with the signal sets the program's own dispositions give (the runtime catches signals the
//! program leaves at their default, to write the tool's output whatever ends the process).

use crate::os::signals::program_signal_sets;

/// `status` with `SigIgn` and `SigCgt` the program's.
pub fn status(real: &str) -> String {
    let (ignored, caught) = program_signal_sets();
    let mut out = String::with_capacity(real.len());
    for line in real.lines() {
        if line.starts_with("SigIgn:") {
            out.push_str(&format!("SigIgn:\t{ignored:016x}"));
        } else if line.starts_with("SigCgt:") {
            out.push_str(&format!("SigCgt:\t{caught:016x}"));
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out
}

/// `stat` with `sigignore` and `sigcatch` (fields 33 and 34 of proc(5)) the program's, as the
/// kernel writes them: the first 31 signals, in decimal.
pub fn stat(real: &str) -> String {
    let Some((head, rest)) = real.rsplit_once(") ") else { return real.to_string() };
    let (ignored, caught) = program_signal_sets();
    // Fields after the name are numbered from 3.
    let fields: Vec<String> = rest
        .split(' ')
        .enumerate()
        .map(|(i, f)| match i + 3 {
            33 => (ignored & 0x7fff_ffff).to_string(),
            34 => (caught & 0x7fff_ffff).to_string(),
            _ => f.to_string(),
        })
        .collect();
    format!("{head}) {}", fields.join(" "))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_signal_sets_change() {
        let real = std::fs::read_to_string("/proc/self/status").unwrap();
        let seen = status(&real);
        let differs: Vec<&str> = real.lines().zip(seen.lines()).filter(|(a, b)| a != b).map(|(a, _)| a).collect();
        assert!(differs.iter().all(|l| l.starts_with("SigIgn:") || l.starts_with("SigCgt:")), "{differs:?}");
        assert_eq!(real.lines().count(), seen.lines().count());
        let real = std::fs::read_to_string("/proc/self/stat").unwrap();
        let seen = stat(&real);
        let after_name = |t: &str| t.rsplit_once(") ").unwrap().1.split(' ').map(String::from).collect::<Vec<_>>();
        let (a, b) = (after_name(&real), after_name(&seen));
        assert_eq!(a.len(), b.len());
        assert!(a.iter().zip(&b).enumerate().all(|(i, (x, y))| x == y || i + 3 == 33 || i + 3 == 34));
    }
}
