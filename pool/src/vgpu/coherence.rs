//! Which members hold valid bytes of each allocation of a virtual GPU.
//!
//! Every allocation exists at the same address on every member; its bytes are cut into pieces,
//! each with the set of members (a bit mask) whose copy is up to date. Writes make a piece
//! valid on the writer only; copies between members add the receiver; memsets done on every
//! member make a piece valid everywhere. Pieces with equal sets are merged again, so a
//! buffer that is only ever written whole stays one piece.

use std::collections::BTreeMap;

/// A set of members, bit `i` for member `i` (a virtual GPU has at most 64).
pub type Members = u64;

/// The member to read a piece from: the lowest-numbered holder, so the home member (0)
/// whenever it holds the piece.
pub fn first(set: Members) -> usize {
    set.trailing_zeros() as usize
}

/// The pieces of one allocation: start offset -> (end offset, holders). The pieces cover
/// `[0, size)` without gaps or overlaps.
#[derive(Debug, Clone)]
pub struct Validity {
    size: u64,
    pieces: BTreeMap<u64, (u64, Members)>,
}

impl Validity {
    /// A fresh allocation: its (undefined) bytes are as good on every member.
    pub fn new(size: u64, everyone: Members) -> Self {
        let mut pieces = BTreeMap::new();
        if size > 0 {
            pieces.insert(0, (size, everyone));
        }
        Self { size, pieces }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// Cuts the piece holding `at` in two there (no-op at a boundary or outside).
    fn cut(&mut self, at: u64) {
        if at == 0 || at >= self.size {
            return;
        }
        let Some((&start, &(end, set))) = self.pieces.range(..=at).next_back() else {
            return;
        };
        if start < at && at < end {
            self.pieces.insert(start, (at, set));
            self.pieces.insert(at, (end, set));
        }
    }

    /// Applies `f` to the holders of every byte of `[lo, hi)` (clipped to the allocation).
    fn update(&mut self, lo: u64, hi: u64, f: impl Fn(Members) -> Members) {
        let hi = hi.min(self.size);
        if lo >= hi {
            return;
        }
        self.cut(lo);
        self.cut(hi);
        for (_, (_, set)) in self.pieces.range_mut(lo..hi) {
            *set = f(*set);
        }
        self.merge_around(lo, hi);
    }

    /// Merges neighbours with the same holders in and next to `[lo, hi)`.
    fn merge_around(&mut self, lo: u64, hi: u64) {
        let first = self.pieces.range(..lo).next_back().map_or(lo, |(&s, _)| s);
        let starts: Vec<u64> = self.pieces.range(first..=hi).map(|(&s, _)| s).collect();
        let mut prev: Option<u64> = None;
        for s in starts {
            let Some(&(end, set)) = self.pieces.get(&s) else {
                continue;
            };
            match prev {
                Some(p) if self.pieces[&p].1 == set && self.pieces[&p].0 == s => {
                    self.pieces.remove(&s);
                    self.pieces.insert(p, (end, set));
                }
                _ => prev = Some(s),
            }
        }
    }

    /// `[lo, hi)` was written by `member`: only its copy is valid now.
    pub fn wrote(&mut self, lo: u64, hi: u64, member: usize) {
        self.update(lo, hi, |_| 1 << member);
    }

    /// `[lo, hi)` was written identically on `set` (a memset done everywhere).
    pub fn wrote_on(&mut self, lo: u64, hi: u64, set: Members) {
        self.update(lo, hi, |_| set);
    }

    /// `member` received a valid copy of `[lo, hi)`.
    pub fn copied_to(&mut self, lo: u64, hi: u64, member: usize) {
        self.update(lo, hi, |s| s | (1 << member));
    }

    /// The pieces of `[lo, hi)` and their holders, clipped to the range.
    pub fn holders(&self, lo: u64, hi: u64) -> Vec<(u64, u64, Members)> {
        let hi = hi.min(self.size);
        if lo >= hi {
            return Vec::new();
        }
        let first = self.pieces.range(..=lo).next_back().map_or(lo, |(&s, _)| s);
        self.pieces
            .range(first..hi)
            .filter(|(_, &(end, _))| end > lo)
            .map(|(&s, &(end, set))| (s.max(lo), end.min(hi), set))
            .collect()
    }

    /// The pieces of `[lo, hi)` that `member` lacks, each with the member to copy it from
    /// ([`first`]).
    pub fn missing(&self, lo: u64, hi: u64, member: usize) -> Vec<(u64, u64, usize)> {
        self.holders(lo, hi)
            .into_iter()
            .filter(|&(_, _, set)| set & (1 << member) == 0)
            .map(|(s, e, set)| (s, e, first(set)))
            .collect()
    }

    /// How many pieces the allocation is cut into.
    pub fn pieces(&self) -> usize {
        self.pieces.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: Members = 0b111;

    #[test]
    fn writes_and_copies_track_holders_and_merge_back() {
        let mut v = Validity::new(100, ALL);
        assert_eq!(v.holders(0, 100), [(0, 100, ALL)]);
        v.wrote(10, 20, 1);
        v.wrote(20, 30, 2);
        assert_eq!(
            v.holders(0, 100),
            [
                (0, 10, ALL),
                (10, 20, 0b010),
                (20, 30, 0b100),
                (30, 100, ALL)
            ]
        );
        assert_eq!(v.missing(0, 100, 0), [(10, 20, 1), (20, 30, 2)]);
        assert_eq!(v.missing(15, 25, 1), [(20, 25, 2)]);
        v.copied_to(10, 30, 0);
        assert_eq!(v.missing(0, 100, 0), []);
        assert_eq!(v.missing(0, 100, 1), [(20, 30, 0)]);
        v.wrote_on(0, 100, ALL);
        assert_eq!(v.pieces(), 1, "equal neighbours merge");
    }

    #[test]
    fn ranges_are_clipped_to_the_allocation() {
        let mut v = Validity::new(64, 0b11);
        v.wrote(60, 1 << 40, 0);
        assert_eq!(v.holders(0, 1000), [(0, 60, 0b11), (60, 64, 0b01)]);
        assert_eq!(v.holders(70, 80), []);
        v.wrote(80, 90, 1);
        assert_eq!(v.pieces(), 2);
    }

    #[test]
    fn many_strided_writes_stay_exact() {
        let mut v = Validity::new(4096, 0b11);
        for r in 0..64u64 {
            v.wrote(r * 64, r * 64 + 32, (r % 2) as usize);
        }
        for r in 0..64u64 {
            let h = v.holders(r * 64, r * 64 + 32);
            assert_eq!(h, [(r * 64, r * 64 + 32, 1 << (r % 2))]);
            assert_eq!(v.holders(r * 64 + 32, r * 64 + 64)[0].2, 0b11);
        }
    }
}
