//! The block pool: reference counts, a free list that doubles as the LRU of cached blocks,
//! the hash index of the prefix cache, and the optional host tier it offloads evicted blocks to.
//!
//! Invariants (checked by [`BlockPool::check_invariants`]):
//! - a block is in the free list exactly when its reference count is zero;
//! - a block has a hash exactly when the hash index maps that hash to it;
//! - the free list holds uncached blocks first, then cached ones from least to most recently
//!   used, so allocation takes empty blocks before it evicts anything;
//! - a hash is held by at most one tier: onboarding moves it from the host tier to the device,
//!   offloading from the device to the host, and computing a block again on the device drops
//!   the host's copy. The tiers' ids are apart (blocks and slots), so no memory is ever owned
//!   by both.
//!
//! Copies between the tiers are queued in the order the pool decides them
//! ([`BlockPool::drain_copies`]) and must run in that order, before the step whose
//! allocations queued them writes any KV: an offload reads a block that the step is about to
//! overwrite, and an onboard may write a block whose old contents an earlier offload saves, or
//! read a slot that a later offload of the same step reuses.

use rustc_hash::FxHashMap;

use super::events::{EventDetail, KvEvent, Medium};
use super::host_tier::{HostTier, SlotId};
use super::lru::LruList;

/// Index of a block in the pool (and in every layer's K/V tensors).
pub type BlockId = u32;

/// One copy between the tiers, of one block's KV on every layer and rank.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KvCopy {
    /// Device block to host slot (the block was evicted from the device tier).
    Offload {
        /// The device block, read before the step writes it.
        block: BlockId,
        /// The host slot written.
        slot: SlotId,
    },
    /// Host slot to device block (a prefix hit in the host tier).
    Onboard {
        /// The host slot read.
        slot: SlotId,
        /// The device block written, before the step's attention reads it.
        block: BlockId,
    },
}

