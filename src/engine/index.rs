//! The lead index: from a lead id's hash to the lead's position in the
//! engine's `leads`.
//!
//! An open-addressing table with linear probing over 8-byte slots (32 bits
//! of the id's hash and the lead's position). On millions of leads the fold
//! is bound by memory latency: a lookup here usually reads one cache line of
//! the table before the lead itself, where a SwissTable reads a control-byte
//! group and then the slot, two misses. The stored hash bits are all that
//! growing the table needs, so it never touches the leads to re-hash them.
//! A removed lead's slot is emptied by backward-shift deletion (the entries
//! after it in its probe run move up), so there are no tombstones.

#[derive(Debug, Clone, Copy)]
struct Slot {
    hash: u32,
    /// Position in `leads`, or [`EMPTY`].
    lead: u32,
}

const EMPTY: u32 = u32::MAX;
const FREE: Slot = Slot {
    hash: 0,
    lead: EMPTY,
};

#[derive(Debug, Default)]
pub struct Index {
    /// A power of two long (or empty).
    slots: Vec<Slot>,
    len: usize,
}

impl Index {
    /// The lead with this hash for which `is` holds (`is` compares the ids).
    #[inline]
    pub fn find(&self, hash: u32, mut is: impl FnMut(u32) -> bool) -> Option<u32> {
        if self.slots.is_empty() {
            return None;
        }
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            let s = self.slots[i];
            if s.lead == EMPTY {
                return None;
            }
            if s.hash == hash && is(s.lead) {
                return Some(s.lead);
            }
            i = (i + 1) & mask;
        }
    }

    /// The first lead whose stored hash bits are `hash` (a guess, for reading ahead).
    #[inline]
    pub fn first_with(&self, hash: u32) -> Option<u32> {
        self.find(hash, |_| true)
    }

    /// Adds a lead that is not in the index yet.
    pub fn insert(&mut self, hash: u32, lead: u32) {
        assert!(lead != EMPTY, "fewer than 4 billion leads per partition");
        // At most 80% full: probes stay short, and the table stays small.
        if (self.len + 1) * 5 > self.slots.len() * 4 {
            self.grow();
        }
        self.place(Slot { hash, lead });
        self.len += 1;
    }

    /// Removes the entry of lead `lead`, whose hash is `hash`.
    pub fn remove(&mut self, hash: u32, lead: u32) {
        if self.slots.is_empty() {
            return;
        }
        let mask = self.slots.len() - 1;
        let mut i = hash as usize & mask;
        loop {
            let s = self.slots[i];
            if s.lead == EMPTY {
                return;
            }
            if s.lead == lead {
                break;
            }
            i = (i + 1) & mask;
        }
        // Backward shift: move later entries of the run into the hole when
        // their home slot is not between the hole and them.
        let mut hole = i;
        let mut j = (i + 1) & mask;
        loop {
            let s = self.slots[j];
            if s.lead == EMPTY {
                break;
            }
            let home = s.hash as usize & mask;
            // Distance from home to j and from home to the hole, cyclically.
            if (j.wrapping_sub(home) & mask) >= (j.wrapping_sub(hole) & mask) {
                self.slots[hole] = s;
                hole = j;
            }
            j = (j + 1) & mask;
        }
        self.slots[hole] = FREE;
        self.len -= 1;
    }

    fn place(&mut self, slot: Slot) {
        let mask = self.slots.len() - 1;
        let mut i = slot.hash as usize & mask;
        while self.slots[i].lead != EMPTY {
            i = (i + 1) & mask;
        }
        self.slots[i] = slot;
    }

    fn grow(&mut self) {
        let len = (self.slots.len() * 2).max(16);
        let old = std::mem::replace(&mut self.slots, vec![FREE; len]);
        for s in old {
            if s.lead != EMPTY {
                self.place(s);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_what_it_holds_across_growth_and_collisions() {
        let mut index = Index::default();
        // Few distinct hashes: long probe runs and many equal hashes.
        let hash = |n: u32| n % 7;
        for n in 0..1000 {
            assert_eq!(index.find(hash(n), |l| l == n), None);
            index.insert(hash(n), n);
        }
        for n in 0..1000 {
            assert_eq!(index.find(hash(n), |l| l == n), Some(n));
        }
        assert_eq!(index.find(3, |_| false), None);
    }

    #[test]
    fn removing_keeps_every_other_entry_findable() {
        let mut index = Index::default();
        let hash = |n: u32| n.wrapping_mul(2_654_435_761) % 13;
        for n in 0..500 {
            index.insert(hash(n), n);
        }
        for n in (0..500).filter(|n| n % 3 == 0) {
            index.remove(hash(n), n);
        }
        for n in 0..500 {
            let want = (n % 3 != 0).then_some(n);
            assert_eq!(index.find(hash(n), |l| l == n), want, "lead {n}");
        }
        assert_eq!(index.len, 500 - 167);
        // Removed leads' slots are reused.
        for n in (0..500).filter(|n| n % 3 == 0) {
            index.insert(hash(n), n);
        }
        for n in 0..500 {
            assert_eq!(index.find(hash(n), |l| l == n), Some(n));
        }
    }
}
