//! Per-sequence block tables on top of the pool: prefix lookup, slot allocation, freeing.

use super::block_pool::{BlockId, BlockPool, KvCopy, PoolStats};
use super::events::{EventDetail, KvEvent};
use super::hash::extend_sequence_hashes;
use super::host_tier::SlotId;

/// One block of a cached prefix, in the tier that holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PrefixHit {
    /// A device block, shared as it is.
    Device(BlockId),
    /// A host slot, onboarded into a new device block before the step reads it.
    Host {
        /// The slot.
        slot: SlotId,
        /// Its sequence hash.
        hash: u64,
    },
}

/// One sequence's view of the paged cache.
#[derive(Debug, Clone, Default)]
pub struct BlockTable {
    /// Physical blocks holding the sequence's tokens, in order.
    pub blocks: Vec<BlockId>,
    /// Sequence hashes of the sequence's full blocks (kept across preemption: tokens don't change).
    hashes: Vec<u64>,
    /// Leading blocks already entered into the prefix cache.
    num_cached: usize,
}

impl BlockTable {
    /// Starts an empty table from the sequence hashes of its tokens' leading full blocks
    /// (`kv::hash::extend_sequence_hashes` at the cache's block size), as a KV router
    /// computed them to pick the worker: the prefix lookup hashes only the blocks after them.
    /// False, and no change, if the table is not empty.
    pub fn start_from_hashes(&mut self, hashes: Vec<u64>) -> bool {
        if !(self.blocks.is_empty() && self.hashes.is_empty()) {
            return false;
        }
        self.hashes = hashes;
        true
    }
}

/// Allocates and frees KV blocks for sequences; owns the pool.
#[derive(Debug)]
pub struct KvCacheManager {
    pool: BlockPool,
    block_size: usize,
    prefix_caching: bool,
}

impl KvCacheManager {
    /// A manager of `num_blocks` blocks of `block_size` tokens, recording its events in
    /// `events` (none without a prefix cache: nothing is cached).
    pub fn new(
        num_blocks: usize,
        block_size: usize,
        prefix_caching: bool,
        events: EventDetail,
    ) -> Self {
        let mut m = KvCacheManager {
            pool: BlockPool::new(num_blocks, block_size, EventDetail::Off),
            block_size,
            prefix_caching,
        };
        m.set_event_detail(events);
        m
    }

