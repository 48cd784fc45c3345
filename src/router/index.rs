//! Which worker holds which block: a map from sequence hash to a bitmask of routing targets,
//! fed by the workers' KV events. A target is a (worker, data-parallel rank) pair: a worker
//! with attention data parallelism keeps one KV cache per rank, and its events say which
//! (vLLM's `data_parallel_rank`); a worker without is rank 0. Since sequence hashes chain
//! their whole prefix, a prompt's overlap with a target is the number of its leading block
//! hashes the target holds.

use rustc_hash::FxHashMap;

use crate::kv::{KvEvent, Medium};

/// Most targets (workers × ranks) one index tracks (one bit each).
pub const MAX_WORKERS: usize = 64;

/// How much of a prompt's leading blocks a target holds, by tier.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Overlap {
    /// Leading blocks held in device memory.
    pub device: usize,
    /// Leading blocks held only in the host tier (to be onboarded).
    pub host: usize,
}

impl Overlap {
    /// Leading blocks held in either tier.
    pub fn blocks(self) -> usize {
        self.device + self.host
    }

    /// The prefix credit in blocks: device blocks in full, host blocks at `host_weight`
    /// (onboarding one costs a copy, not a recompute, but not nothing).
    pub fn credit(self, host_weight: f64) -> f64 {
        self.device as f64 + host_weight * self.host as f64
    }
}

/// The router's view of every worker's prefix cache.
///
/// One map entry per block hash (a bitmask of its holders per tier) and a count per target
/// and tier: an event costs one hash lookup per block. Keys are already XXH3 hashes, so the
/// map uses Fx. Target (worker w, rank r) is bit `w × ranks + r`.
#[derive(Debug, Default)]
pub struct KvIndex {
    /// Per hash: holders in device memory, holders in the host tier.
    holders: FxHashMap<u64, [u64; 2]>,
    counts: Vec<usize>,
    ranks: usize,
}

fn tier(medium: Medium) -> usize {
    match medium {
        Medium::Gpu => 0,
        Medium::Cpu => 1,
    }
}

impl KvIndex {
    /// An index for `workers` workers without data parallelism.
    pub fn new(workers: usize) -> Self {
        Self::with_ranks(workers, 1)
    }

    /// An index for `workers` workers of `ranks` data-parallel ranks each.
    pub fn with_ranks(workers: usize, ranks: usize) -> Self {
        assert!(ranks >= 1, "a worker has at least one rank");
        assert!(
            workers * ranks <= MAX_WORKERS,
            "at most {MAX_WORKERS} workers × ranks"
        );
        KvIndex {
            holders: FxHashMap::default(),
            counts: vec![0; workers * ranks],
            ranks,
        }
    }

    /// Data-parallel ranks per worker.
    pub fn ranks(&self) -> usize {
        self.ranks
    }

    /// Adds a slot for one more worker (the pool's slots are append-only).
    pub fn add_worker(&mut self) {
        assert!(
            self.counts.len() + self.ranks <= MAX_WORKERS,
            "at most {MAX_WORKERS} workers × ranks"
        );
        self.counts.extend(std::iter::repeat_n(0, self.ranks));
    }

    /// Blocks indexed for `worker`, over its ranks and tiers (a block in both tiers counts
    /// twice).
    pub fn num_blocks(&self, worker: usize) -> usize {
        self.counts[worker * self.ranks..(worker + 1) * self.ranks]
            .iter()
            .sum()
    }

    /// Applies one event of `worker`'s data-parallel rank `rank` (0 without DP). An event of
    /// a rank the index does not have is ignored, and the caller is told.
    pub fn apply(&mut self, worker: usize, rank: usize, event: &KvEvent) -> bool {
        if rank >= self.ranks {
            return false;
        }
        let slot = worker * self.ranks + rank;
        self.apply_slot(slot, event);
        true
    }

    fn apply_slot(&mut self, slot: usize, event: &KvEvent) {
        let bit = 1u64 << slot;
        match event {
            KvEvent::BlockStored {
                block_hashes,
                medium,
                ..
            } => {
                let t = tier(*medium);
                for &h in block_hashes {
                    let m = &mut self.holders.entry(h).or_default()[t];
                    if *m & bit == 0 {
                        *m |= bit;
                        self.counts[slot] += 1;
                    }
                }
            }
            KvEvent::BlockRemoved {
                block_hashes,
                medium,
            } => {
                let t = tier(*medium);
                for h in block_hashes {
                    if let Some(m) = self.holders.get_mut(h)
                        && m[t] & bit != 0
                    {
                        m[t] &= !bit;
                        self.counts[slot] -= 1;
                        if *m == [0, 0] {
                            self.holders.remove(h);
                        }
                    }
                }
            }
            KvEvent::AllBlocksCleared => self.clear_mask(1u64 << slot),
        }
    }

    /// Forgets everything about `worker`, all its ranks (before a snapshot, or when it
    /// restarts). It walks the whole index; that is rare, where events are per step.
    pub fn clear(&mut self, worker: usize) {
        let mask = (u64::MAX >> (64 - self.ranks)) << (worker * self.ranks);
        self.clear_mask(mask);
    }

