//! Where the fork server starts and what it tells the fuzzer.

use crate::engine::fork_server::persistent::PersistentOptions;

/// Where the fork server starts and what it tells the fuzzer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ForkServerOptions {
    /// Bytes of the coverage map.
    pub map_size: usize,
    /// `AFL_ENTRYPOINT`: where to start instead of the program's entry point (an address
    /// of the running program, or for a position-independent one, its link-time address).
    pub entry: Option<u64>,
    /// The persistent loop, when asked for.
    pub persistent: Option<PersistentOptions>,
    /// The process logs comparisons for the fuzzer (`__AFL_CMPLOG_SHM_ID` is set).
    pub cmplog: bool,
}

impl ForkServerOptions {
    /// The options for a map of `map_size` bytes, `AFL_ENTRYPOINT` read from the environment.
    pub fn from_env(map_size: usize) -> Result<ForkServerOptions, String> {
        let entry = match std::env::var("AFL_ENTRYPOINT") {
            Ok(v) => Some(
                u64::from_str_radix(v.trim().trim_start_matches("0x").trim_start_matches("0X"), 16)
                    .map_err(|_| format!("AFL_ENTRYPOINT={v}: not a hexadecimal address"))?,
            ),
            Err(_) => None,
        };
        let cmplog = std::env::var_os("__AFL_CMPLOG_SHM_ID").is_some();
        Ok(ForkServerOptions { map_size, entry, persistent: PersistentOptions::from_env()?, cmplog })
    }
}

/// The run-time address of `addr`, an address the user gave for a program loaded with
/// `bias`: a link-time address of a position-independent program is moved by the bias.
pub fn run_time(addr: u64, bias: u64) -> u64 {
    if bias != 0 && addr < bias {
        addr + bias
    } else {
        addr
    }
}

/// Where the fork server starts: `opts.entry`, else the program's `entry`.
pub fn start_address(opts: &ForkServerOptions, entry: u64, bias: u64) -> u64 {
    opts.entry.map_or(entry, |a| run_time(a, bias))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_start_is_the_entry_point_unless_afl_entrypoint_says() {
        let opts = |entry| ForkServerOptions { map_size: 65536, entry, persistent: None, cmplog: false };
        assert_eq!(start_address(&opts(None), 0x5555_0000_1040, 0x5555_0000_0000), 0x5555_0000_1040);
        assert_eq!(start_address(&opts(Some(0x1189)), 0x5555_0000_1040, 0x5555_0000_0000), 0x5555_0000_1189);
        assert_eq!(start_address(&opts(Some(0x401136)), 0x401040, 0), 0x401136);
    }
}
