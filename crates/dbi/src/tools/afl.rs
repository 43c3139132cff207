//! `-t afl`: edge coverage for AFL++, into the fuzzer's shared-memory map. Every block of an
//! instrumented module updates the map inline in AFL's classic form (`map[cur ^ prev]`
//! incremented, NeverZero, `prev = cur >> 1`), with block ids hashed from the module's file
//! name and the block's link-time offset, so they are the same whatever the load addresses
//! (ASLR) and in every run. The fork server that feeds the fuzzer is the engine's
//! (`engine::fork_server`); this tool only fills the map.
//!
//! Settings come from the environment, by the names AFL++'s QEMU and Frida modes use:
//! `__AFL_SHM_ID` (the map; without it the program runs once on a private map),
//! `AFL_MAP_SIZE` (the largest map the fuzzer offers: `afl-fuzz` sets it to 8 MiB while it
//! asks a target for its size, so it is a bound, not the size; the map is `REWIRE_AFL_MAP_SIZE`
//! bytes, 64 KiB by default, capped at that bound), `AFL_INST_LIBS=1` (libraries too; by default only the main program),
//! `AFL_QEMU_INST_RANGES` / `AFL_FRIDA_INST_RANGES` and `AFL_QEMU_EXCLUDE_RANGES` /
//! `AFL_FRIDA_EXCLUDE_RANGES` (comma-separated `0xSTART-0xEND` ranges or module names).

use super::cmplog::CmpLog;
use crate::tool::{low_memory, BlockView, Counter, Instrument, LoopEvent, Program, Segment, Tool};
use crate::RunError;
use std::ops::Range;

/// The variable with the fuzzer's map. NUL-terminated in the binary: `afl-fuzz` takes a
/// target whose file holds that string for an instrumented one, so rewire passes its check.
const SHM_ID_VAR: &std::ffi::CStr = c"__AFL_SHM_ID";

/// The map size when `REWIRE_AFL_MAP_SIZE` does not say (AFL++'s `MAP_SIZE`).
pub const DEFAULT_MAP_SIZE: usize = 1 << 16;

/// A module or address range of an include or exclude list.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Place {
    Addresses(Range<u64>),
    Module(String),
}

impl Place {
    fn parse(s: &str) -> Result<Place, String> {
        let hex = |v: &str| u64::from_str_radix(v.trim().trim_start_matches("0x").trim_start_matches("0X"), 16);
        match s.split_once('-') {
            Some((a, b)) if a.trim().starts_with("0x") || a.trim().starts_with("0X") => match (hex(a), hex(b)) {
                (Ok(a), Ok(b)) if a < b => Ok(Place::Addresses(a..b)),
                _ => Err(format!("{s:?} is not a range 0xSTART-0xEND")),
            },
            _ => Ok(Place::Module(s.trim().to_string())),
        }
    }

    fn holds(&self, tag: u64, segment: &Segment) -> bool {
        match self {
            Place::Addresses(r) => r.contains(&tag),
            Place::Module(name) => segment.path == *name || file_name(&segment.path) == name,
        }
    }
}

fn file_name(path: &str) -> &str {
    path.rsplit('/').next().unwrap_or(path)
}

/// The places named by the first of `vars` that is set.
fn places(vars: &[&str]) -> Result<Vec<Place>, RunError> {
    let Some((var, value)) = vars.iter().find_map(|v| std::env::var(v).ok().map(|value| (*v, value))) else { return Ok(Vec::new()) };
    value
        .split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|s| Place::parse(s).map_err(|e| RunError::ToolSettings(format!("{var}: {e}"))))
        .collect()
}

/// The AFL tool.
#[derive(Debug)]
pub struct Afl {
    map: low_memory::LowMemory,
    /// Ids are below this power of two (so that `cur ^ prev` stays inside the map).
    id_mask: u32,
    prev: Option<Counter>,
    main: Option<String>,
    all_modules: bool,
    include: Vec<Place>,
    exclude: Vec<Place>,
    /// Comparison logging, when the fuzzer runs this process for CmpLog (`afl-fuzz -c 0`).
    cmplog: Option<CmpLog>,
}