    fn clear_mask(&mut self, mask: u64) {
        self.holders.retain(|_, m| {
            m[0] &= !mask;
            m[1] &= !mask;
            *m != [0, 0]
        });
        for (i, c) in self.counts.iter_mut().enumerate() {
            if mask & (1u64 << i) != 0 {
                *c = 0;
            }
        }
    }

    /// For each target (worker w, rank r at `w × ranks + r`), how many leading blocks of
    /// `seq_hashes` it holds, in either tier, and in which.
    pub fn overlaps(&self, seq_hashes: &[u64]) -> Vec<Overlap> {
        let mut out = vec![Overlap::default(); self.counts.len()];
        let mut active = u64::MAX;
        for h in seq_hashes {
            let [gpu, cpu] = self.holders.get(h).copied().unwrap_or_default();
            let m = (gpu | cpu) & active;
            if m == 0 {
                break;
            }
            let mut bits = m;
            while bits != 0 {
                let t = bits.trailing_zeros() as usize;
                if gpu & (1u64 << t) != 0 {
                    out[t].device += 1;
                } else {
                    out[t].host += 1;
                }
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
            medium: Medium::Gpu,
        }
    }

    fn blocks(o: Vec<Overlap>) -> Vec<usize> {
        o.into_iter().map(Overlap::blocks).collect()
    }

    #[test]
    fn overlap_counts_leading_blocks_per_worker() {
        let mut ix = KvIndex::new(3);
        ix.apply(0, 0, &stored(&[1, 2, 3]));
        ix.apply(1, 0, &stored(&[1, 2]));
        ix.apply(2, 0, &stored(&[2, 3]));
        assert_eq!(blocks(ix.overlaps(&[1, 2, 3, 4])), vec![3, 2, 0]);
        ix.apply(
            0,
            0,
            &KvEvent::BlockRemoved {
                block_hashes: vec![2],
                medium: Medium::Gpu,
            },
        );
        assert_eq!(blocks(ix.overlaps(&[1, 2, 3])), vec![1, 2, 0]);
        assert!(!ix.apply(1, 1, &stored(&[9])), "no rank 1 without DP");
        ix.apply(1, 0, &KvEvent::AllBlocksCleared);
        assert_eq!(blocks(ix.overlaps(&[1, 2, 3])), vec![1, 0, 0]);
        assert_eq!((ix.num_blocks(0), ix.num_blocks(1)), (2, 0));
        ix.clear(0);
        ix.clear(2);
        assert!(ix.holders.is_empty());
    }

    #[test]
    fn ranks_of_one_worker_are_separate_caches() {
        // Two workers of four ranks: worker 1's rank 2 holds a conversation, its rank 0 the
        // system prompt only.
        let mut ix = KvIndex::with_ranks(2, 4);
        ix.apply(1, 2, &stored(&[1, 2, 3]));
        ix.apply(1, 0, &stored(&[1]));
        ix.apply(0, 3, &stored(&[1, 2]));
        let o = blocks(ix.overlaps(&[1, 2, 3, 4]));
        assert_eq!(o.len(), 8);
        assert_eq!((o[4 + 2], o[4], o[3]), (3, 1, 2));
        assert_eq!((ix.num_blocks(0), ix.num_blocks(1)), (2, 4));
        // A rank's AllBlocksCleared leaves its siblings alone; clearing the worker drops all.
        ix.apply(1, 0, &KvEvent::AllBlocksCleared);
        assert_eq!(blocks(ix.overlaps(&[1, 2, 3]))[4 + 2], 3);
        ix.clear(1);
        assert_eq!(ix.num_blocks(1), 0);
        assert_eq!(blocks(ix.overlaps(&[1, 2]))[3], 2);
        ix.add_worker();
        assert_eq!(blocks(ix.overlaps(&[1])).len(), 12);
    }

    #[test]
    fn host_blocks_extend_the_run_and_are_told_apart() {
        let mut ix = KvIndex::new(2);
        ix.apply(0, 0, &stored(&[1]));
        let host = |h: &[u64]| KvEvent::BlockStored {
            block_hashes: h.to_vec(),
            parent_block_hash: None,
            token_ids: vec![],
            block_size: 1,
            medium: Medium::Cpu,
        };
        ix.apply(0, 0, &host(&[2, 3]));
        ix.apply(1, 0, &host(&[1, 2]));
        let o = ix.overlaps(&[1, 2, 3, 4]);
        assert_eq!(o[0], Overlap { device: 1, host: 2 });
        assert_eq!(o[1], Overlap { device: 0, host: 2 });
        assert_eq!(o[0].credit(0.75), 2.5);
        // Onboarding moves a block between tiers; removing it from one keeps the other.
        ix.apply(0, 0, &stored(&[2]));
        ix.apply(
            0,
            0,
            &KvEvent::BlockRemoved {
                block_hashes: vec![2],
                medium: Medium::Cpu,
            },
        );
        assert_eq!(ix.overlaps(&[1, 2, 3])[0], Overlap { device: 2, host: 1 });
        assert_eq!(ix.num_blocks(0), 3);
    }
}