    /// Records events in `detail` from now on.
    pub fn set_event_detail(&mut self, detail: EventDetail) {
        if self.prefix_caching {
            self.pool.set_event_detail(detail);
        }
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Adds a host tier of `slots` blocks (0: none); it needs the prefix cache.
    pub fn with_host_tier(mut self, slots: usize) -> Self {
        if self.prefix_caching {
            self.pool = self.pool.with_host_tier(slots);
        }
        self
    }

    /// Takes the copies between the tiers queued since the last call, in the order they must
    /// run (before the next forward pass).
    pub fn drain_copies(&mut self) -> Vec<KvCopy> {
        self.pool.drain_copies()
    }

    /// The step has run: the blocks it was to compute hold their KV.
    pub fn commit_cached(&mut self) {
        self.pool.commit_cached()
    }

    /// The step did not run: the blocks it was to compute leave the prefix cache.
    pub fn forget_uncommitted(&mut self) {
        self.pool.forget_uncommitted()
    }

    /// Makes sure nothing reads what failed offloads were to carry.
    pub fn forget_offloads(&mut self, copies: &[KvCopy]) {
        self.pool.forget_offloads(copies)
    }

    /// The pool (read-only: stats and invariant checks).
    pub fn pool(&self) -> &BlockPool {
        &self.pool
    }

    /// Counters of the pool.
    pub fn stats(&self) -> PoolStats {
        self.pool.stats()
    }

    /// Takes the KV events recorded since the last call.
    pub fn drain_events(&mut self) -> Vec<KvEvent> {
        self.pool.drain_events()
    }

    /// Blocks of the longest cached prefix of `tokens` in either tier, full blocks only and
    /// never all of the tokens (the last one is always computed, to produce logits). Takes no
    /// references.
    pub fn find_cached_prefix(&mut self, table: &mut BlockTable, tokens: &[u32]) -> Vec<PrefixHit> {
        if !self.prefix_caching {
            return Vec::new();
        }
        let bs = self.block_size;
        extend_sequence_hashes(&mut table.hashes, tokens, bs);
        let max_blocks = (tokens.len() - 1) / bs;
        let mut hits = Vec::new();
        for (i, &h) in table.hashes.iter().take(max_blocks).enumerate() {
            let block = &tokens[i * bs..(i + 1) * bs];
            if let Some(id) = self.pool.lookup(h, block) {
                hits.push(PrefixHit::Device(id));
            } else if let Some(slot) = self.pool.lookup_host(h, block) {
                hits.push(PrefixHit::Host { slot, hash: h });
            } else {
                break;
            }
        }
        hits
    }

    /// Counts one admitted prompt of `query` tokens of which `hit` came from the prefix cache,
    /// `host_hit` of them from its host tier.
    pub fn record_prefix_lookup(&mut self, query: usize, hit: usize, host_hit: usize) {
        self.pool.query_tokens += query as u64;
        self.pool.hit_tokens += hit as u64;
        self.pool.host_hit_tokens += host_hit as u64;
    }

    /// Makes room for `num_new` more tokens after the `table`'s computed ones, first adopting
    /// the prefix-cache `hits` (which must directly follow the table's blocks; host hits get
    /// new device blocks and queued onboard copies). Returns false, changing nothing, when the
    /// pool is short. Full blocks whose tokens this step computes or onboards enter the prefix
    /// cache now: their KV is written before this step's forward pass reads any of it.
    pub fn allocate_slots(
        &mut self,
        table: &mut BlockTable,
        tokens: &[u32],
        hits: &[PrefixHit],
        num_computed: usize,
        num_new: usize,
    ) -> bool {
        let bs = self.block_size;
        let total = num_computed + hits.len() * bs + num_new;
        debug_assert!(total <= tokens.len());
        let device: Vec<BlockId> = hits
            .iter()
            .filter_map(|h| match h {
                PrefixHit::Device(id) => Some(*id),
                PrefixHit::Host { .. } => None,
            })
            .collect();
        let onboards = hits.len() - device.len();
        let need = total
            .div_ceil(bs)
            .saturating_sub(table.blocks.len() + hits.len())
            + onboards;
        let revived = device
            .iter()
            .filter(|&&id| self.pool.ref_count(id) == 0)
            .count();
        if need + revived > self.pool.num_free() {
            return false;
        }
        self.pool.touch(&device);
        for h in hits {
            if let PrefixHit::Host { slot, .. } = *h {
                self.pool.pin_host(slot);
            }
        }
        let mut fresh = self
            .pool
            .allocate(need)
            .expect("free count checked above")
            .into_iter();
        for h in hits {
            let id = match *h {
                PrefixHit::Device(id) => id,
                PrefixHit::Host { slot, hash } => {
                    let id = fresh.next().expect("one fresh block per host hit");
                    self.pool.onboard(slot, hash, id);
                    id
                }
            };
            table.blocks.push(id);
        }
        table.blocks.extend(fresh);
        if self.prefix_caching {
            let full = total / bs;
            if full > table.num_cached {
                extend_sequence_hashes(&mut table.hashes, &tokens[..full * bs], bs);
                let from = table.num_cached;
                let parent = from.checked_sub(1).map(|p| table.hashes[p]);
                self.pool.cache_full_blocks(
                    &table.blocks[from..full],
                    &table.hashes[from..full],
                    &tokens[from * bs..full * bs],
                    parent,
                );
                table.num_cached = full;
            }
        }
        true
    }

    /// Appends blocks for `num_tokens` more tokens without entering anything into the prefix
    /// cache (KV that is still to arrive); false, changing nothing, when the pool is short.
    pub fn allocate_uncached(&mut self, table: &mut BlockTable, num_tokens: usize) -> bool {
        match self.pool.allocate(num_tokens.div_ceil(self.block_size)) {
            Some(ids) => {
                table.blocks.extend(ids);
                true
            }
            None => false,
        }
    }

    /// Releases every block of the table (tail first, so the prefix stays cached longest).
    pub fn free(&mut self, table: &mut BlockTable) {
        self.pool.free(table.blocks.drain(..).rev());
        table.num_cached = 0;
    }

    /// Drops the whole prefix cache; false while any block is in use.
    pub fn reset_prefix_cache(&mut self) -> bool {
        self.pool.reset_prefix_cache()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefix_hits_share_blocks_and_free_cleanly() {
        let mut m = KvCacheManager::new(8, 4, true, EventDetail::Full);
        let a: Vec<u32> = (0..10).collect();
        let mut ta = BlockTable::default();
        let hits = m.find_cached_prefix(&mut ta, &a);
        assert!(hits.is_empty());
        assert!(m.allocate_slots(&mut ta, &a, &hits, 0, 10));
        assert_eq!(ta.blocks.len(), 3);
        // b shares a's first 8 tokens.
        let mut b = a[..8].to_vec();
        b.extend([50, 51, 52]);
        let mut tb = BlockTable::default();
        let hits = m.find_cached_prefix(&mut tb, &b);
        assert_eq!(
            hits,
            ta.blocks[..2]
                .iter()
                .map(|&b| PrefixHit::Device(b))
                .collect::<Vec<_>>()
        );
        assert!(m.allocate_slots(&mut tb, &b, &hits, 0, 3));
        assert_eq!(m.pool().ref_count(ta.blocks[0]), 2);
        m.free(&mut ta);
        m.free(&mut tb);
        m.pool().check_all_free().unwrap();
        // A prompt that is exactly cached still recomputes its last block's last token.
        let mut tc = BlockTable::default();
        assert_eq!(m.find_cached_prefix(&mut tc, &a[..8]).len(), 1);
    }

    #[test]
    fn refuses_without_changes_when_short() {
        let mut m = KvCacheManager::new(2, 4, true, EventDetail::Off);
        let t: Vec<u32> = (0..12).collect();
        let mut tab = BlockTable::default();
        assert!(!m.allocate_slots(&mut tab, &t, &[], 0, 12));
        assert!(tab.blocks.is_empty());
        assert_eq!(m.stats().free_blocks, 2);
        assert!(m.allocate_slots(&mut tab, &t, &[], 0, 8));
        m.free(&mut tab);
        m.pool().check_all_free().unwrap();
    }
}
