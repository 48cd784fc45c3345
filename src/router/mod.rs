//! Routing requests to workers: round-robin, or KV-aware (prefix overlap and load).

pub mod discovery;
pub mod index;
pub mod pool;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use rand::RngExt;

use crate::kv::hash::extend_sequence_hashes;
pub use index::Overlap;
pub use pool::{WorkerHandle, WorkerPool};

/// How the router picks a worker.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Policy {
    /// The next healthy worker in turn.
    RoundRobin,
    /// Lowest cost: `overlap_weight` × the prefill blocks left after the cached prefix
    /// (host-tier blocks credited at `host_weight`), plus blocks of requests in flight;
    /// sampled with a softmax at `temperature` (0: always the lowest).
    Kv {
        /// Softmax temperature over costs in blocks.
        temperature: f64,
        /// Credit of a prefix block held in a worker's host tier, against 1 for one in
        /// device memory.
        host_weight: f64,
        /// Cost of a block the worker must compute against one of a request in flight
        /// there (NVIDIA Dynamo's `overlap_score_weight`): above 1, a recomputed block is
        /// dearer than a queued one, since it also takes capacity from every later request.
        overlap_weight: f64,
    },
}

/// Credit of a host-tier block by default, as NVIDIA Dynamo's KV router weighs them.
pub const DEFAULT_HOST_BLOCK_WEIGHT: f64 = 0.75;

/// Weight of the blocks to compute by default. Measured on the reference trace's
/// disaggregated A/B (BENCHMARKS.md, the host-tier section of 2026-12-02): 3 raises the hit
/// rate and lowers TTFT p50 and p90 at every host-tier size against Dynamo's default of 1,
/// where 6 and more start to cost TTFT p90.
pub const DEFAULT_OVERLAP_WEIGHT: f64 = 3.0;

impl Policy {
    /// Refuses settings that make no cost: a negative or non-finite temperature or host
    /// weight, or an overlap weight that is not positive.
    pub fn validate(&self) -> Result<(), String> {
        let Policy::Kv {
            temperature,
            host_weight,
            overlap_weight,
        } = *self
        else {
            return Ok(());
        };
        let at_least =
            |v: f64, min: f64, strict: bool| v.is_finite() && (v > min || (!strict && v == min));
        if !at_least(temperature, 0.0, false) {
            return Err(format!(
                "router temperature {temperature} must be 0 or more"
            ));
        }
        if !at_least(host_weight, 0.0, false) {
            return Err(format!(
                "router host block weight {host_weight} must be 0 or more"
            ));
        }
        if !at_least(overlap_weight, 0.0, true) {
            return Err(format!(
                "router overlap weight {overlap_weight} must be positive"
            ));
        }
        Ok(())
    }

    /// The KV policy at `temperature`, with the default weights.
    pub const fn kv(temperature: f64) -> Self {
        Policy::Kv {
            temperature,
            host_weight: DEFAULT_HOST_BLOCK_WEIGHT,
            overlap_weight: DEFAULT_OVERLAP_WEIGHT,
        }
    }
}

/// A routing decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Choice {
    /// Index of the worker in the pool.
    pub worker: usize,
    /// Its data-parallel rank that gets the request (0 for a worker without DP).
    pub rank: usize,
    /// Prompt blocks the index says that rank already holds.
    pub overlap_blocks: usize,
}

impl Choice {
    /// Blocks a request of `prompt_blocks` adds to its target's in-flight load: what the target
    /// must compute, its cached prefix aside (a decode target caches nothing, so all of them).
    pub fn load_blocks(&self, prompt_blocks: usize) -> usize {
        prompt_blocks - self.overlap_blocks.min(prompt_blocks)
    }
}

/// Picks workers for requests.
pub struct Router {
    policy: Policy,
    pool: Arc<WorkerPool>,
    next: AtomicUsize,
}

impl Router {
    /// A router over `pool`.
    pub fn new(policy: Policy, pool: Arc<WorkerPool>) -> Self {
        Router {
            policy,
            pool,
            next: AtomicUsize::new(0),
        }
    }

    /// The pool.
    pub fn pool(&self) -> &Arc<WorkerPool> {
        &self.pool
    }

    /// Picks a healthy worker for `prompt`, skipping those in `exclude`; None if none is up.
    pub fn pick(&self, prompt: &[u32], exclude: &[usize]) -> Option<Choice> {
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        pick(
            &*self.pool,
            self.policy,
            start,
            (prompt, &mut Vec::new()),
            exclude,
            rand::rng().random::<f64>(),
        )
    }
}

