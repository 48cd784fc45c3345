//! Which worker holds which block: a map from sequence hash to a bitmask of workers, fed by
//! the workers' KV events. Since sequence hashes chain their whole prefix, a prompt's overlap
//! with a worker is the number of its leading block hashes the worker holds.

use std::collections::{HashMap, HashSet};

use crate::kv::KvEvent;

/// Most workers one index tracks (one bit each).
pub const MAX_WORKERS: usize = 64;

/// The router's view of every worker's prefix cache.
#[derive(Debug, Default)]
pub struct KvIndex {
    holders: HashMap<u64, u64>,
    per_worker: Vec<HashSet<u64>>,
}

impl KvIndex {
    /// An index for `workers` workers.
    pub fn new(workers: usize) -> Self {
        assert!(workers <= MAX_WORKERS, "at most {MAX_WORKERS} workers");
        KvIndex {
            holders: HashMap::new(),
            per_worker: vec![HashSet::new(); workers],
        }
    }

    /// Adds a slot for one more worker (the pool's slots are append-only).
    pub fn add_worker(&mut self) {
        assert!(
            self.per_worker.len() < MAX_WORKERS,
            "at most {MAX_WORKERS} workers"
        );
        self.per_worker.push(HashSet::new());
    }

    /// Blocks indexed for `worker`.
    pub fn num_blocks(&self, worker: usize) -> usize {
        self.per_worker[worker].len()
    }

    /// Applies one event of `worker`.
    pub fn apply(&mut self, worker: usize, event: &KvEvent) {
        let bit = 1u64 << worker;
        match event {
            KvEvent::BlockStored { block_hashes, .. } => {
                for &h in block_hashes {
                    *self.holders.entry(h).or_default() |= bit;
                    self.per_worker[worker].insert(h);
                }
            }
            KvEvent::BlockRemoved { block_hashes } => {
                for h in block_hashes {
                    self.remove(worker, *h);
                }
            }
            KvEvent::AllBlocksCleared => self.clear(worker),
        }
    }

    /// Forgets everything about `worker` (before a snapshot, or when it restarts).
    pub fn clear(&mut self, worker: usize) {
        for h in std::mem::take(&mut self.per_worker[worker]) {
            self.unset(worker, h);
        }
    }

    fn remove(&mut self, worker: usize, h: u64) {
        if self.per_worker[worker].remove(&h) {
            self.unset(worker, h);
        }
    }

    fn unset(&mut self, worker: usize, h: u64) {
        if let Some(m) = self.holders.get_mut(&h) {
            *m &= !(1u64 << worker);
            if *m == 0 {
                self.holders.remove(&h);
            }
        }
    }

    /// For each worker, how many leading blocks of `seq_hashes` it holds.
    pub fn overlaps(&self, seq_hashes: &[u64]) -> Vec<usize> {
        let mut out = vec![0; self.per_worker.len()];
        let mut active = u64::MAX;
        for h in seq_hashes {
            let m = self.holders.get(h).copied().unwrap_or(0) & active;
            if m == 0 {
                break;
            }
            let mut bits = m;
            while bits != 0 {
                out[bits.trailing_zeros() as usize] += 1;
                bits &= bits - 1;
            }
            active = m;
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(h: &[u64]) -> KvEvent {
        KvEvent::BlockStored {
            block_hashes: h.to_vec(),
            parent_block_hash: None,
            token_ids: vec![],
            block_size: 1,
        }
    }

    #[test]
    fn overlap_counts_leading_blocks_per_worker() {
        let mut ix = KvIndex::new(3);
        ix.apply(0, &stored(&[1, 2, 3]));
        ix.apply(1, &stored(&[1, 2]));
        ix.apply(2, &stored(&[2, 3]));
        assert_eq!(ix.overlaps(&[1, 2, 3, 4]), vec![3, 2, 0]);
        ix.apply(
            0,
            &KvEvent::BlockRemoved {
                block_hashes: vec![2],
            },
        );
        assert_eq!(ix.overlaps(&[1, 2, 3]), vec![1, 2, 0]);
        ix.apply(1, &KvEvent::AllBlocksCleared);
        assert_eq!(ix.overlaps(&[1, 2, 3]), vec![1, 0, 0]);
        assert_eq!((ix.num_blocks(0), ix.num_blocks(1)), (2, 0));
        ix.clear(0);
        ix.clear(2);
        assert!(ix.holders.is_empty());
    }
}
