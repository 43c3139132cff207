//! Translation, from application bytes to cache code: decoding a block, the block builder
//! and emitter, trace stitching, the tool's counters and the exit records. It makes code
//! bytes, exit records and a translation map for a given cache address; it makes no system
//! call and keeps no engine state, so it can be tested on its own.

pub mod block;
pub mod counters;
pub mod decode;
pub mod emitter;
pub mod exits;

pub use block::{translate_parts, BuildOptions, Exits, Parts, Source, Translated, Workspace, LOOKUP_PREFIX};
pub use counters::{CounterAdd, EdgeHit, Insertions, MergedCounts};
pub use decode::Decoded;
pub use exits::{Branch, ExitKind, ExitRecord};
