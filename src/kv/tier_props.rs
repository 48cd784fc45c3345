//! The two tiers under random traffic: admissions with prefix hits in either tier (some of
//! whose steps fail), growth, frees (a finish, an abort and a preemption all free a table),
//! resets. After every
//! operation the pool's invariants hold, the KV events replay to the pool's own state, and a
//! model of the bytes (each block's content is the hash it should hold) shows that copies run
//! in the queued order deliver what every cached block and slot claims to hold.

use std::collections::BTreeSet;

use proptest::prelude::*;

use super::hash::extend_sequence_hashes;
use super::{BlockTable, EventDetail, KvCacheManager, KvCopy, KvEvent, Medium};

const BS: usize = 2;

#[derive(Debug, Clone)]
enum Op {
    /// A prompt of `blocks` blocks of prefix family `family`, then `tail` unique tokens;
    /// with `fails`, the step that was to compute it fails and it is ended.
    Admit {
        family: u32,
        blocks: usize,
        tail: usize,
        fails: bool,
    },
    /// One more token for live sequence `i % live`.
    Grow(usize),
    /// Frees live sequence `i % live`.
    Free(usize),
    /// Drops the cache (refused while anything is live).
    Reset,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        5 => (0u32..3, 0usize..6, 1usize..3, prop::bool::weighted(0.15)).prop_map(
            |(family, blocks, tail, fails)| Op::Admit { family, blocks, tail, fails }
        ),
        3 => any::<usize>().prop_map(Op::Grow),
        3 => any::<usize>().prop_map(Op::Free),
        1 => Just(Op::Reset),
    ]
}

struct Live {
    table: BlockTable,
    tokens: Vec<u32>,
    computed: usize,
}

/// What each device block and host slot holds: the hash of the block whose KV is in it.
struct Bytes {
    device: Vec<Option<u64>>,
    host: Vec<Option<u64>>,
}

impl Bytes {
    fn copy(&mut self, copies: &[KvCopy]) {
        for c in copies {
            match *c {
                KvCopy::Offload { block, slot } => {
                    self.host[slot as usize] = self.device[block as usize]
                }
                KvCopy::Onboard { slot, block } => {
                    self.device[block as usize] = self.host[slot as usize]
                }
            }
        }
    }

    /// The forward pass: tokens `from..to` of `s` are computed into its blocks.
    fn compute(&mut self, s: &Live, from: usize, to: usize) {
        let mut hashes = Vec::new();
        extend_sequence_hashes(&mut hashes, &s.tokens[..to], BS);
        for b in from / BS..to.div_ceil(BS) {
            self.device[s.table.blocks[b] as usize] = hashes.get(b).copied();
        }
    }
}

fn apply(model: &mut BTreeSet<(u64, Medium)>, events: Vec<KvEvent>) {
    for e in events {
        match e {
            KvEvent::BlockStored {
                block_hashes,
                medium,
                ..
            } => {
                for h in block_hashes {
                    assert!(
                        model.insert((h, medium)),
                        "{h:#x} stored twice in {medium:?}"
                    );
                }
            }
            KvEvent::BlockRemoved {
                block_hashes,
                medium,
            } => {
                for h in block_hashes {
                    assert!(model.remove(&(h, medium)), "{h:#x} removed but not stored");
                }
            }
            KvEvent::AllBlocksCleared => model.clear(),
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn tiers_keep_their_invariants_events_and_bytes(ops in prop::collection::vec(op(), 1..120)) {
        let (num_blocks, host_slots) = (12, 6);
        let mut m = KvCacheManager::new(num_blocks, BS, true, EventDetail::Full).with_host_tier(host_slots);
        let mut bytes = Bytes { device: vec![None; num_blocks], host: vec![None; host_slots] };
        let mut events = BTreeSet::new();
        let mut live: Vec<Live> = Vec::new();
        let mut unique = 1_000_000u32;
        for op in ops {
            match op {
                Op::Admit { family, blocks, tail, fails } => {
                    let mut tokens: Vec<u32> = (0..(blocks * BS) as u32).map(|i| family * 1000 + i).collect();
                    for _ in 0..tail {
                        tokens.push(unique);
                        unique += 1;
                    }
                    let mut s = Live { table: BlockTable::default(), tokens, computed: 0 };
                    let hits = m.find_cached_prefix(&mut s.table, &s.tokens);
                    let hit = hits.len() * BS;
                    if m.allocate_slots(&mut s.table, &s.tokens, &hits, 0, s.tokens.len() - hit) {
                        bytes.copy(&m.drain_copies());
                        // Every hit, device or onboarded, holds its prefix before the forward.
                        let mut hashes = Vec::new();
                        extend_sequence_hashes(&mut hashes, &s.tokens, BS);
                        for (b, h) in hashes.iter().take(hits.len()).enumerate() {
                            prop_assert_eq!(bytes.device[s.table.blocks[b] as usize], Some(*h));
                        }
                        if fails {
                            m.forget_uncommitted();
                            m.free(&mut s.table);
                        } else {
                            bytes.compute(&s, hit, s.tokens.len());
                            m.commit_cached();
                            s.computed = s.tokens.len();
                            live.push(s);
                        }
                    } else {
                        prop_assert!(m.drain_copies().is_empty(), "a refused allocation queues nothing");
                    }
                }
                Op::Grow(i) if !live.is_empty() => {
                    let n = live.len();
                    let s = &mut live[i % n];
                    s.tokens.push(unique);
                    unique += 1;
                    if m.allocate_slots(&mut s.table, &s.tokens, &[], s.computed, 1) {
                        bytes.copy(&m.drain_copies());
                        bytes.compute(s, s.computed, s.computed + 1);
                        m.commit_cached();
                        s.computed += 1;
                    } else {
                        s.tokens.pop();
                    }
                }
                Op::Free(i) if !live.is_empty() => {
                    let mut s = live.swap_remove(i % live.len());
                    m.free(&mut s.table);
                }
                Op::Reset => {
                    prop_assert_eq!(m.reset_prefix_cache(), live.is_empty());
                }
                _ => {}
            }
            m.pool().check_invariants().map_err(TestCaseError::fail)?;
            apply(&mut events, m.drain_events());
            let (device, host) = m.pool().cached_by_tier();
            let mut state = BTreeSet::new();
            for &(b, h) in &device {
                prop_assert_eq!(bytes.device[b as usize], Some(h), "device block {} holds other KV", b);
                state.insert((h, Medium::Gpu));
            }
            for &(s, h) in &host {
                prop_assert_eq!(bytes.host[s as usize], Some(h), "host slot {} holds other KV", s);
                state.insert((h, Medium::Cpu));
            }
            prop_assert_eq!(&state, &events, "the events replay to the pool's state");
        }
        for mut s in live.drain(..) {
            m.free(&mut s.table);
        }
        m.pool().check_all_free().map_err(TestCaseError::fail)?;
    }
}
