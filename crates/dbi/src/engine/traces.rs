//! Hot traces: their settings, the trace a thread is recording, and their counters. How
//! recording proceeds is [`crate::engine::trace_builder`].

use crate::translate::Insertions;

/// Trace settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TraceOptions {
    /// Build traces at all.
    pub enabled: bool,
    /// Executions of a head before its trace is recorded.
    pub threshold: u32,
    /// Most blocks in one trace.
    pub max_blocks: u32,
}

/// Executions of a head before its trace is recorded, unless told otherwise. Higher than
/// DynamoRIO's 50: traces recorded later follow the steady-state path (see ARCHITECTURE.md).
pub const DEFAULT_THRESHOLD: u32 = 1000;
/// Most blocks in one trace, unless told otherwise.
pub const DEFAULT_MAX_BLOCKS: u32 = 128;

impl Default for TraceOptions {
    fn default() -> TraceOptions {
        TraceOptions { enabled: true, threshold: DEFAULT_THRESHOLD, max_blocks: DEFAULT_MAX_BLOCKS }
    }
}

/// Most application bytes in one trace (keeps its cache code within 16-bit offsets).
pub(crate) const MAX_TRACE_APP_BYTES: u32 = 6 * 1024;

/// A trace being recorded by one thread.
#[derive(Debug)]
pub struct Recording {
    /// The blocks run so far, the head first.
    pub tags: Vec<u64>,
    /// Application bytes in them.
    pub app_bytes: u32,
}

/// Trace counters for `--stats`.
#[derive(Debug, Default, Clone, Copy)]
pub struct TraceStats {
    /// Traces built.
    pub built: u64,
    /// Blocks in them.
    pub blocks: u64,
    /// Recordings given up (a signal, a block that cannot join a trace).
    pub aborted: u64,
    /// Head counters that fired.
    pub hot_heads: u64,
    /// Time spent translating recording copies and traces (with `--stats`).
    pub build_time: std::time::Duration,
}

/// The insertions a tool made in a block, kept for the traces it may join (replacing those
/// of an earlier block at the same tag, which may have been built from other code).
pub fn keep_insertions(store: &mut rustc_hash::FxHashMap<u64, Insertions>, tag: u64, ins: &Insertions) {
    if !ins.is_empty() {
        store.insert(tag, ins.clone());
    } else if !store.is_empty() {
        store.remove(&tag);
    }
}
