//! The AFL++ fork-server handshake, in both forms AFL++ speaks. The fuzzer talks to the fork
//! server on two pipes: it writes requests on descriptor 198, reads replies on 199.
//!
//! - **Classic** (AFL++ up to 4.1x, Debian 12's 4.04c): the server's first word is its
//!   options (`FS_OPT_ENABLED`, the map size, shared-memory test cases), and that is all.
//! - **Versioned** (AFL++ 4.20c and later): the server sends `"AFL\0" + version`, the fuzzer
//!   answers it inverted, the server sends its options word, then each option's value (the
//!   map size), then the version again.
//!
//! The fuzzer is the fork server's parent; its binary names its version (`afl-fuzz++4.04c`),
//! which decides the form. When that cannot be read, the server opens with the versioned
//! greeting: a versioned fuzzer answers it inverted; a classic one takes it for an options
//! word without options and sends its first request, which tells the server what it is.

use std::io;

/// The descriptor requests come in on.
pub const CONTROL_FD: i32 = 198;
/// The descriptor replies go out on.
pub const STATUS_FD: i32 = 199;

const FS_OPT_ENABLED: u32 = 0x8000_0001;
const FS_OPT_MAPSIZE: u32 = 0x4000_0000;
const FS_OPT_SHDMEM_FUZZ: u32 = 0x0100_0000;
/// The target logs comparisons in AFL++ 4's CmpLog map layout.
const FS_OPT_NEWCMPLOG: u32 = 0x0200_0000;
const FS_OPT_MAX_MAPSIZE: u32 = (0x00ff_fffe >> 1) + 1;
const VERSIONED_HELLO: u32 = 0x4146_4c00 + 1;
const FS_NEW_OPT_MAPSIZE: u32 = 1;
const FS_NEW_OPT_SHDMEM_FUZZ: u32 = 2;

/// The form of the handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// One options word.
    Classic,
    /// A versioned exchange.
    Versioned,
}

/// How the fork server's conversation with the fuzzer began.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    /// The form the fuzzer speaks.
    pub protocol: Protocol,
    /// A request the handshake already read (a classic fuzzer's first, when the form had
    /// to be found out by trying).
    pub first_request: Option<u32>,
    /// The fuzzer sends test cases through shared memory.
    pub shared_input: bool,
}

/// Reads one 4-byte word from `fd`; `None` at end of file.
pub fn read_word(fd: i32) -> io::Result<Option<u32>> {
    let mut b = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        // SAFETY: reads into the rest of a live 4-byte buffer.
        let n = unsafe { libc::read(fd, b[got..].as_mut_ptr().cast(), 4 - got) };
        match n {
            0 => return Ok(None),
            n if n < 0 => {
                let e = io::Error::last_os_error();
                if e.kind() != io::ErrorKind::Interrupted {
                    return Err(e);
                }
            }
            n => got += n as usize,
        }
    }
    Ok(Some(u32::from_le_bytes(b)))
}

/// Writes one 4-byte word to `fd`.
pub fn write_word(fd: i32, v: u32) -> io::Result<()> {
    let b = v.to_le_bytes();
    // SAFETY: writes a live 4-byte buffer (a pipe write of 4 bytes is atomic).
    let n = unsafe { libc::write(fd, b.as_ptr().cast(), 4) };
    if n == 4 {
        Ok(())
    } else {
        Err(if n < 0 { io::Error::last_os_error() } else { io::Error::from(io::ErrorKind::WriteZero) })
    }
}

/// What the fork server tells the fuzzer about itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Offer {
    /// Bytes of the coverage map.
    pub map_size: u32,
    /// Test cases can come through shared memory.
    pub shared_input: bool,
    /// The process logs comparisons (a CmpLog run).
    pub cmplog: bool,
}

/// The classic options word for `offer`.
fn classic_options(offer: Offer) -> u32 {
    let size = if offer.map_size > 1 && offer.map_size <= FS_OPT_MAX_MAPSIZE { (offer.map_size - 1) << 1 } else { 0 };
    FS_OPT_ENABLED
        | FS_OPT_MAPSIZE
        | size
        | if offer.shared_input { FS_OPT_SHDMEM_FUZZ } else { 0 }
        | if offer.cmplog { FS_OPT_NEWCMPLOG } else { 0 }
}

