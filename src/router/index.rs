//! Which worker holds which block: a map from sequence hash to a bitmask of workers, fed by
//! the workers' KV events. Since sequence hashes chain their whole prefix, a prompt's overlap
//! with a worker is the number of its leading block hashes the worker holds.

use rustc_hash::FxHashMap;

use crate::kv::KvEvent;

/// Most workers one index tracks (one bit each).
pub const MAX_WORKERS: usize = 64;

/// The router's view of every worker's prefix cache.
///
/// One map entry per block hash (the bitmask of its holders) and a count per worker: an event
/// costs one hash lookup per block. Keys are already XXH3 hashes, so the map uses Fx.
#[derive(Debug, Default)]
pub struct KvIndex {
    holders: FxHashMap<u64, u64>,
    counts: Vec<usize>,
}

impl KvIndex {
    /// An index for `workers` workers.
    pub fn new(workers: usize) -> Self {
        assert!(workers <= MAX_WORKERS, "at most {MAX_WORKERS} workers");
        KvIndex {
            holders: FxHashMap::default(),
            counts: vec![0; workers],
        }
    }

    /// Adds a slot for one more worker (the pool's slots are append-only).
    pub fn add_worker(&mut self) {
        assert!(
            self.counts.len() < MAX_WORKERS,
            "at most {MAX_WORKERS} workers"
        );
        self.counts.push(0);
    }

    /// Blocks indexed for `worker`.
    pub fn num_blocks(&self, worker: usize) -> usize {
        self.counts[worker]
    }

    /// Applies one event of `worker`.
    pub fn apply(&mut self, worker: usize, event: &KvEvent) {
        let bit = 1u64 << worker;
        match event {
            KvEvent::BlockStored { block_hashes, .. } => {
                for &h in block_hashes {
                    let m = self.holders.entry(h).or_default();
                    if *m & bit == 0 {
                        *m |= bit;
                        self.counts[worker] += 1;
                    }
                }
            }
            KvEvent::BlockRemoved { block_hashes } => {
                for h in block_hashes {
                    if let Some(m) = self.holders.get_mut(h)
                        && *m & bit != 0
                    {
                        *m &= !bit;
                        self.counts[worker] -= 1;
                        if *m == 0 {
                            self.holders.remove(h);
                        }
                    }
                }
            }
            KvEvent::AllBlocksCleared => self.clear(worker),
        }
    }

    /// Forgets everything about `worker` (before a snapshot, or when it restarts). It walks
    /// the whole index; that is rare, where events are per step.
    pub fn clear(&mut self, worker: usize) {
        let keep = !(1u64 << worker);
        self.holders.retain(|_, m| {
            *m &= keep;
            *m != 0
        });
        self.counts[worker] = 0;
    }

    /// For each worker, how many leading blocks of `seq_hashes` it holds.
    pub fn overlaps(&self, seq_hashes: &[u64]) -> Vec<usize> {
        let mut out = vec![0; self.counts.len()];
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