/// What routing needs to know of a pool of workers: the frontend's [`WorkerPool`] and the
/// simulator's pools answer the same questions, so both route with [`pick`].
///
/// A routing target is a (worker, data-parallel rank) pair, numbered `worker × ranks + rank`
/// as in [`index::KvIndex`]; a pool without DP has one rank, so targets are workers.
pub trait PoolView {
    /// Workers in the pool (slots).
    fn slots(&self) -> usize;
    /// Data-parallel ranks of each worker, each with its own KV cache.
    fn ranks(&self) -> usize {
        1
    }
    /// Whether worker `i` may take a request (healthy, a member).
    fn eligible(&self, i: usize) -> bool;
    /// Blocks of requests the router has in flight on target `t`.
    fn active_blocks(&self, t: usize) -> usize;
    /// Leading blocks of `hashes` each target holds, by tier; None when the pool keeps no
    /// index.
    fn overlaps(&self, hashes: &[u64]) -> Option<Vec<Overlap>>;
    /// The block size the workers hash prompts with, once known.
    fn block_size(&self) -> Option<usize>;
}

/// The worker and rank `view`'s router picks for `prompt`: candidate targets in turn from
/// `start` (so ties spread; workers first, then ranks, so that a burst spreads over workers),
/// workers in `exclude` and ineligible ones skipped, then [`decide`]. `hashes` holds the
/// prompt's block hashes once computed (they are computed here when empty).
pub fn pick(
    view: &impl PoolView,
    policy: Policy,
    start: usize,
    (prompt, hashes): (&[u32], &mut Vec<u64>),
    exclude: &[usize],
    u: f64,
) -> Option<Choice> {
    let (n, ranks) = (view.slots(), view.ranks().max(1));
    let targets = n * ranks;
    // The k-th target in turn is worker k mod n, rank k div n.
    let candidates: Vec<usize> = (0..targets)
        .map(|k| (start + k) % targets.max(1))
        .filter(|&k| {
            let w = k % n;
            view.eligible(w) && !exclude.contains(&w)
        })
        .map(|k| (k % n) * ranks + k / n)
        .collect();
    let choice = |(t, overlap_blocks): (usize, usize)| Choice {
        worker: t / ranks,
        rank: t % ranks,
        overlap_blocks,
    };
    let (bs, overlaps) = match (policy, view.block_size()) {
        (Policy::Kv { .. }, Some(bs)) => {
            if hashes.is_empty() {
                extend_sequence_hashes(hashes, prompt, bs);
            }
            (
                bs,
                view.overlaps(hashes)
                    .unwrap_or_else(|| vec![Overlap::default(); targets]),
            )
        }
        // Round-robin, or a pool whose block size is not known yet: in turn.
        _ => return candidates.first().map(|&t| choice((t, 0))),
    };
    decide(
        policy,
        &candidates,
        prompt.len().div_ceil(bs),
        &overlaps,
        |t| view.active_blocks(t),
        u,
    )
    .map(choice)
}

