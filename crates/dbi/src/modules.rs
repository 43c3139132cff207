//! Naming addresses for people: `module+offset` from the process's mappings.

use rewire_mem::AddressSpace;

/// `libc.so.6+0x2a1c0` for an address inside a file mapping, the mapping's label for
/// anonymous ones (`[vdso]`), or `?`.
pub fn describe(addr: u64) -> String {
    let Ok(space) = AddressSpace::read(None) else { return "?".into() };
    match space.find(addr) {
        Some(m) if m.path.starts_with('/') => {
            let name = m.path.rsplit('/').next().unwrap_or(&m.path);
            format!("{name}+{:#x}", addr - m.range.start + m.offset)
        }
        Some(m) if !m.path.is_empty() => format!("{}+{:#x}", m.path, addr - m.range.start),
        _ => "?".into(),
    }
}

/// The file or label of the mapping holding `addr` in `space` (`[anon]` when none).
pub fn name_in(space: &AddressSpace, addr: u64) -> String {
    match space.find(addr) {
        Some(m) if m.path.starts_with('/') => m.path.rsplit('/').next().unwrap_or(&m.path).to_string(),
        Some(m) if !m.path.is_empty() => m.path.clone(),
        _ => "[anon]".into(),
    }
}
