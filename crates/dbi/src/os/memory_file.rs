//! Files in memory that the program reads instead of a file of `/proc` whose text would show
//! the engine (see [`crate::os::program_maps`], [`crate::os::proc_status`]).

use std::os::unix::fs::FileExt;

/// A new memory file holding `text`, at position 0, as a descriptor of the program (the lowest
/// free number, as the kernel's `open` would give; close-on-exec when `cloexec`).
pub fn memory_file(text: &str, cloexec: bool) -> std::io::Result<i32> {
    // SAFETY: makes a new descriptor; no memory of ours is involved.
    let fd = unsafe { libc::memfd_create(c"proc".as_ptr(), if cloexec { libc::MFD_CLOEXEC } else { 0 }) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: the descriptor was just made; the File is never dropped (the program owns it),
    // except below when the text cannot be written.
    let file = std::mem::ManuallyDrop::new(unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    if let Err(e) = file.write_all_at(text.as_bytes(), 0) {
        drop(std::mem::ManuallyDrop::into_inner(file));
        return Err(e);
    }
    Ok(fd)
}

/// Replaces the contents of the memory file `fd` by `text` (its position stays).
pub fn rewrite(fd: i32, text: &str) {
    // SAFETY: borrowed for the two calls only, never closed here.
    let file = std::mem::ManuallyDrop::new(unsafe { <std::fs::File as std::os::fd::FromRawFd>::from_raw_fd(fd) });
    let _ = file.set_len(0);
    let _ = file.write_all_at(text.as_bytes(), 0);
}
