//! The Maglev pool's allocator: which regions of the `MAGLEV` array are free.
//!
//! Every VIP's tables live in one region of the array sized by its own M (two tables of
//! M entries, see [`super::Datapath::publish_vip`]), so the array is sized by what the
//! configuration holds (`[limits] maglev_pool`), not by `max_vips` times the largest M.
//! This module is the bookkeeping only, pure and without the maps: regions are counted
//! in array elements (four entries each), so two VIPs never share an element.
//!
//! First fit over a free list ordered by address, coalescing on free: allocations are
//! rare (a VIP added, or its M changed; a backend going up or down reuses the VIP's
//! region), so the list stays short and a linear search is enough. A free list can
//! fragment: a request may fail while enough elements are free in pieces; the error
//! says so ([`PoolFull::largest_free`]).

use std::collections::BTreeMap;

/// No free region is large enough.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolFull {
    /// Elements asked for.
    pub wanted: u32,
    /// Elements free in all.
    pub free: u32,
    /// The largest free region.
    pub largest_free: u32,
}

/// A region that is not wholly free (claimed twice, or outside the pool).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NotFree {
    /// First element.
    pub start: u32,
    /// Elements.
    pub len: u32,
}

/// Free regions of a pool of `size` elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pool {
    size: u32,
    /// Free regions, start → length; never adjacent (merged) nor empty.
    free: BTreeMap<u32, u32>,
}

impl Pool {
    /// A pool of `size` elements, all free.
    pub fn new(size: u32) -> Self {
        let mut free = BTreeMap::new();
        if size > 0 {
            free.insert(0, size);
        }
        Self { size, free }
    }

    /// Elements in the pool.
    pub fn size(&self) -> u32 {
        self.size
    }

    /// Elements free in all.
    pub fn free_total(&self) -> u32 {
        self.free.values().sum()
    }

    /// The largest free region.
    pub fn largest_free(&self) -> u32 {
        self.free.values().copied().max().unwrap_or(0)
    }

    /// Takes `len` (> 0) elements from the lowest free region that holds them.
    pub fn alloc(&mut self, len: u32) -> Result<u32, PoolFull> {
        let found = self
            .free
            .iter()
            .find(|&(_, &l)| l >= len && len > 0)
            .map(|(&s, &l)| (s, l));
        let Some((start, have)) = found else {
            return Err(PoolFull {
                wanted: len,
                free: self.free_total(),
                largest_free: self.largest_free(),
            });
        };
        self.free.remove(&start);
        if have > len {
            self.free.insert(start + len, have - len);
        }
        Ok(start)
    }

    /// Takes exactly `start..start + len`, which must be wholly free (rebuilding the
    /// pool from the regions pinned maps already use).
    pub fn claim(&mut self, start: u32, len: u32) -> Result<(), NotFree> {
        let not_free = NotFree { start, len };
        let end = start.checked_add(len).ok_or(not_free)?;
        let (&fs, &fl) = self.free.range(..=start).next_back().ok_or(not_free)?;
        if len == 0 || fs + fl < end {
            return Err(not_free);
        }
        self.free.remove(&fs);
        if start > fs {
            self.free.insert(fs, start - fs);
        }
        if fs + fl > end {
            self.free.insert(end, fs + fl - end);
        }
        Ok(())
    }

    /// Gives `start..start + len` back, merging it with free neighbours. A region that
    /// is partly free already or outside the pool is refused and nothing changes.
    pub fn free(&mut self, start: u32, len: u32) -> Result<(), NotFree> {
        let not_free = NotFree { start, len };
        let end = start.checked_add(len).ok_or(not_free)?;
        if len == 0 || end > self.size {
            return Err(not_free);
        }
        let before = self.free.range(..=start).next_back().map(|(&s, &l)| (s, l));
        let after = self.free.range(start..).next().map(|(&s, &l)| (s, l));
        if before.is_some_and(|(s, l)| s + l > start) || after.is_some_and(|(s, _)| s < end) {
            return Err(not_free);
        }
        let (mut s, mut e) = (start, end);
        if let Some((bs, bl)) = before
            && bs + bl == start
        {
            self.free.remove(&bs);
            s = bs;
        }
        if let Some((as_, al)) = after
            && as_ == end
        {
            self.free.remove(&as_);
            e = as_ + al;
        }
        self.free.insert(s, e - s);
        Ok(())
    }

    /// The free regions, in address order (tests and the bench).
    pub fn free_regions(&self) -> impl Iterator<Item = (u32, u32)> + '_ {
        self.free.iter().map(|(&s, &l)| (s, l))
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn first_fit_takes_the_lowest_hole_that_holds_the_request() {
        let mut p = Pool::new(100);
        assert_eq!(p.alloc(10), Ok(0));
        assert_eq!(p.alloc(20), Ok(10));
        assert_eq!(p.alloc(10), Ok(30));
        p.free(10, 20).unwrap();
        // 5 fits the hole at 10; 30 does not, and goes past the last region.
        assert_eq!(p.alloc(5), Ok(10));
        assert_eq!(p.alloc(30), Ok(40));
        assert_eq!(p.alloc(15), Ok(15));
        assert_eq!(p.free_total(), 30);
    }