impl KvCopy {
    /// The device block, the host slot, and whether the bytes go to the host (an offload).
    pub fn parts(self) -> (BlockId, SlotId, bool) {
        match self {
            KvCopy::Offload { block, slot } => (block, slot, true),
            KvCopy::Onboard { slot, block } => (block, slot, false),
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Block {
    ref_cnt: u32,
    /// Sequence hash while the block is in the prefix cache (its tokens are in the arena).
    cached: Option<u64>,
    /// Sequence hash of the block before it, while cached (for the host tier's events).
    parent: Option<u64>,
}

/// Counters of the pool and its prefix cache.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Blocks in the pool.
    pub total_blocks: usize,
    /// Blocks that can be allocated (unused, including evictable cached ones).
    pub free_blocks: usize,
    /// Blocks holding a cached prefix (used or not).
    pub cached_blocks: usize,
    /// Prompt tokens looked up in the prefix cache.
    pub query_tokens: u64,
    /// Prompt tokens found there, in either tier.
    pub hit_tokens: u64,
    /// Slots of the host tier (0: off).
    pub host_blocks: usize,
    /// Host slots holding a block.
    pub host_cached_blocks: usize,
    /// Prompt tokens found in the host tier (part of `hit_tokens`).
    pub host_hit_tokens: u64,
    /// Blocks copied to the host tier.
    pub offloaded_blocks: u64,
    /// Blocks copied back from it.
    pub onboarded_blocks: u64,
}

/// Fixed set of KV blocks with reference counts and a prefix cache.
#[derive(Debug)]
pub struct BlockPool {
    blocks: Vec<Block>,
    free: LruList,
    block_size: usize,
    index: FxHashMap<u64, BlockId>,
    /// Tokens of every block, `block_size` per block, so that caching a block allocates
    /// nothing; valid while the block is cached.
    tokens: Vec<u32>,
    host: Option<HostTier>,
    copies: Vec<KvCopy>,
    /// Blocks entered into the cache since the last [`BlockPool::commit_cached`]: their KV is
    /// written by a step that has not run yet.
    uncommitted: Vec<(BlockId, u64)>,
    events: Vec<KvEvent>,
    detail: EventDetail,
    pub(crate) query_tokens: u64,
    pub(crate) hit_tokens: u64,
    pub(crate) host_hit_tokens: u64,
    offloaded: u64,
    onboarded: u64,
}

impl BlockPool {
    /// A pool of `num_blocks` empty blocks of `block_size` tokens, without a host tier,
    /// recording its events in `detail`.
    pub fn new(num_blocks: usize, block_size: usize, detail: EventDetail) -> Self {
        BlockPool {
            blocks: vec![Block::default(); num_blocks],
            free: LruList::full(num_blocks),
            block_size,
            index: FxHashMap::default(),
            // Zeroed pages are mapped lazily: a large pool costs memory only as it caches.
            tokens: vec![0; num_blocks * block_size],
            host: None,
            copies: Vec::new(),
            uncommitted: Vec::new(),
            events: Vec::new(),
            detail,
            query_tokens: 0,
            hit_tokens: 0,
            host_hit_tokens: 0,
            offloaded: 0,
            onboarded: 0,
        }
    }

    /// Adds a host tier of `slots` blocks (0: none) that evicted cached blocks go to.
    pub fn with_host_tier(mut self, slots: usize) -> Self {
        self.host = (slots > 0).then(|| HostTier::new(slots, self.block_size));
        self
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks that an allocation can take now.
    pub fn num_free(&self) -> usize {
        self.free.len()
    }

    /// Reference count of a block.
    pub fn ref_count(&self, id: BlockId) -> u32 {
        self.blocks[id as usize].ref_cnt
    }

    /// The cached block holding exactly `tokens` under sequence hash `hash`, if any.
    pub fn lookup(&self, hash: u64, tokens: &[u32]) -> Option<BlockId> {
        let id = *self.index.get(&hash)?;
        // A hash hit is only trusted when the tokens agree, so a collision never serves wrong KV.
        (self.blocks[id as usize].cached == Some(hash) && self.block_tokens(id) == tokens)
            .then_some(id)
    }

    /// The host slot holding exactly `tokens` under `hash`, if there is a host tier and it does.
    pub fn lookup_host(&self, hash: u64, tokens: &[u32]) -> Option<SlotId> {
        self.host.as_ref()?.lookup(hash, tokens)
    }

    /// Takes a reference on each block (prefix-cache hits), pulling unused ones off the free list.
    pub fn touch(&mut self, ids: &[BlockId]) {
        for &id in ids {
            if self.blocks[id as usize].ref_cnt == 0 {
                self.free.unlink(id);
            }
            self.blocks[id as usize].ref_cnt += 1;
        }
    }

    /// Keeps a host hit's slot from being reused by the offloads of the allocation that makes
    /// room for it; [`BlockPool::onboard`] must follow.
    pub fn pin_host(&mut self, slot: SlotId) {
        self.host
            .as_mut()
            .expect("host hits need a host tier")
            .pin(slot);
    }

    /// Queues the copy of host `slot` (holding `hash`) into the freshly allocated `block` and
    /// moves the hash out of the host tier; the block enters the device cache with the rest of
    /// its sequence's full blocks.
    pub fn onboard(&mut self, slot: SlotId, hash: u64, block: BlockId) {
        let host = self.host.as_mut().expect("host hits need a host tier");
        let freed = host.remove(hash);
        debug_assert_eq!(freed, Some(slot), "onboarded slot holds its hash");
        self.copies.push(KvCopy::Onboard { slot, block });
        self.onboarded += 1;
        self.emit_removed(vec![hash], Medium::Cpu);
    }

    /// Allocates `n` blocks with reference count 1, evicting least recently used cached blocks
    /// (to the host tier if there is one) if needed; `None` (and no change) when fewer than
    /// `n` are free.
    pub fn allocate(&mut self, n: usize) -> Option<Vec<BlockId>> {
        if n > self.free.len() {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        let mut evicted = Vec::new();
        for _ in 0..n {
            let id = self.free.front().expect("free count checked above");
            self.free.unlink(id);
            let b = &mut self.blocks[id as usize];
            if let Some(hash) = b.cached.take() {
                let parent = b.parent.take();
                self.index.remove(&hash);
                evicted.push((id, hash, parent));
            }
            self.blocks[id as usize].ref_cnt = 1;
            out.push(id);
        }
        if !evicted.is_empty() {
            self.emit_removed(evicted.iter().map(|e| e.1).collect(), Medium::Gpu);
            for (id, hash, parent) in evicted {
                self.offload(id, hash, parent);
            }
        }
        Some(out)
    }

    /// Saves an evicted block in the host tier, if there is one with a slot to spare.
    fn offload(&mut self, block: BlockId, hash: u64, parent: Option<u64>) {
        let bs = self.block_size;
        let Some(host) = self.host.as_mut() else {
            return;
        };
        let tokens = &self.tokens[block as usize * bs..(block as usize + 1) * bs];
        let Some((slot, gone)) = host.store(hash, tokens) else {
            return;
        };
        let token_ids = self.event_tokens(tokens);
        self.copies.push(KvCopy::Offload { block, slot });
        self.offloaded += 1;
        if let Some(gone) = gone {
            self.emit_removed(vec![gone.0], Medium::Cpu);
        }
        self.emit(KvEvent::BlockStored {
            block_hashes: vec![hash],
            parent_block_hash: parent,
            token_ids,
            block_size: bs,
            medium: Medium::Cpu,
        });
    }

    /// Drops one reference on each block; blocks reaching zero return to the free list.
    /// Pass a sequence's blocks tail first so that its prefix is evicted last.
    pub fn free(&mut self, ids: impl IntoIterator<Item = BlockId>) {
        for id in ids {
            let b = &mut self.blocks[id as usize];
            assert!(b.ref_cnt > 0, "double free of block {id}");
            b.ref_cnt -= 1;
            if b.ref_cnt == 0 {
                if b.cached.is_some() {
                    self.free.push_back(id);
                } else {
                    self.free.push_front(id);
                }
            }
        }
    }

    /// Enters full blocks into the prefix cache. `hashes[i]` and the `i`-th `block_size` tokens
    /// of `tokens` describe `ids[i]`; `parent` is the sequence hash of the block before `ids[0]`.
    /// A block whose hash is already cached elsewhere stays out of the index; one the host
    /// tier holds is dropped there (the device copy is the one that is read).
    pub fn cache_full_blocks(
        &mut self,
        ids: &[BlockId],
        hashes: &[u64],
        tokens: &[u32],
        parent: Option<u64>,
    ) {
        let bs = self.block_size;
        let mut pending: Option<(Option<u64>, Vec<u64>, Vec<u32>)> = None;
        let (record, with_tokens) = (
            self.detail != EventDetail::Off,
            self.detail == EventDetail::Full,
        );
        let mut prev = parent;
        let mut dropped_from_host = Vec::new();
        for (i, (&id, &hash)) in ids.iter().zip(hashes).enumerate() {
            let block_tokens = &tokens[i * bs..(i + 1) * bs];
            let fresh =
                self.blocks[id as usize].cached.is_none() && !self.index.contains_key(&hash);
            if fresh {
                if let Some(host) = self.host.as_mut()
                    && host.remove(hash).is_some()
                {
                    dropped_from_host.push(hash);
                }
                let b = &mut self.blocks[id as usize];
                b.cached = Some(hash);
                b.parent = prev;
                self.uncommitted.push((id, hash));
                self.tokens[id as usize * bs..(id as usize + 1) * bs].copy_from_slice(block_tokens);
                self.index.insert(hash, id);
                if record {
                    let run = pending.get_or_insert_with(|| (prev, Vec::new(), Vec::new()));
                    run.1.push(hash);
                    if with_tokens {
                        run.2.extend_from_slice(block_tokens);
                    }
                }
            } else if let Some(run) = pending.take() {
                self.emit_stored(run);
            }
            prev = Some(hash);
        }
        self.emit_removed(dropped_from_host, Medium::Cpu);
        if let Some(run) = pending {
            self.emit_stored(run);
        }
    }

    /// Drops every cached block of both tiers; refused (false) while any block is in use.
    pub fn reset_prefix_cache(&mut self) -> bool {
        if self.free.len() != self.blocks.len() {
            return false;
        }
        for b in &mut self.blocks {
            b.cached = None;
            b.parent = None;
        }
        self.index.clear();
        if let Some(host) = self.host.as_mut() {
            host.clear();
        }
        self.emit(KvEvent::AllBlocksCleared);
        true
    }

    /// The step that writes the blocks cached since the last call has run: they hold their KV.
    pub fn commit_cached(&mut self) {
        self.uncommitted.clear();
    }

    /// The step that was to write the blocks cached since the last commit did not run: they
    /// leave the cache, so that no later hit reads KV that was never written.
    pub fn forget_uncommitted(&mut self) {
        let mut gone = Vec::new();
        for (id, hash) in std::mem::take(&mut self.uncommitted) {
            if self.blocks[id as usize].cached == Some(hash) {
                self.uncache(id);
                gone.push(hash);
            }
        }
        self.emit_removed(gone, Medium::Gpu);
    }

    /// Takes a block out of the device cache; a free one moves to the front of the free
    /// list, where uncached blocks belong.
    fn uncache(&mut self, id: BlockId) {
        let b = &mut self.blocks[id as usize];
        if let Some(hash) = b.cached.take() {
            b.parent = None;
            self.index.remove(&hash);
            if b.ref_cnt == 0 {
                self.free.unlink(id);
                self.free.push_front(id);
            }
        }
    }

    /// Takes the copies queued since the last call, in the order they must run.
    pub fn drain_copies(&mut self) -> Vec<KvCopy> {
        std::mem::take(&mut self.copies)
    }

    /// Forgets what failed offloads were to carry, so that nothing reads it: their slots leave
    /// the host tier. (An onboarded block is cached like a computed one, so a failed onboard
    /// is undone by [`BlockPool::forget_uncommitted`] with the rest of its step.)
    pub fn forget_offloads(&mut self, copies: &[KvCopy]) {
        let Some(host) = self.host.as_mut() else {
            return;
        };
        let mut gone = Vec::new();
        for c in copies {
            if let KvCopy::Offload { slot, .. } = *c
                && let Some(hash) = host.hash_of(slot)
            {
                host.remove(hash);
                gone.push(hash);
            }
        }
        self.emit_removed(gone, Medium::Cpu);
    }

    /// Records events in `detail` from now on.
    pub fn set_event_detail(&mut self, detail: EventDetail) {
        self.detail = detail;
    }

    /// Takes the events recorded since the last call.
    pub fn drain_events(&mut self) -> Vec<KvEvent> {
        std::mem::take(&mut self.events)
    }

    /// Counters of the pool.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            total_blocks: self.blocks.len(),
            free_blocks: self.free.len(),
            cached_blocks: self.index.len(),
            query_tokens: self.query_tokens,
            hit_tokens: self.hit_tokens,
            host_blocks: self.host.as_ref().map_or(0, HostTier::num_slots),
            host_cached_blocks: self.host.as_ref().map_or(0, HostTier::num_cached),
            host_hit_tokens: self.host_hit_tokens,
            offloaded_blocks: self.offloaded,
            onboarded_blocks: self.onboarded,
        }
    }

    /// Verifies the invariants in the module docs; an error names the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        let order = self.free.checked_order()?;
        let mut in_cached_part = false;
        for &id in &order {
            let b = &self.blocks[id as usize];
            if b.ref_cnt != 0 {
                return Err(format!("block {id} is free with ref count {}", b.ref_cnt));
            }
            if b.cached.is_some() {
                in_cached_part = true;
            } else if in_cached_part {
                return Err(format!("uncached free block {id} after cached ones"));
            }
        }
        for (i, b) in self.blocks.iter().enumerate() {
            if b.ref_cnt == 0 && !self.free.contains(i as u32) {
                return Err(format!("block {i} has no references but is not free"));
            }
            if let Some(h) = &b.cached
                && self.index.get(h) != Some(&(i as u32))
            {
                return Err(format!("block {i} is cached but not indexed"));
            }
        }
        if self.index.len() != self.blocks.iter().filter(|b| b.cached.is_some()).count() {
            return Err("hash index maps blocks that are not cached".into());
        }
        if let Some(host) = &self.host {
            host.check_invariants()?;
            if let Some(h) = self.index.keys().find(|h| host.contains(**h)) {
                return Err(format!("hash {h:#x} is held by both tiers"));
            }
        }
        Ok(())
    }

    /// Checks that nothing is in use: every block is free with reference count zero.
    pub fn check_all_free(&self) -> Result<(), String> {
        self.check_invariants()?;
        match self.blocks.iter().position(|b| b.ref_cnt != 0) {
            Some(i) => Err(format!(
                "block {i} still has {} references",
                self.blocks[i].ref_cnt
            )),
            None => Ok(()),
        }
    }

    /// Every cached device block and its hash, then every cached host slot and its hash.
    #[cfg(test)]
    #[allow(clippy::type_complexity)]
    pub(crate) fn cached_by_tier(&self) -> (Vec<(BlockId, u64)>, Vec<(SlotId, u64)>) {
        let device = self
            .blocks
            .iter()
            .enumerate()
            .filter_map(|(i, b)| b.cached.map(|h| (i as BlockId, h)))
            .collect();
        let host = self.host.as_ref().map_or_else(Vec::new, |t| {
            (0..t.num_slots() as SlotId)
                .filter_map(|s| t.hash_of(s).map(|h| (s, h)))
                .collect()
        });
        (device, host)
    }

    fn block_tokens(&self, id: BlockId) -> &[u32] {
        let bs = self.block_size;
        &self.tokens[id as usize * bs..(id as usize + 1) * bs]
    }

    fn emit_stored(&mut self, (parent, hashes, tokens): (Option<u64>, Vec<u64>, Vec<u32>)) {
        let block_size = self.block_size;
        self.emit(KvEvent::BlockStored {
            block_hashes: hashes,
            parent_block_hash: parent,
            token_ids: tokens,
            block_size,
            medium: Medium::Gpu,
        });
    }

    /// A BlockRemoved of `hashes` from `medium`, unless there are none.
    fn emit_removed(&mut self, hashes: Vec<u64>, medium: Medium) {
        if !hashes.is_empty() {
            self.emit(KvEvent::BlockRemoved {
                block_hashes: hashes,
                medium,
            });
        }
    }

    fn emit(&mut self, e: KvEvent) {
        if self.detail != EventDetail::Off {
            self.events.push(e);
        }
    }

    /// A `BlockStored`'s token ids for `tokens`, in the pool's detail.
    fn event_tokens(&self, tokens: &[u32]) -> Vec<u32> {
        match self.detail {
            EventDetail::Full => tokens.to_vec(),
            EventDetail::Hashes | EventDetail::Off => Vec::new(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_free_and_evict_in_lru_order() {
        let mut p = BlockPool::new(4, 2, EventDetail::Full);
        let a = p.allocate(2).unwrap();
        let b = p.allocate(2).unwrap();
        assert!(p.allocate(1).is_none());
        p.cache_full_blocks(&a, &[10, 11], &[1, 2, 3, 4], None);
        p.cache_full_blocks(&b[..1], &[20], &[5, 6], None);
        p.check_invariants().unwrap();
        p.free(a.iter().rev().copied());
        p.free(b.iter().rev().copied());
        p.check_all_free().unwrap();
        assert_eq!(p.lookup(10, &[1, 2]), Some(a[0]));
        assert_eq!(p.lookup(10, &[1, 3]), None, "tokens are verified");
        // The uncached block goes first, then LRU: a[1] (freed tail first), a[0], b[0].
        let got = p.allocate(3).unwrap();
        assert_eq!(got, vec![b[1], a[1], a[0]]);
        assert_eq!(p.lookup(10, &[1, 2]), None);
        assert_eq!(p.lookup(20, &[5, 6]), Some(b[0]));
        let ev = p.drain_events();
        assert_eq!(
            ev[0],
            KvEvent::BlockStored {
                block_hashes: vec![10, 11],
                parent_block_hash: None,
                token_ids: vec![1, 2, 3, 4],
                block_size: 2,
                medium: Medium::Gpu,
            }
        );
        assert_eq!(
            ev.last().unwrap(),
            &KvEvent::BlockRemoved {
                block_hashes: vec![11, 10],
                medium: Medium::Gpu,
            }
        );
        p.touch(&[b[0]]);
        p.check_invariants().unwrap();
        p.free(got.into_iter().chain([b[0]]));
        p.check_all_free().unwrap();
        assert!(p.reset_prefix_cache());
        assert_eq!(p.drain_events().last(), Some(&KvEvent::AllBlocksCleared));
    }

    #[test]
    fn event_detail_drops_tokens_or_everything() {
        let run = |detail| {
            let mut p = BlockPool::new(3, 2, detail).with_host_tier(1);
            let a = p.allocate(3).unwrap();
            p.cache_full_blocks(&a[..2], &[10, 11], &[1, 2, 3, 4], Some(9));
            p.free(a.iter().rev().copied());
            // Evicts both to the one host slot: a removal, a store there, the slot's
            // removal and a store again.
            p.allocate(3).unwrap();
            p.drain_events()
        };
        let full = run(EventDetail::Full);
        let hashes = run(EventDetail::Hashes);
        assert_eq!(full.len(), 5, "{full:?}");
        assert_eq!(hashes.len(), full.len());
        let mut stored = 0;
        for (f, h) in full.iter().zip(&hashes) {
            match (f, h) {
                (
                    KvEvent::BlockStored {
                        block_hashes: fh,
                        parent_block_hash: fp,
                        token_ids: ft,
                        medium: fm,
                        ..
                    },
                    KvEvent::BlockStored {
                        block_hashes: hh,
                        parent_block_hash: hp,
                        token_ids: ht,
                        medium: hm,
                        ..
                    },
                ) => {
                    assert_eq!((fh, fp, fm), (hh, hp, hm));
                    assert!(!ft.is_empty() && ht.is_empty(), "{ft:?} {ht:?}");
                    stored += 1;
                }
                _ => assert_eq!(f, h),
            }
        }
        assert_eq!(stored, 3, "the device store and the host ones");
        assert!(run(EventDetail::Off).is_empty());
    }

    #[test]
    fn shared_blocks_need_every_reference_dropped() {
        let mut p = BlockPool::new(2, 1, EventDetail::Off);
        let a = p.allocate(1).unwrap();
        p.cache_full_blocks(&a, &[7], &[3], None);
        p.touch(&a);
        assert_eq!(p.ref_count(a[0]), 2);
        p.free(a.clone());
        assert_eq!(p.num_free(), 1);
        assert!(p.check_all_free().is_err());
        assert!(!p.reset_prefix_cache());
        p.free(a);
        p.check_all_free().unwrap();
        assert!(p.drain_events().is_empty(), "events off");
    }
}
