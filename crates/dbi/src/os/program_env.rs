//! The environment variables that configure a dynamic loader and C library (`LD_*`,
//! `GLIBC_TUNABLES`, `MALLOC_*`) are the program's: rewire's own loader and libc must not act
//! on them (a program's `LD_PRELOAD` would load into the runtime, `ldd`'s
//! `LD_TRACE_LOADED_OBJECTS` would list rewire's libraries instead of the program's). When
//! rewire starts itself (to follow an `execve`, or once at start-up when it was given such
//! variables) they travel under a prefixed name, and the program's environment has them back
//! under their own, in the same place.

use std::borrow::Cow;
use std::ffi::CString;
use std::os::unix::ffi::OsStringExt;

/// What a shielded variable's name starts with in rewire's own environment.
const PREFIX: &[u8] = b"REWIRE_PROGRAM_";

fn configures_loader(var: &[u8]) -> bool {
    var.starts_with(b"LD_") || var.starts_with(b"GLIBC_TUNABLES=") || var.starts_with(b"MALLOC_")
}

/// `var` (`NAME=value`) as rewire's own process is to get it.
pub fn shielded(var: &[u8]) -> Cow<'_, [u8]> {
    if configures_loader(var) {
        Cow::Owned([PREFIX, var].concat())
    } else {
        Cow::Borrowed(var)
    }
}

/// `var` as the program is to see it.
pub fn unshielded(var: &[u8]) -> &[u8] {
    var.strip_prefix(PREFIX).filter(|v| configures_loader(v)).unwrap_or(var)
}

/// Starts rewire again with the same arguments when its environment has variables for the
/// program's loader, shielded from its own (it does not return then); returns at once when
/// there are none, with the error when the new start failed.
pub fn restart_shielded() -> std::io::Result<()> {
    let vars: Vec<Vec<u8>> = std::env::vars_os()
        .map(|(k, v)| {
            let mut var = k.into_vec();
            var.push(b'=');
            var.extend(v.into_vec());
            var
        })
        .collect();
    if !vars.iter().any(|v| configures_loader(v)) {
        return Ok(());
    }
    let c_string = |b: Vec<u8>| CString::new(b).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e));
    let args = std::env::args_os().map(|a| c_string(a.into_vec())).collect::<std::io::Result<Vec<_>>>()?;
    // In the same order: a program may depend on it, as on every byte of its environment.
    let env = vars.iter().map(|v| c_string(shielded(v).into_owned())).collect::<std::io::Result<Vec<_>>>()?;
    match nix::unistd::execve(c"/proc/self/exe", &args, &env) {
        Err(errno) => Err(errno.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loader_variables_travel_under_another_name() {
        assert_eq!(&*shielded(b"LD_PRELOAD=/x.so"), b"REWIRE_PROGRAM_LD_PRELOAD=/x.so");
        assert_eq!(&*shielded(b"GLIBC_TUNABLES=glibc.malloc.check=3"), b"REWIRE_PROGRAM_GLIBC_TUNABLES=glibc.malloc.check=3");
        assert_eq!(&*shielded(b"PATH=/bin"), b"PATH=/bin");
        assert_eq!(unshielded(&shielded(b"LD_LIBRARY_PATH=/opt")), b"LD_LIBRARY_PATH=/opt");
        assert_eq!(unshielded(b"REWIRE_PROGRAM_PATH=/bin"), b"REWIRE_PROGRAM_PATH=/bin");
        assert_eq!(unshielded(b"HOME=/root"), b"HOME=/root");
    }
}
