//! Address ranges of the program, tracked from its own mapping calls: the executable ones, so
//! that the engine builds blocks only from memory the program could execute natively, and
//! all it mapped (what it sees of `/proc/self/maps`).

use std::collections::BTreeMap;
use std::ops::Range;

/// The program's executable ranges.
pub type ExecRegions = AddressRanges;

/// Disjoint address ranges, adjacent ones merged.
#[derive(Debug, Default)]
pub struct AddressRanges {
    /// start → end
    map: BTreeMap<u64, u64>,
    /// Bumped on every change.
    generation: u64,
}

impl AddressRanges {
    /// Changes so far (a new value means the ranges may differ).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Adds `r`.
    pub fn add(&mut self, r: Range<u64>) {
        if r.is_empty() {
            return;
        }
        self.generation += 1;
        self.remove(r.clone());
        let (mut start, mut end) = (r.start, r.end);
        if let Some((&s, &e)) = self.map.range(..=start).next_back() {
            if e == start {
                start = s;
                self.map.remove(&s);
            }
        }
        if let Some(&e) = self.map.get(&end) {
            self.map.remove(&end);
            end = e;
        }
        self.map.insert(start, end);
    }

    /// Takes `r` out.
    pub fn remove(&mut self, r: Range<u64>) {
        if r.is_empty() {
            return;
        }
        self.generation += 1;
        let overlapping: Vec<(u64, u64)> = self.map.range(..r.end).filter(|&(_, &e)| e > r.start).map(|(&s, &e)| (s, e)).collect();
        for (s, e) in overlapping {
            self.map.remove(&s);
            if s < r.start {
                self.map.insert(s, r.start);
            }
            if e > r.end {
                self.map.insert(r.end, e);
            }
        }
    }

    /// The end of the range holding `addr`, if any.
    pub fn end_of(&self, addr: u64) -> Option<u64> {
        self.map.range(..=addr).next_back().filter(|&(_, &e)| addr < e).map(|(_, &e)| e)
    }

    /// The parts of the ranges inside `r`, ascending.
    pub fn within(&self, r: Range<u64>) -> impl Iterator<Item = Range<u64>> + '_ {
        let first = self.map.range(..=r.start).next_back().map_or(r.start, |(&s, _)| s);
        self.map.range(first..r.end).map(move |(&s, &e)| s.max(r.start)..e.min(r.end)).filter(|p| !p.is_empty())
    }

    /// The ranges, ascending.
    pub fn ranges(&self) -> impl Iterator<Item = Range<u64>> + '_ {
        self.map.iter().map(|(&s, &e)| s..e)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_remove_split_and_merge() {
        let mut r = AddressRanges::default();
        r.add(0x1000..0x3000);
        r.add(0x3000..0x4000);
        assert_eq!(r.ranges().collect::<Vec<_>>(), vec![0x1000..0x4000]);
        r.remove(0x2000..0x2800);
        assert_eq!(r.ranges().collect::<Vec<_>>(), vec![0x1000..0x2000, 0x2800..0x4000]);
        assert_eq!(r.end_of(0x1fff), Some(0x2000));
        assert_eq!(r.end_of(0x2000), None);
        assert_eq!(r.end_of(0x3fff), Some(0x4000));
        assert_eq!(r.within(0x1800..0x3000).collect::<Vec<_>>(), vec![0x1800..0x2000, 0x2800..0x3000]);
        r.add(0x0..0x5000);
        assert_eq!(r.ranges().collect::<Vec<_>>(), vec![0x0..0x5000]);
        r.remove(0x0..0x5000);
        assert_eq!(r.ranges().count(), 0);
    }
}
