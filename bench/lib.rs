//! Helpers of rewire's benchmarks.

#![warn(missing_docs)]

/// Executable memory of this process that is not mapped from a file on disk (trampolines,
/// code caches), as `/proc/self/smaps` reports it.
#[derive(Debug, Clone, Copy, Default)]
pub struct ExecMemory {
    /// Resident bytes.
    pub bytes: f64,
    /// Whether any such mapping is writable and executable at once.
    pub wx_pages: bool,
}

impl ExecMemory {
    /// The growth from `before` (W+X is kept from `self`).
    pub fn minus(&self, before: &ExecMemory) -> ExecMemory {
        ExecMemory { bytes: self.bytes - before.bytes, wx_pages: self.wx_pages }
    }

    /// Per item.
    pub fn per(&self, n: usize) -> ExecMemory {
        ExecMemory { bytes: self.bytes / n.max(1) as f64, wx_pages: self.wx_pages }
    }
}

/// Reads the executable memory of this process not backed by a file on disk: anonymous
/// executable mappings, and shared-memory files (memfd) that have an executable view. A
/// memfd's committed pages are counted once, from whichever of its views has more resident.
pub fn exec_memory() -> ExecMemory {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap_or_default();
    let mut out = ExecMemory::default();
    let mut anon_exec = 0.0;
    // memfd inode -> (has an executable view, largest resident view)
    let mut memfds: std::collections::HashMap<String, (bool, f64)> = std::collections::HashMap::new();
    let mut current: Option<(bool, Option<String>)> = None;
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let first = fields.first().copied().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            let perms = fields.get(1).copied().unwrap_or("");
            let path = fields.get(5).copied().unwrap_or("");
            let exec = perms.contains('x');
            if exec && perms.contains('w') && (path.is_empty() || path.starts_with("/memfd:")) {
                out.wx_pages = true;
            }
            current = if path.starts_with("/memfd:") {
                let inode = fields.get(4).copied().unwrap_or("").to_string();
                memfds.entry(inode.clone()).or_insert((false, 0.0)).0 |= exec;
                Some((exec, Some(inode)))
            } else {
                Some((exec && path.is_empty(), None))
            };
        } else if first == "Rss:" {
            let bytes = fields.get(1).and_then(|k| k.parse::<f64>().ok()).unwrap_or(0.0) * 1024.0;
            match &current {
                Some((_, Some(inode))) => {
                    let e = memfds.get_mut(inode).expect("seen above");
                    e.1 = e.1.max(bytes);
                }
                Some((true, None)) => anon_exec += bytes,
                _ => {}
            }
        }
    }
    out.bytes = anon_exec + memfds.values().filter(|m| m.0).map(|m| m.1).sum::<f64>();
    out
}
