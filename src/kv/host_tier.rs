//! The host tier: blocks the device tier evicted, kept in host memory with their own LRU and
//! hash index. This is bookkeeping only; the bytes live in the executor's host arena, slot `s`
//! at the same offset on every rank.
//!
//! Invariants (checked by [`HostTier::check_invariants`]):
//! - a slot is on the LRU exactly when it is not pinned (an onboard in progress pins it);
//! - a slot has a hash exactly when the index maps that hash to it;
//! - the LRU holds empty slots first, then cached ones from least to most recently stored.

use rustc_hash::FxHashMap;

use super::lru::LruList;

/// Index of a slot in the host tier (and in every rank's host arena).
pub type SlotId = u32;

/// A block the host tier gave up to make room, for the caller's events.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Evicted(pub u64);

/// Fixed set of host slots with an LRU and a hash index.
#[derive(Debug)]
pub struct HostTier {
    /// The hash each slot holds.
    slots: Vec<Option<u64>>,
    lru: LruList,
    index: FxHashMap<u64, SlotId>,
    tokens: Vec<u32>,
    block_size: usize,
}

impl HostTier {
    /// `num_slots` empty slots of `block_size` tokens.
    pub fn new(num_slots: usize, block_size: usize) -> Self {
        HostTier {
            slots: vec![None; num_slots],
            lru: LruList::full(num_slots),
            index: FxHashMap::default(),
            // Zeroed pages are mapped lazily: a large tier costs memory only as it fills.
            tokens: vec![0; num_slots * block_size],
            block_size,
        }
    }

    /// Slots in the tier.
    pub fn num_slots(&self) -> usize {
        self.slots.len()
    }

    /// Slots holding a block.
    pub fn num_cached(&self) -> usize {
        self.index.len()
    }

    /// The slot holding exactly `tokens` under `hash`, if any.
    pub fn lookup(&self, hash: u64, tokens: &[u32]) -> Option<SlotId> {
        let s = *self.index.get(&hash)?;
        (self.slot_tokens(s) == tokens).then_some(s)
    }

    /// Keeps `slot` out of reach of [`HostTier::store`] until [`HostTier::remove`] frees it:
    /// its bytes are about to be copied to the device.
    pub fn pin(&mut self, slot: SlotId) {
        self.lru.unlink(slot);
    }

    /// Stores a block in the least valuable slot (an empty one, else the least recently
    /// stored, which is evicted). `None` when every slot is pinned.
    pub fn store(&mut self, hash: u64, tokens: &[u32]) -> Option<(SlotId, Option<Evicted>)> {
        debug_assert!(!self.index.contains_key(&hash), "stored twice");
        let s = self.lru.front()?;
        self.lru.unlink(s);
        let evicted = self.slots[s as usize].replace(hash).map(|h| {
            self.index.remove(&h);
            Evicted(h)
        });
        let bs = self.block_size;
        self.tokens[s as usize * bs..(s as usize + 1) * bs].copy_from_slice(tokens);
        self.index.insert(hash, s);
        self.lru.push_back(s);
        Some((s, evicted))
    }

    /// Drops `hash` from the tier (onboarded, or computed again on the device), freeing its
    /// slot for reuse first; `None` when the tier does not hold it.
    pub fn remove(&mut self, hash: u64) -> Option<SlotId> {
        let s = self.index.remove(&hash)?;
        self.slots[s as usize] = None;
        if self.lru.contains(s) {
            self.lru.unlink(s);
        }
        self.lru.push_front(s);
        Some(s)
    }

    /// Drops every block (the slots stay).
    pub fn clear(&mut self) {
        self.index.clear();
        for (i, s) in self.slots.iter_mut().enumerate() {
            *s = None;
            if !self.lru.contains(i as u32) {
                self.lru.push_front(i as u32);
            }
        }
    }

    /// The hash `slot` holds, if any.
    pub fn hash_of(&self, slot: SlotId) -> Option<u64> {
        self.slots[slot as usize]
    }

    /// Whether the tier holds `hash`.
    pub fn contains(&self, hash: u64) -> bool {
        self.index.contains_key(&hash)
    }

    /// Verifies the invariants in the module docs; an error names the first violation.
    pub fn check_invariants(&self) -> Result<(), String> {
        let order = self.lru.checked_order()?;
        let mut in_cached_part = false;
        for &s in &order {
            if self.slots[s as usize].is_some() {
                in_cached_part = true;
            } else if in_cached_part {
                return Err(format!("empty host slot {s} after cached ones"));
            }
        }
        if order.len() != self.slots.len() {
            return Err(format!(
                "{} host slots pinned outside an onboard",
                self.slots.len() - order.len()
            ));
        }
        for (i, slot) in self.slots.iter().enumerate() {
            if let Some(h) = *slot
                && self.index.get(&h) != Some(&(i as u32))
            {
                return Err(format!("host slot {i} is cached but not indexed"));
            }
        }
        if self.index.len() != self.slots.iter().flatten().count() {
            return Err("host index maps slots that are not cached".into());
        }
        Ok(())
    }

    fn slot_tokens(&self, s: SlotId) -> &[u32] {
        let bs = self.block_size;
        &self.tokens[s as usize * bs..(s as usize + 1) * bs]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_in_lru_order_and_frees_removed_slots_first() {
        let mut t = HostTier::new(2, 1);
        let (a, _) = t.store(10, &[1]).unwrap();
        let (b, _) = t.store(11, &[2]).unwrap();
        assert_ne!(a, b);
        assert_eq!(t.lookup(10, &[1]), Some(a));
        assert_eq!(t.lookup(10, &[9]), None, "tokens are verified");
        // Full: the least recently stored goes.
        let (c, ev) = t.store(12, &[3]).unwrap();
        assert_eq!((c, ev), (a, Some(Evicted(10))));
        t.pin(b);
        assert!(t.check_invariants().is_err(), "a pin outlives no onboard");
        assert_eq!(t.remove(11), Some(b));
        // The freed slot is taken before any cached one is evicted.
        assert_eq!(t.store(13, &[4]).unwrap(), (b, None));
        t.check_invariants().unwrap();
        assert_eq!(t.num_cached(), 2);
        t.clear();
        t.check_invariants().unwrap();
        assert_eq!(t.num_cached(), 0);
    }
}