impl Afl {
    /// The tool, with its map attached (the fuzzer's, or a private one when the program
    /// runs outside a fuzzer) and its settings read from the environment.
    pub fn from_env() -> Result<Afl, RunError> {
        let size_in =
            |var: &str| -> Result<Option<usize>, RunError> {
                match std::env::var(var) {
                    Ok(v) => v.trim().parse::<usize>().ok().filter(|&n| (64..=1 << 28).contains(&n)).map(Some).ok_or_else(|| {
                        RunError::ToolSettings(format!("{var}={v}: not a map size (a number of bytes from 64 to {})", 1 << 28))
                    }),
                    Err(_) => Ok(None),
                }
            };
        let wanted = size_in("REWIRE_AFL_MAP_SIZE")?.unwrap_or(DEFAULT_MAP_SIZE);
        let size = size_in("AFL_MAP_SIZE")?.map_or(wanted, |bound| wanted.min(bound));
        let map = match std::env::var(SHM_ID_VAR.to_str().expect("ASCII")) {
            Ok(id) => {
                let id =
                    id.trim().parse::<i32>().map_err(|_| RunError::ToolSettings(format!("__AFL_SHM_ID={id}: not a shared memory id")))?;
                let seg = low_memory::segment_size(id).map_err(|e| RunError::ToolSettings(e.to_string()))?;
                if size > seg {
                    return Err(RunError::ToolSettings(format!(
                        "a map of {size} bytes does not fit the fuzzer's map of {seg} bytes (__AFL_SHM_ID={id})"
                    )));
                }
                low_memory::attach_segment(id).map_err(|e| RunError::ToolSettings(e.to_string()))?
            }
            Err(_) => low_memory::private(size).map_err(|e| RunError::ToolSettings(e.to_string()))?,
        };
        let pow2 = 1u32 << (usize::BITS - 1 - size.leading_zeros());
        Ok(Afl {
            map: low_memory::LowMemory { addr: map.addr, len: size },
            id_mask: pow2 - 1,
            prev: None,
            main: None,
            all_modules: std::env::var("AFL_INST_LIBS").is_ok_and(|v| v == "1"),
            include: places(&["AFL_QEMU_INST_RANGES", "AFL_FRIDA_INST_RANGES"])?,
            exclude: places(&["AFL_QEMU_EXCLUDE_RANGES", "AFL_FRIDA_EXCLUDE_RANGES"])?,
            cmplog: CmpLog::from_env()?,
        })
    }

    /// Bytes of the map the fuzzer must have.
    pub fn map_size(&self) -> usize {
        self.map.len
    }

    fn instrumented(&self, tag: u64, segment: &Segment) -> bool {
        if self.exclude.iter().any(|p| p.holds(tag, segment)) {
            return false;
        }
        if !self.include.is_empty() {
            return self.include.iter().any(|p| p.holds(tag, segment));
        }
        self.all_modules || self.main.as_deref().is_some_and(|m| m == segment.path)
    }

    /// The id of the block at `tag`.
    fn id(&self, tag: u64, segment: &Segment) -> u32 {
        place_hash(tag, segment) as u32 & self.id_mask
    }
}

/// A hash of the module file name of `segment` and the link-time address of `addr` there:
/// the same whatever the load address, in every run.
fn place_hash(addr: u64, segment: &Segment) -> u64 {
    let bias = segment.range.start - segment.preferred_base;
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in file_name(&segment.path).bytes() {
        h = (h ^ b as u64).wrapping_mul(0x100_0000_01b3);
    }
    let mut x = h ^ (addr - bias);
    x = (x ^ (x >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    x ^ (x >> 31)
}

impl Tool for Afl {
    fn wants_modules(&self) -> bool {
        true
    }

    fn on_fork_child(&mut self) {
        // Edge ids are spread over the whole map: a child would fault on nearly every page.
        self.map.populate();
    }

    fn on_persistent_loop(&mut self, event: LoopEvent) {
        // The fuzzer compares iterations: the edges from the entry point to the loop, and
        // from the last return to the exit, would be in the first and last only.
        match event {
            // SAFETY: the map is ours for `len` bytes (attached or private, never unmapped).
            LoopEvent::Start => unsafe { std::ptr::write_bytes(self.map.addr as usize as *mut u8, 0, self.map.len) },
            LoopEvent::End => {
                if let Err(e) = self.map.make_private() {
                    crate::tool::warn(&format!("the rest of the run may count in the fuzzer's map: {e}"));
                }
            }
        }
    }

    fn on_program(&mut self, program: &Program<'_>) {
        let path = std::fs::canonicalize(program.path).unwrap_or_else(|_| program.path.to_path_buf());
        self.main = Some(path.to_string_lossy().into_owned());
    }

    fn on_block(&mut self, block: &BlockView<'_>, instrument: &mut Instrument<'_>) {
        let Some(segment) = block.segment.filter(|s| self.instrumented(block.tag, s)) else { return };
        if self.prev.is_none() {
            self.prev = instrument.new_counter();
        }
        if let Some(prev) = self.prev {
            instrument.edge_hit(prev, self.id(block.tag, segment), self.map.addr);
        }
        if let Some(cmplog) = self.cmplog.as_mut() {
            cmplog.on_block(block, segment, instrument, |addr| place_hash(addr, segment));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_and_module_names_parse() {
        assert_eq!(Place::parse("0x1000-0x2000"), Ok(Place::Addresses(0x1000..0x2000)));
        assert_eq!(Place::parse("libc.so.6"), Ok(Place::Module("libc.so.6".into())));
        assert!(Place::parse("0x2000-0x1000").is_err());
        assert!(Place::parse("0x10-zz").is_err());
    }
}
