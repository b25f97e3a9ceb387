//! The engine's timer queue: (deadline, lead position) pairs, earliest
//! first, ties by position.
//!
//! A calendar of buckets of [`WIDTH`] of event time: the bucket being
//! served is a small binary heap, the later ones are plain vectors, filed
//! by bucket in a B-tree. A push is an append to its bucket's vector, and a
//! bucket is heapified only when the queue reaches it. One binary heap of
//! every timer did the same in the same order, but with one entry per lead
//! (half a million, under a retention) its pops missed the cache at every
//! level: the retention bench (`benches/retention.rs`, 10M events) folded
//! 173k events/s with it, and this queue serves the same timers in the
//! same order.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use crate::time::Micros;

/// 2^32 µs, about 72 minutes.
const SHIFT: u32 = 32;

/// A bucket's number: the deadline's multiple of 2^[`SHIFT`] µs (rounded down).
#[inline]
fn bucket(due: Micros) -> i64 {
    due >> SHIFT
}

#[derive(Debug, Default)]
pub(super) struct Timers {
    /// Every entry of a bucket at or before `served` (the earliest entries).
    current: BinaryHeap<Reverse<(Micros, u32)>>,
    /// The latest bucket whose entries are in `current`.
    served: Option<i64>,
    /// Entries of later buckets, unordered within each.
    later: BTreeMap<i64, Vec<(Micros, u32)>>,
    len: usize,
}

impl Timers {
    pub(super) fn len(&self) -> usize {
        self.len
    }

    #[inline]
    pub(super) fn push(&mut self, due: Micros, idx: u32) {
        self.len += 1;
        let b = bucket(due);
        if self.served.is_some_and(|s| b <= s) {
            self.current.push(Reverse((due, idx)));
        } else {
            self.later.entry(b).or_default().push((due, idx));
        }
    }

    /// The earliest entry (by deadline, then position).
    #[inline]
    pub(super) fn peek(&mut self) -> Option<(Micros, u32)> {
        if self.current.is_empty() {
            let (b, entries) = self.later.pop_first()?;
            self.served = Some(b);
            self.current = BinaryHeap::from(
                entries
                    .into_iter()
                    .map(Reverse)
                    .collect::<Vec<Reverse<(Micros, u32)>>>(),
            );
        }
        self.current.peek().map(|r| r.0)
    }

    /// Removes the earliest entry (the one [`Timers::peek`] returned).
    #[inline]
    pub(super) fn pop(&mut self) {
        if self.current.pop().is_some() {
            self.len -= 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gen::Rng;

    #[test]
    fn serves_in_the_order_of_one_heap_whatever_is_pushed_while_serving() {
        let mut rng = Rng::new(3);
        let mut timers = Timers::default();
        let mut heap = BinaryHeap::new();
        let hour: Micros = 3_600_000_000;
        let mut now: Micros = 1_780_000_000_000_000;
        for round in 0..2_000 {
            // Pushes at and after `now`: in the bucket being served, the
            // next ones, far ones; duplicates and equal deadlines.
            for _ in 0..rng.below(6) {
                let due = now
                    + rng.below(if round % 3 == 0 { 3 } else { 500 } as u64 * hour as u64 / 100)
                        as Micros;
                let idx = rng.below(50) as u32;
                timers.push(due, idx);
                heap.push(Reverse((due, idx)));
            }
            // Serve everything due by a moving watermark.
            now += rng.below(hour as u64) as Micros;
            loop {
                let want = heap.peek().map(|r| r.0).filter(|&(d, _)| d <= now);
                let got = timers.peek().filter(|&(d, _)| d <= now);
                assert_eq!(got, want, "round {round}");
                if got.is_none() {
                    break;
                }
                timers.pop();
                heap.pop();
                assert_eq!(timers.len(), heap.len());
            }
        }
        while let Some(r) = heap.pop() {
            assert_eq!(timers.peek(), Some(r.0));
            timers.pop();
        }
        assert_eq!(timers.peek(), None);
        assert_eq!(timers.len(), 0);
    }
}
