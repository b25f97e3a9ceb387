//! The engine's leads, by position, in chunks that never move.
//!
//! One `Vec<Lead>` doubles as it grows: each doubling copies every lead into
//! new memory, and on a million leads the copies and the fresh pages they
//! land on (zeroed by the kernel first) cost about a tenth of a fold. Here
//! the first chunk grows like a `Vec` up to [`CHUNK`] leads, and every later
//! chunk is allocated at that size once, so a lead is written where it stays.

use std::ops::{Index, IndexMut};

use super::lead::Lead;

const CHUNK_BITS: u32 = 14;
/// Leads per chunk (1.25 MiB of them).
const CHUNK: usize = 1 << CHUNK_BITS;

#[derive(Default)]
pub struct Leads {
    chunks: Vec<Vec<Lead>>,
    /// Positions in use or free.
    len: usize,
    /// Positions of removed leads, reused before new ones.
    free: Vec<u32>,
}

impl Leads {
    /// How many leads there are (positions in use).
    pub fn len(&self) -> usize {
        self.len - self.free.len()
    }

    /// Puts a lead at a free position, or appends it; returns its position.
    pub fn push(&mut self, lead: Lead) -> usize {
        if let Some(i) = self.free.pop() {
            self[i as usize] = lead;
            return i as usize;
        }
        match self.chunks.last_mut() {
            Some(last) if last.len() < CHUNK => last.push(lead),
            _ => {
                // The first chunk starts small (an engine may hold a few leads).
                let mut chunk = if self.chunks.is_empty() {
                    Vec::new()
                } else {
                    Vec::with_capacity(CHUNK)
                };
                chunk.push(lead);
                self.chunks.push(chunk);
            }
        }
        self.len += 1;
        self.len - 1
    }

    #[inline]
    pub fn get(&self, i: usize) -> Option<&Lead> {
        self.chunks.get(i >> CHUNK_BITS)?.get(i & (CHUNK - 1))
    }

    /// Frees the position: the lead's memory is released at once, the
    /// position is reused by the next [`Leads::push`].
    pub fn vacate(&mut self, i: usize) {
        self[i] = Lead::vacant();
        self.free
            .push(u32::try_from(i).expect("positions fit in u32"));
    }

    /// The leads, by position (freed positions skipped).
    pub fn iter(&self) -> impl Iterator<Item = &Lead> {
        self.chunks.iter().flatten().filter(|l| !l.is_vacant())
    }
}

impl Index<usize> for Leads {
    type Output = Lead;

    #[inline]
    fn index(&self, i: usize) -> &Lead {
        &self.chunks[i >> CHUNK_BITS][i & (CHUNK - 1)]
    }
}

impl IndexMut<usize> for Leads {
    #[inline]
    fn index_mut(&mut self, i: usize) -> &mut Lead {
        &mut self.chunks[i >> CHUNK_BITS][i & (CHUNK - 1)]
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Model;

    #[test]
    fn positions_stay_across_chunks() {
        let model = Model::default_model();
        let mut leads = Leads::default();
        let n = 2 * CHUNK + 3;
        for i in 0..n {
            assert_eq!(leads.push(Lead::new(&format!("L-{i}"), &model)), i);
        }
        assert_eq!(leads.len(), n);
        for i in [0, 1, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, n - 1] {
            assert_eq!(leads[i].id(), format!("L-{i}"));
            assert_eq!(leads.get(i).map(Lead::id), Some(format!("L-{i}").as_str()));
        }
        assert!(leads.get(n).is_none());
        let ids: Vec<&str> = leads.iter().map(Lead::id).collect();
        assert_eq!(ids.len(), n);
        assert!(ids
            .iter()
            .enumerate()
            .all(|(i, id)| *id == format!("L-{i}")));
        leads[CHUNK].sequence = 7;
        assert_eq!(leads[CHUNK].sequence, 7);
    }
}
