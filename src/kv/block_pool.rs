//! The block pool: reference counts, a free list that doubles as the LRU of cached blocks,
//! and the hash index of the prefix cache.
//!
//! Invariants (checked by [`BlockPool::check_invariants`]):
//! - a block is in the free list exactly when its reference count is zero;
//! - a block has a hash exactly when the hash index maps that hash to it;
//! - the free list holds uncached blocks first, then cached ones from least to most recently
//!   used, so allocation takes empty blocks before it evicts anything.

use rustc_hash::FxHashMap;

use super::events::KvEvent;

/// Index of a block in the pool (and in every layer's K/V tensors).
pub type BlockId = u32;

const NIL: u32 = u32::MAX;

#[derive(Debug, Clone)]
struct Block {
    ref_cnt: u32,
    /// Sequence hash while the block is in the prefix cache (its tokens are in the arena).
    cached: Option<u64>,
    prev: u32,
    next: u32,
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
    /// Prompt tokens found there.
    pub hit_tokens: u64,
}

/// Fixed set of KV blocks with reference counts and a prefix cache.
#[derive(Debug)]
pub struct BlockPool {
    blocks: Vec<Block>,
    block_size: usize,
    head: u32,
    tail: u32,
    num_free: usize,
    index: FxHashMap<u64, BlockId>,
    /// Tokens of every block, `block_size` per block, so that caching a block allocates
    /// nothing; valid while the block is cached.
    tokens: Vec<u32>,
    events: Vec<KvEvent>,
    record_events: bool,
    pub(crate) query_tokens: u64,
    pub(crate) hit_tokens: u64,
}

impl BlockPool {
    /// A pool of `num_blocks` empty blocks of `block_size` tokens.
    pub fn new(num_blocks: usize, block_size: usize, record_events: bool) -> Self {
        assert!(num_blocks < NIL as usize, "too many blocks");
        let n = num_blocks as u32;
        let blocks = (0..n)
            .map(|i| Block {
                ref_cnt: 0,
                cached: None,
                prev: if i == 0 { NIL } else { i - 1 },
                next: if i + 1 == n { NIL } else { i + 1 },
            })
            .collect();
        BlockPool {
            blocks,
            block_size,
            head: if n == 0 { NIL } else { 0 },
            tail: if n == 0 { NIL } else { n - 1 },
            num_free: num_blocks,
            index: FxHashMap::default(),
            // Zeroed pages are mapped lazily: a large pool costs memory only as it caches.
            tokens: vec![0; num_blocks * block_size],
            events: Vec::new(),
            record_events,
            query_tokens: 0,
            hit_tokens: 0,
        }
    }

    /// Tokens per block.
    pub fn block_size(&self) -> usize {
        self.block_size
    }

