//! The application's executable address ranges, tracked from its own mapping calls, so that
//! the engine builds blocks only from memory the program could execute natively.

use std::collections::BTreeMap;
use std::ops::Range;

/// Disjoint, non-adjacent-merged executable ranges.
#[derive(Debug, Default)]
pub struct ExecRegions {
    /// start → end
    map: BTreeMap<u64, u64>,
    /// Bumped on every change.
    generation: u64,
}

impl ExecRegions {
    /// Changes so far (a new value means the ranges may differ).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Marks `r` executable.
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

    /// Marks `r` not executable.
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

    /// The end of the executable range holding `addr`, if any.
    pub fn end_of(&self, addr: u64) -> Option<u64> {
        self.map.range(..=addr).next_back().filter(|&(_, &e)| addr < e).map(|(_, &e)| e)
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
        let mut r = ExecRegions::default();
        r.add(0x1000..0x3000);
        r.add(0x3000..0x4000);
        assert_eq!(r.ranges().collect::<Vec<_>>(), vec![0x1000..0x4000]);
        r.remove(0x2000..0x2800);
        assert_eq!(r.ranges().collect::<Vec<_>>(), vec![0x1000..0x2000, 0x2800..0x4000]);
        assert_eq!(r.end_of(0x1fff), Some(0x2000));
        assert_eq!(r.end_of(0x2000), None);
        assert_eq!(r.end_of(0x3fff), Some(0x4000));
        r.add(0x0..0x5000);
        assert_eq!(r.ranges().collect::<Vec<_>>(), vec![0x0..0x5000]);
        r.remove(0x0..0x5000);
        assert_eq!(r.ranges().count(), 0);
    }
}