/// The routing decision over plain data: the servers' router and the simulator both make it.
///
/// `candidates` are the eligible targets, starting at a rotating offset so that equal costs
/// spread over workers; `overlaps[t]` is target t's cached prefix in blocks, by tier, and
/// `active_blocks(t)` the blocks of requests in flight there; `u` is a uniform draw in [0, 1)
/// for sampling at a positive temperature. It returns the target and its overlap in blocks
/// (both tiers).
pub fn decide(
    policy: Policy,
    candidates: &[usize],
    prompt_blocks: usize,
    overlaps: &[Overlap],
    active_blocks: impl Fn(usize) -> usize,
    u: f64,
) -> Option<(usize, usize)> {
    let first = *candidates.first()?;
    let (temperature, host_weight, overlap_weight) = match policy {
        Policy::RoundRobin => return Some((first, 0)),
        Policy::Kv {
            temperature,
            host_weight,
            overlap_weight,
        } => (temperature, host_weight, overlap_weight),
    };
    let cost = |i: usize| {
        let credit = overlaps[i].credit(host_weight).min(prompt_blocks as f64);
        overlap_weight * (prompt_blocks as f64 - credit) + active_blocks(i) as f64
    };
    let worker = if temperature <= 0.0 {
        *candidates
            .iter()
            .min_by(|&&a, &&b| cost(a).total_cmp(&cost(b)))?
    } else {
        let costs: Vec<f64> = candidates.iter().map(|&i| cost(i)).collect();
        let min = costs.iter().copied().fold(f64::INFINITY, f64::min);
        let weights: Vec<f64> = costs
            .iter()
            .map(|c| (-(c - min) / temperature).exp())
            .collect();
        let mut left = u * weights.iter().sum::<f64>();
        let mut pick = first;
        for (&i, w) in candidates.iter().zip(&weights) {
            pick = i;
            if left < *w {
                break;
            }
            left -= w;
        }
        pick
    };
    Some((worker, overlaps[worker].blocks()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::KvEvent;
    use crate::wire::proto::ModelInfoResponse;

    fn pool(n: usize) -> Arc<WorkerPool> {
        let addrs: Vec<String> = (0..n).map(|i| format!("127.0.0.1:{}", 9 + i)).collect();
        let pool = WorkerPool::new(&addrs).unwrap();
        for w in &pool.workers() {
            w.mark_healthy();
            w.set_info(ModelInfoResponse {
                block_size: 4,
                ..Default::default()
            });
        }
        pool
    }

    #[tokio::test]
    async fn kv_policy_prefers_the_prefix_until_load_outweighs_it() {
        let pool = pool(2);
        let prompt: Vec<u32> = (0..40).collect();
        let mut hashes = Vec::new();
        extend_sequence_hashes(&mut hashes, &prompt, 4);
        let stored = KvEvent::BlockStored {
            block_hashes: hashes,
            parent_block_hash: None,
            token_ids: prompt.clone(),
            block_size: 4,
            medium: crate::kv::Medium::Gpu,
        };
        pool.index.write().unwrap().apply(1, 0, &stored);
        let router = Router::new(Policy::kv(0.0), pool.clone());
        // Worker 1 holds all 10 blocks (but the last token is recomputed): cost 0 vs 10.
        assert_eq!(
            router.pick(&prompt, &[]),
            Some(Choice {
                worker: 1,
                rank: 0,
                overlap_blocks: 10
            })
        );
        // Requests the router has in flight on worker 1 keep the next one there until they
        // outweigh the 3 × 10 blocks its prefix saves.
        pool.workers()[1].active_blocks.store(29, Ordering::Relaxed);
        assert_eq!(router.pick(&prompt, &[]).unwrap().worker, 1);
        pool.workers()[1].active_blocks.store(31, Ordering::Relaxed);
        assert_eq!(router.pick(&prompt, &[]).unwrap().worker, 0);
        // Dead or excluded workers are never picked.
        pool.workers()[0].mark_dead();
        assert_eq!(router.pick(&prompt, &[]).unwrap().worker, 1);
        assert_eq!(router.pick(&prompt, &[1]), None);
    }

    #[tokio::test]
    async fn a_burst_spreads_over_idle_workers() {
        let pool = pool(3);
        let router = Router::new(Policy::kv(0.0), pool.clone());
        let mut counts = [0; 3];
        for i in 0..30u32 {
            let prompt: Vec<u32> = (0..16).map(|t| t + 100 * i).collect();
            let c = router.pick(&prompt, &[]).unwrap();
            counts[c.worker] += 1;
            // What dispatch does while the request runs.
            pool.workers()[c.worker]
                .active_blocks
                .fetch_add(4, Ordering::Relaxed);
        }
        assert_eq!(counts, [10, 10, 10]);
        let rr = Router::new(Policy::RoundRobin, pool);
        let picks: Vec<usize> = (0..6).map(|_| rr.pick(&[1], &[]).unwrap().worker).collect();
        assert_eq!(picks, vec![0, 1, 2, 0, 1, 2]);
    }

    #[test]
    fn temperature_samples_the_softmax_of_the_costs() {
        use rand::SeedableRng;
        // Costs 0, 1 and 5 blocks: weights 1, e^-1, e^-5 at temperature 1.
        let on_device = |device| Overlap { device, host: 0 };
        let (cands, overlaps) = ([0usize, 1, 2], [on_device(5), on_device(4), on_device(0)]);
        let kv = Policy::Kv {
            temperature: 1.0,
            host_weight: 0.75,
            overlap_weight: 1.0,
        };
        let pick = |u: f64| decide(kv, &cands, 5, &overlaps, |_| 0, u).unwrap().0;
        let w = [1.0, (-1.0f64).exp(), (-5.0f64).exp()];
        let total: f64 = w.iter().sum();
        assert_eq!(pick(0.0), 0);
        assert_eq!(pick((w[0] + 0.5 * w[1]) / total), 1);
        assert_eq!(pick((w[0] + w[1] + 0.5 * w[2]) / total), 2);
        // Over many seeded draws, each worker is picked as often as its probability says.
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let mut counts = [0usize; 3];
        let n = 20_000;
        for _ in 0..n {
            counts[pick(rng.random::<f64>())] += 1;
        }
        for i in 0..3 {
            let (got, want) = (counts[i] as f64 / n as f64, w[i] / total);
            assert!((got - want).abs() < 0.01, "worker {i}: {got} vs {want}");
        }
        // Temperature 0 always takes the cheapest; load counts like missing prefix.
        let greedy = Policy::Kv {
            temperature: 0.0,
            host_weight: 0.75,
            overlap_weight: 1.0,
        };
        assert_eq!(
            decide(greedy, &cands, 5, &overlaps, |_| 0, 0.9).unwrap().0,
            0
        );
        assert_eq!(
            decide(greedy, &cands, 5, &overlaps, |i| [3, 0, 0][i], 0.9)
                .unwrap()
                .0,
            1
        );
    }

    #[test]
    fn host_blocks_are_credited_at_their_weight() {
        // 8 prompt blocks: worker 0 holds 4 on its device, worker 1 holds 6 in its host tier.
        let overlaps = [
            Overlap { device: 4, host: 0 },
            Overlap { device: 0, host: 6 },
        ];
        let with = |host_weight| Policy::Kv {
            temperature: 0.0,
            host_weight,
            overlap_weight: 1.0,
        };
        // 6 × 0.75 = 4.5 blocks of credit beat 4; at 0.5 they are worth 3.
        assert_eq!(
            decide(with(0.75), &[0, 1], 8, &overlaps, |_| 0, 0.0),
            Some((1, 6))
        );
        assert_eq!(
            decide(with(0.5), &[0, 1], 8, &overlaps, |_| 0, 0.0),
            Some((0, 4))
        );
    }

    #[test]
    fn the_overlap_weight_prices_computed_blocks_against_queued_ones() {
        // 10 prompt blocks: worker 0 holds 6 and has 10 blocks in flight, worker 1 is idle.
        let overlaps = [Overlap { device: 6, host: 0 }, Overlap::default()];
        let with = |overlap_weight| Policy::Kv {
            temperature: 0.0,
            host_weight: 0.75,
            overlap_weight,
        };
        let active = |i: usize| [10, 0][i];
        // At 1: 4 + 10 against 10 (the idle worker); at 3: 12 + 10 against 30.
        assert_eq!(
            decide(with(1.0), &[0, 1], 10, &overlaps, active, 0.0),
            Some((1, 0))
        );
        assert_eq!(
            decide(with(3.0), &[0, 1], 10, &overlaps, active, 0.0),
            Some((0, 6))
        );
    }

    /// A pool of `n` workers of `ranks` data-parallel ranks over an index, as the simulator
    /// keeps one.
    struct Ranked {
        n: usize,
        ranks: usize,
        index: crate::router::index::KvIndex,
        active: Vec<usize>,
    }

    impl PoolView for Ranked {
        fn slots(&self) -> usize {
            self.n
        }
        fn ranks(&self) -> usize {
            self.ranks
        }
        fn eligible(&self, _: usize) -> bool {
            true
        }
        fn active_blocks(&self, t: usize) -> usize {
            self.active[t]
        }
        fn overlaps(&self, hashes: &[u64]) -> Option<Vec<Overlap>> {
            Some(self.index.overlaps(hashes))
        }
        fn block_size(&self) -> Option<usize> {
            Some(4)
        }
    }

    #[test]
    fn a_continued_conversation_goes_to_the_rank_that_holds_it() {
        let mut view = Ranked {
            n: 2,
            ranks: 8,
            index: crate::router::index::KvIndex::with_ranks(2, 8),
            active: vec![0; 16],
        };
        // The first turn ran on worker 1, rank 5; the second turn extends it.
        let turn1: Vec<u32> = (0..40).collect();
        let turn2: Vec<u32> = (0..80).collect();
        let mut hashes = Vec::new();
        extend_sequence_hashes(&mut hashes, &turn1, 4);
        let stored = KvEvent::BlockStored {
            block_hashes: hashes,
            parent_block_hash: None,
            token_ids: turn1.clone(),
            block_size: 4,
            medium: crate::kv::Medium::Gpu,
        };
        assert!(view.index.apply(1, 5, &stored));
        let kv = Policy::kv(0.0);
        for start in 0..16 {
            let c = pick(&view, kv, start, (&turn2, &mut Vec::new()), &[], 0.0).unwrap();
            assert_eq!((c.worker, c.rank, c.overlap_blocks), (1, 5, 10));
        }
        // Load there outweighs the prefix (3 × 10 blocks): the next-cheapest target.
        view.active[8 + 5] = 31;
        let c = pick(&view, kv, 0, (&turn2, &mut Vec::new()), &[], 0.0).unwrap();
        assert_ne!((c.worker, c.rank), (1, 5));
        // Round-robin walks workers first, then ranks: every target once in 16 picks.
        let mut seen: Vec<(usize, usize)> = (0..16)
            .map(|s| {
                let c = pick(
                    &view,
                    Policy::RoundRobin,
                    s,
                    (&turn2, &mut Vec::new()),
                    &[],
                    0.0,
                )
                .unwrap();
                (c.worker, c.rank)
            })
            .collect();
        assert_eq!(&seen[..3], &[(0, 0), (1, 0), (0, 1)]);
        seen.sort();
        seen.dedup();
        assert_eq!(seen.len(), 16);
        // An excluded worker's ranks are all skipped.
        let c = pick(&view, kv, 0, (&turn2, &mut Vec::new()), &[1], 0.0).unwrap();
        assert_eq!(c.worker, 0);
    }
}