    /// Blocks that an allocation can take now.
    pub fn num_free(&self) -> usize {
        self.num_free
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

    /// Takes a reference on each block (prefix-cache hits), pulling unused ones off the free list.
    pub fn touch(&mut self, ids: &[BlockId]) {
        for &id in ids {
            if self.blocks[id as usize].ref_cnt == 0 {
                self.unlink(id);
            }
            self.blocks[id as usize].ref_cnt += 1;
        }
    }

    /// Allocates `n` blocks with reference count 1, evicting least recently used cached blocks
    /// if needed; `None` (and no change) when fewer than `n` are free.
    pub fn allocate(&mut self, n: usize) -> Option<Vec<BlockId>> {
        if n > self.num_free {
            return None;
        }
        let mut out = Vec::with_capacity(n);
        let mut evicted = Vec::new();
        for _ in 0..n {
            let id = self.head;
            self.unlink(id);
            let b = &mut self.blocks[id as usize];
            if let Some(hash) = b.cached.take() {
                self.index.remove(&hash);
                evicted.push(hash);
            }
            b.ref_cnt = 1;
            out.push(id);
        }
        if !evicted.is_empty() {
            self.emit(KvEvent::BlockRemoved {
                block_hashes: evicted,
            });
        }
        Some(out)
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
                    self.push_back(id);
                } else {
                    self.push_front(id);
                }
            }
        }
    }

    /// Enters full blocks into the prefix cache. `hashes[i]` and the `i`-th `block_size` tokens
    /// of `tokens` describe `ids[i]`; `parent` is the sequence hash of the block before `ids[0]`.
    /// A block whose hash is already cached elsewhere stays out of the index.
    pub fn cache_full_blocks(
        &mut self,
        ids: &[BlockId],
        hashes: &[u64],
        tokens: &[u32],
        parent: Option<u64>,
    ) {
        let bs = self.block_size;
        let mut pending: Option<(Option<u64>, Vec<u64>, Vec<u32>)> = None;
        let mut prev = parent;
        for (i, (&id, &hash)) in ids.iter().zip(hashes).enumerate() {
            let block_tokens = &tokens[i * bs..(i + 1) * bs];
            let fresh =
                self.blocks[id as usize].cached.is_none() && !self.index.contains_key(&hash);
            if fresh {
                self.blocks[id as usize].cached = Some(hash);
                self.tokens[id as usize * bs..(id as usize + 1) * bs].copy_from_slice(block_tokens);
                self.index.insert(hash, id);
                let run = pending.get_or_insert_with(|| (prev, Vec::new(), Vec::new()));
                run.1.push(hash);
                run.2.extend_from_slice(block_tokens);
            } else if let Some(run) = pending.take() {
                self.emit_stored(run);
            }
            prev = Some(hash);
        }
        if let Some(run) = pending {
            self.emit_stored(run);
        }
    }

    /// Drops every cached block from the index; refused (false) while any block is in use.
    pub fn reset_prefix_cache(&mut self) -> bool {
        if self.num_free != self.blocks.len() {
            return false;
        }
        for b in &mut self.blocks {
            b.cached = None;
        }
        self.index.clear();
        self.emit(KvEvent::AllBlocksCleared);
        true
    }

    /// Takes the events recorded since the last call.
    pub fn drain_events(&mut self) -> Vec<KvEvent> {
        std::mem::take(&mut self.events)
    }

    /// Counters of the pool.
    pub fn stats(&self) -> PoolStats {
        PoolStats {
            total_blocks: self.blocks.len(),
            free_blocks: self.num_free,
            cached_blocks: self.index.len(),
            query_tokens: self.query_tokens,
            hit_tokens: self.hit_tokens,
        }
    }

    /// Verifies the invariants in the module docs; an error names the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        let mut seen = vec![false; self.blocks.len()];
        let (mut cur, mut count, mut prev, mut in_cached_part) = (self.head, 0usize, NIL, false);
        while cur != NIL {
            let b = &self.blocks[cur as usize];
            if seen[cur as usize] {
                return Err(format!("free list cycles at block {cur}"));
            }
            seen[cur as usize] = true;
            if b.ref_cnt != 0 {
                return Err(format!("block {cur} is free with ref count {}", b.ref_cnt));
            }
            if b.prev != prev {
                return Err(format!("block {cur} has a broken back link"));
            }
            if b.cached.is_some() {
                in_cached_part = true;
            } else if in_cached_part {
                return Err(format!("uncached free block {cur} after cached ones"));
            }
            count += 1;
            prev = cur;
            cur = b.next;
        }
        if prev != self.tail || count != self.num_free {
            return Err(format!(
                "free list holds {count} blocks, counter says {}",
                self.num_free
            ));
        }
        for (i, b) in self.blocks.iter().enumerate() {
            if b.ref_cnt == 0 && !seen[i] {
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
        });
    }

    fn emit(&mut self, e: KvEvent) {
        if self.record_events {
            self.events.push(e);
        }
    }

    fn unlink(&mut self, id: BlockId) {
        let (prev, next) = {
            let b = &self.blocks[id as usize];
            (b.prev, b.next)
        };
        if prev == NIL {
            self.head = next;
        } else {
            self.blocks[prev as usize].next = next;
        }
        if next == NIL {
            self.tail = prev;
        } else {
            self.blocks[next as usize].prev = prev;
        }
        let b = &mut self.blocks[id as usize];
        b.prev = NIL;
        b.next = NIL;
        self.num_free -= 1;
    }

    fn push_back(&mut self, id: BlockId) {
        let tail = self.tail;
        let b = &mut self.blocks[id as usize];
        b.prev = tail;
        b.next = NIL;
        if tail == NIL {
            self.head = id;
        } else {
            self.blocks[tail as usize].next = id;
        }
        self.tail = id;
        self.num_free += 1;
    }

    fn push_front(&mut self, id: BlockId) {
        let head = self.head;
        let b = &mut self.blocks[id as usize];
        b.next = head;
        b.prev = NIL;
        if head == NIL {
            self.tail = id;
        } else {
            self.blocks[head as usize].prev = id;
        }
        self.head = id;
        self.num_free += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocate_free_and_evict_in_lru_order() {
        let mut p = BlockPool::new(4, 2, true);
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
                block_size: 2
            }
        );
        assert_eq!(
            ev.last().unwrap(),
            &KvEvent::BlockRemoved {
                block_hashes: vec![11, 10]
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
    fn shared_blocks_need_every_reference_dropped() {
        let mut p = BlockPool::new(2, 1, false);
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
