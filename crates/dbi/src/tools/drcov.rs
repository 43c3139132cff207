//! The drcov coverage format, as DynamoRIO's drcov writes it: a text header (`DRCOV VERSION`,
//! `DRCOV FLAVOR`), a module table (version 5: one line per mapped segment; version 2 for
//! older readers: one line per module), then `BB Table: N bbs` and N packed little-endian
//! records `{u32 start, u16 size, u16 module id}`, starts relative to the segment (version 5)
//! or to the module's base (version 2).

use crate::tool::Segment;
use std::fmt::Write as _;

/// A covered block: which segment, where in it, how many bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Block {
    /// Segment id (index in the module table).
    pub segment: u32,
    /// Offset of the block from the segment's start.
    pub offset: u32,
    /// Bytes.
    pub size: u16,
}

/// The whole file for `blocks` of a process whose segments are `segments`.
pub fn write(version: u8, segments: &[Segment], blocks: &[Block]) -> Vec<u8> {
    let mut text = String::new();
    let flavor = "drcov-64";
    let records: Vec<(u32, u16, u16)> = if version == 2 {
        // One module per containing id, numbered in order; starts relative to the module base.
        let mods: Vec<&Segment> = segments.iter().filter(|s| s.id == s.containing_id).collect();
        let index_of = |containing: u32| mods.iter().position(|m| m.id == containing).unwrap_or(0) as u16;
        let end_of = |m: &Segment| segments.iter().filter(|s| s.containing_id == m.id).map(|s| s.range.end).max().unwrap_or(m.range.end);
        let _ = writeln!(text, "DRCOV VERSION: 2\nDRCOV FLAVOR: {flavor}\nModule Table: version 2, count {}", mods.len());
        let _ = writeln!(text, "Columns: id, base, end, entry, path");
        for (i, m) in mods.iter().enumerate() {
            let _ = writeln!(text, "{i:3}, {:#018x}, {:#018x}, {:#018x}, {}", m.range.start, end_of(m), m.entry, m.path);
        }
        blocks
            .iter()
            .map(|b| {
                let s = &segments[b.segment as usize];
                let base = segments[s.containing_id as usize].range.start;
                ((s.range.start + b.offset as u64 - base) as u32, b.size, index_of(s.containing_id))
            })
            .collect()
    } else {
        let _ = writeln!(text, "DRCOV VERSION: 3\nDRCOV FLAVOR: {flavor}\nModule Table: version 5, count {}", segments.len());
        let _ = writeln!(text, "Columns: id, containing_id, start, end, entry, offset, preferred_base, path");
        for s in segments {
            let _ = writeln!(
                text,
                "{:3}, {:3}, {:#018x}, {:#018x}, {:#018x}, {:016x}, {:#018x}, {}",
                s.id, s.containing_id, s.range.start, s.range.end, s.entry, s.offset, s.preferred_base, s.path
            );
        }
        blocks.iter().map(|b| (b.offset, b.size, b.segment as u16)).collect()
    };
    let _ = writeln!(text, "BB Table: {} bbs", records.len());
    let mut out = text.into_bytes();
    for (start, size, id) in records {
        out.extend_from_slice(&start.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        out.extend_from_slice(&id.to_le_bytes());
    }
    out
}