/// The AFL++ version the fuzzer binary `bytes` names (`++4.04c` → (4, 4)).
pub fn version_in(bytes: &[u8]) -> Option<(u32, u32)> {
    let at = bytes.windows(3).position(|w| w == b"++4" || w == b"++5")?;
    let text = std::str::from_utf8(&bytes[at + 2..(at + 10).min(bytes.len())]).ok()?;
    let (major, rest) = text.split_once('.')?;
    let minor: String = rest.chars().take_while(|c| c.is_ascii_digit()).collect();
    Some((major.parse().ok()?, minor.parse().ok()?))
}

/// The form the fork server's parent (the fuzzer) speaks, from the version its binary
/// names; `REWIRE_AFL_PROTOCOL=classic|versioned` decides instead when set.
pub fn expected_protocol() -> Option<Protocol> {
    match std::env::var("REWIRE_AFL_PROTOCOL").as_deref() {
        Ok("classic") => return Some(Protocol::Classic),
        Ok("versioned") => return Some(Protocol::Versioned),
        _ => {}
    }
    // SAFETY: getppid has no effects.
    let parent = unsafe { libc::getppid() };
    let bytes = std::fs::read(format!("/proc/{parent}/exe")).ok()?;
    version_in(&bytes).map(|v| if v >= (4, 20) { Protocol::Versioned } else { Protocol::Classic })
}

/// Greets the fuzzer and tells it the map size, and that test cases should come through
/// shared memory when `shared_input`. `Ok(None)`: nobody listens on the status descriptor
/// (the program runs outside a fuzzer, once).
pub fn start(offer: Offer, expected: Option<Protocol>) -> io::Result<Option<Started>> {
    let Offer { map_size, shared_input, .. } = offer;
    if expected == Some(Protocol::Classic) {
        if write_word(STATUS_FD, classic_options(offer)).is_err() {
            return Ok(None);
        }
        if shared_input {
            // The fuzzer confirms with its own options word.
            read_word(CONTROL_FD)?.ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))?;
        }
        return Ok(Some(Started { protocol: Protocol::Classic, first_request: None, shared_input }));
    }
    if write_word(STATUS_FD, VERSIONED_HELLO).is_err() {
        return Ok(None);
    }
    let Some(reply) = read_word(CONTROL_FD)? else { return Err(io::Error::from(io::ErrorKind::UnexpectedEof)) };
    if reply != VERSIONED_HELLO ^ 0xffff_ffff {
        return Ok(Some(Started { protocol: Protocol::Classic, first_request: Some(reply), shared_input: false }));
    }
    write_word(STATUS_FD, FS_NEW_OPT_MAPSIZE | if shared_input { FS_NEW_OPT_SHDMEM_FUZZ } else { 0 })?;
    write_word(STATUS_FD, map_size)?;
    write_word(STATUS_FD, VERSIONED_HELLO)?;
    Ok(Some(Started { protocol: Protocol::Versioned, first_request: None, shared_input }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_version_is_read_from_the_fuzzer_binary() {
        assert_eq!(version_in(b"\x00afl-fuzz++4.04c\x00"), Some((4, 4)));
        assert_eq!(version_in(b"xx++4.21c"), Some((4, 21)));
        assert_eq!(version_in(b"no version here"), None);
    }

    #[test]
    fn the_classic_options_carry_the_map_size() {
        let offer = |map_size, shared_input, cmplog| Offer { map_size, shared_input, cmplog };
        assert_eq!(classic_options(offer(65536, false, false)), 0x8000_0001 | 0x4000_0000 | (65535 << 1));
        assert_eq!(classic_options(offer(65536, true, false)) & 0x0100_0000, 0x0100_0000);
        assert_eq!(classic_options(offer(65536, false, true)) & 0x0f00_0000, 0x0200_0000);
        // AFL++'s FS_OPT_GET_MAPSIZE gives the size back.
        let word = classic_options(offer(1 << 20, false, false));
        assert_eq!(((word & 0x00ff_fffe) >> 1) + 1, 1 << 20);
    }
}
