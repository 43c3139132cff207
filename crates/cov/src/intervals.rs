//! Covered address ranges as an interval union: overlapping blocks merge, so every byte is
//! counted once, and each piece carries how many times its bytes ran (the counts of all the
//! blocks that hold it, added).

/// Disjoint, sorted `(start, end, count)` pieces with count > 0.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Intervals(Vec<(u64, u64, u64)>);

impl Intervals {
    /// The union of `blocks` (`(start, end, count)`, in any order, overlapping or not).
    pub fn new(blocks: impl IntoIterator<Item = (u64, u64, u64)>) -> Intervals {
        let mut events: Vec<(u64, i128)> = Vec::new();
        for (start, end, count) in blocks.into_iter().filter(|b| b.0 < b.1 && b.2 > 0) {
            events.push((start, count as i128));
            events.push((end, -(count as i128)));
        }
        events.sort_unstable();
        let mut pieces: Vec<(u64, u64, u64)> = Vec::new();
        let (mut level, mut from) = (0i128, 0u64);
        for (at, delta) in events {
            if at > from && level > 0 {
                match pieces.last_mut() {
                    Some(last) if last.1 == from && last.2 == level as u64 => last.1 = at,
                    _ => pieces.push((from, at, level as u64)),
                }
            }
            level += delta;
            from = at;
        }
        Intervals(pieces)
    }

    /// The pieces, in address order.
    pub fn pieces(&self) -> &[(u64, u64, u64)] {
        &self.0
    }

    /// Pieces that overlap `[lo, hi)`.
    fn overlapping(&self, lo: u64, hi: u64) -> impl Iterator<Item = &(u64, u64, u64)> {
        let first = self.0.partition_point(|p| p.1 <= lo);
        self.0[first..].iter().take_while(move |p| p.0 < hi)
    }

    /// Covered bytes in `[lo, hi)`.
    pub fn covered(&self, lo: u64, hi: u64) -> u64 {
        self.overlapping(lo, hi).map(|p| p.1.min(hi) - p.0.max(lo)).sum()
    }

    /// How many times the byte at `addr` ran (0: not covered).
    pub fn count_at(&self, addr: u64) -> u64 {
        self.overlapping(addr, addr + 1).map(|p| p.2).next().unwrap_or(0)
    }

    /// The most any byte of `[lo, hi)` ran.
    pub fn max_count(&self, lo: u64, hi: u64) -> u64 {
        self.overlapping(lo, hi).map(|p| p.2).max().unwrap_or(0)
    }

    /// Covered bytes in all.
    pub fn total(&self) -> u64 {
        self.0.iter().map(|p| p.1 - p.0).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlapping_blocks_count_each_byte_once() {
        // A block of 10 bytes and one entered 4 bytes in (a jump into its middle).
        let iv = Intervals::new([(100, 110, 1), (104, 110, 5), (200, 201, 2)]);
        assert_eq!(iv.pieces(), &[(100, 104, 1), (104, 110, 6), (200, 201, 2)]);
        assert_eq!(iv.total(), 11);
        assert_eq!(iv.covered(0, 1000), 11);
        assert_eq!(iv.covered(102, 106), 4);
        assert_eq!(iv.count_at(105), 6);
        assert_eq!(iv.count_at(110), 0);
        assert_eq!(iv.max_count(90, 105), 6);
        // The same blocks from two files: the same bytes.
        assert_eq!(Intervals::new([(0, 8, 1), (0, 8, 1)]).total(), 8);
    }
}
