//! Placement of allocations inside one reserved virtual address range.
//!
//! First fit over a free list of granularity-aligned ranges, coalescing on free. The driver's
//! granularity (2 MiB on current GPUs) keeps the list short.

use std::collections::BTreeMap;

#[derive(Debug)]
pub struct Space {
    size: u64,
    /// Offset -> length of each free range; ranges never touch (they are coalesced).
    free: BTreeMap<u64, u64>,
}

impl Space {
    pub fn new(size: u64) -> Self {
        let mut free = BTreeMap::new();
        if size > 0 {
            free.insert(0, size);
        }
        Self { size, free }
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    /// An offset for `len` bytes aligned to `align` (a power of two), or `None` when no free
    /// range is large enough.
    pub fn alloc(&mut self, len: u64, align: u64) -> Option<u64> {
        if len == 0 || !align.is_power_of_two() {
            return None;
        }
        let (start, flen, at) = self.free.iter().find_map(|(&start, &flen)| {
            let at = start.checked_add(align - 1)? & !(align - 1);
            let end = at.checked_add(len)?;
            (end <= start + flen).then_some((start, flen, at))
        })?;
        self.free.remove(&start);
        if at > start {
            self.free.insert(start, at - start);
        }
        let end = at + len;
        if end < start + flen {
            self.free.insert(end, start + flen - end);
        }
        Some(at)
    }

    /// Takes exactly `[offset, offset + len)` if it is all free (one free range covers it).
    pub fn alloc_at(&mut self, offset: u64, len: u64) -> bool {
        let Some(end) = offset
            .checked_add(len)
            .filter(|&e| len > 0 && e <= self.size)
        else {
            return false;
        };
        let Some((&start, &flen)) = self.free.range(..=offset).next_back() else {
            return false;
        };
        if start + flen < end {
            return false;
        }
        self.free.remove(&start);
        if offset > start {
            self.free.insert(start, offset - start);
        }
        if end < start + flen {
            self.free.insert(end, start + flen - end);
        }
        true
    }

    /// Marks whatever is still free of `[offset, offset + len)` as used, for good.
    pub fn take(&mut self, offset: u64, len: u64) {
        let end = offset.saturating_add(len).min(self.size);
        let overlapping: Vec<(u64, u64)> = self
            .free
            .range(..end)
            .filter(|(&s, &l)| s + l > offset)
            .map(|(&s, &l)| (s, l))
            .collect();
        for (s, l) in overlapping {
            self.free.remove(&s);
            if s < offset {
                self.free.insert(s, offset - s);
            }
            if s + l > end {
                self.free.insert(end, s + l - end);
            }
        }
    }

    /// Returns `[offset, offset + len)` to the free list. The caller frees only what it got.
    pub fn free(&mut self, offset: u64, len: u64) {
        let (mut start, mut end) = (offset, offset + len);
        if let Some((&prev, &plen)) = self.free.range(..offset).next_back() {
            if prev + plen == offset {
                self.free.remove(&prev);
                start = prev;
            }
        }
        if let Some(nlen) = self.free.remove(&end) {
            end += nlen;
        }
        self.free.insert(start, end - start);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const G: u64 = 2 << 20;

    #[test]
    fn a_range_is_taken_exactly_where_asked_only_when_all_free() {
        let mut s = Space::new(8 * G);
        assert!(s.alloc_at(2 * G, G));
        assert!(!s.alloc_at(2 * G, G), "already taken");
        assert!(!s.alloc_at(G, 2 * G), "overlaps the taken one");
        assert!(!s.alloc_at(7 * G, 2 * G), "past the end");
        assert!(!s.alloc_at(0, 0));
        assert_eq!(s.alloc(2 * G, G), Some(0), "the gap before it");
        assert_eq!(s.alloc(G, G), Some(3 * G), "and after it");
        s.free(2 * G, G);
        assert!(s.alloc_at(2 * G, G));
    }

    #[test]
    fn first_fit_reuses_and_coalesces() {
        let mut s = Space::new(8 * G);
        let a = s.alloc(2 * G, G).expect("room");
        let b = s.alloc(G, G).expect("room");
        let c = s.alloc(G, G).expect("room");
        assert_eq!((a, b, c), (0, 2 * G, 3 * G));
        s.free(b, G);
        assert_eq!(s.alloc(G, G), Some(2 * G), "the hole is reused");
        s.free(2 * G, G);
        s.free(a, 2 * G);
        s.free(c, G);
        assert_eq!(s.free.len(), 1, "everything coalesced back: {:?}", s.free);
        assert_eq!(s.alloc(8 * G, G), Some(0));
    }

    #[test]
    fn exhaustion_and_bad_arguments() {
        let mut s = Space::new(4 * G);
        assert_eq!(s.alloc(5 * G, G), None);
        assert_eq!(s.alloc(0, G), None);
        assert_eq!(s.alloc(G, 3), None);
        assert_eq!(s.alloc(4 * G, G), Some(0));
        assert_eq!(s.alloc(G, G), None);
        assert_eq!(s.alloc(u64::MAX, G), None);
    }

    #[test]
    fn taken_ranges_are_skipped() {
        let mut s = Space::new(16 * G);
        s.take(G, 3 * G);
        s.take(15 * G, 10 * G);
        assert_eq!(
            s.alloc(2 * G, G),
            Some(4 * G),
            "the first hole is too small"
        );
        assert_eq!(s.alloc(G, G), Some(0));
        assert_eq!(
            s.alloc(10 * G, G),
            None,
            "only 9 G left before the taken tail"
        );
        assert_eq!(s.alloc(9 * G, G), Some(6 * G));
        assert_eq!(s.alloc(G, G), None);
    }

    #[test]
    fn alignment_leaves_the_gap_free() {
        let mut s = Space::new(16 * G);
        assert_eq!(s.alloc(G, G), Some(0));
        assert_eq!(s.alloc(G, 4 * G), Some(4 * G));
        assert_eq!(
            s.alloc(G, G),
            Some(G),
            "the gap before the aligned block stays usable"
        );
    }
}