    #[test]
    fn freeing_merges_with_both_neighbours() {
        let mut p = Pool::new(30);
        for want in [0, 10, 20] {
            assert_eq!(p.alloc(10), Ok(want));
        }
        p.free(0, 10).unwrap();
        p.free(20, 10).unwrap();
        assert_eq!(p.free_regions().collect::<Vec<_>>(), [(0, 10), (20, 10)]);
        p.free(10, 10).unwrap();
        assert_eq!(p.free_regions().collect::<Vec<_>>(), [(0, 30)]);
        assert_eq!(p, Pool::new(30));
    }

    #[test]
    fn a_fragmented_pool_refuses_and_says_why() {
        let mut p = Pool::new(40);
        for _ in 0..4 {
            p.alloc(10).unwrap();
        }
        p.free(0, 10).unwrap();
        p.free(20, 10).unwrap();
        // 20 elements are free, but in two pieces of 10.
        assert_eq!(
            p.alloc(20),
            Err(PoolFull {
                wanted: 20,
                free: 20,
                largest_free: 10
            })
        );
        assert_eq!(p.alloc(10), Ok(0));
    }

    #[test]
    fn bad_frees_and_claims_are_refused_and_change_nothing() {
        let mut p = Pool::new(40);
        p.alloc(20).unwrap();
        let before = p.clone();
        for (start, len) in [(20, 5), (15, 10), (30, 20), (u32::MAX, 2), (0, 0)] {
            assert_eq!(
                p.free(start, len),
                Err(NotFree { start, len }),
                "{start}+{len}"
            );
            assert_eq!(p, before);
        }
        for (start, len) in [(10, 5), (15, 10), (30, 20), (0, 0)] {
            assert_eq!(
                p.claim(start, len),
                Err(NotFree { start, len }),
                "{start}+{len}"
            );
            assert_eq!(p, before);
        }
        p.claim(25, 5).unwrap();
        assert_eq!(p.free_regions().collect::<Vec<_>>(), [(20, 5), (30, 10)]);
    }

    #[test]
    fn an_empty_pool_has_nothing_to_give() {
        let mut p = Pool::new(0);
        assert_eq!(p.alloc(1).map_err(|e| e.free), Err(0));
        assert_eq!(p.free(0, 1), Err(NotFree { start: 0, len: 1 }));
    }

    /// An operation of the property test: allocate `len`, or free the `i`-th live
    /// region (modulo how many there are).
    #[derive(Clone, Debug)]
    enum Op {
        Alloc(u32),
        Free(usize),
    }

    fn ops() -> impl Strategy<Value = Vec<Op>> {
        prop::collection::vec(
            prop_oneof![
                (1u32..300).prop_map(Op::Alloc),
                any::<usize>().prop_map(Op::Free)
            ],
            0..200,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// Live regions never overlap and stay inside the pool; free and live elements
        /// always add up to the pool; free regions are never adjacent; an allocation
        /// fails only when no free region holds it; and rebuilding a pool by claiming the
        /// live regions gives the same free list.
        #[test]
        fn regions_never_overlap_and_nothing_leaks(size in 0u32..2000, ops in ops()) {
            let mut p = Pool::new(size);
            let mut live: Vec<(u32, u32)> = Vec::new();
            for op in ops {
                match op {
                    Op::Alloc(len) => match p.alloc(len) {
                        Ok(start) => live.push((start, len)),
                        Err(e) => {
                            prop_assert!(e.largest_free < len);
                            prop_assert_eq!(e.free, p.free_total());
                        }
                    },
                    Op::Free(i) if !live.is_empty() => {
                        let (s, l) = live.swap_remove(i % live.len());
                        prop_assert_eq!(p.free(s, l), Ok(()));
                        // Twice is refused.
                        prop_assert!(p.free(s, l).is_err());
                    }
                    Op::Free(_) => {}
                }
                let mut all: Vec<(u32, u32)> = live.iter().copied().chain(p.free_regions()).collect();
                all.sort();
                let mut next = 0;
                for (s, l) in &all {
                    prop_assert_eq!(*s, next, "regions overlap or leave a gap: {:?}", all);
                    next = s + l;
                }
                prop_assert_eq!(next, size);
                let free: Vec<(u32, u32)> = p.free_regions().collect();
                for w in free.windows(2) {
                    prop_assert!(w[0].0 + w[0].1 < w[1].0, "adjacent free regions {:?}", free);
                }
            }
            let mut rebuilt = Pool::new(size);
            for (s, l) in &live {
                prop_assert_eq!(rebuilt.claim(*s, *l), Ok(()));
            }
            prop_assert_eq!(rebuilt, p);
        }
    }
}
