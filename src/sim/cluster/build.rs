//! Building a simulated cluster: one engine per worker (per rank of a data-parallel one),
//! gangs of the ranks that step together, and the pools behind each router, with the view of
//! a pool the router's decision reads.

use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::mpsc::channel;

use rand::SeedableRng;
use rand::rngs::StdRng;

use super::{Cluster, ClusterConfig, Gang, Topology, Worker};
use crate::config::EngineConfig;
use crate::engine::EngineCore;
use crate::kv::EventDetail;
use crate::replay::trace::TraceRequest;
use crate::router::index::KvIndex;
use crate::router::{Policy, PoolView};
use crate::sim::SimExecutor;
use crate::sim::profile::Profile;
use crate::sim::pulls::PullService;
use crate::sim::track::Path;

/// A group of workers behind one router.
pub(super) struct Pool {
    /// The engines of its targets: worker w's rank r at `w × ranks + r`.
    pub(super) members: Vec<usize>,
    pub(super) ranks: usize,
    pub(super) policy: Policy,
    /// The router's view of the members' caches, fed by their events (KV routing only).
    pub(super) index: Option<KvIndex>,
    pub(super) next: usize,
}

/// A simulated pool as the router sees it.
pub(super) struct SimPool<'a> {
    pub(super) pool: &'a Pool,
    pub(super) workers: &'a [Worker],
    pub(super) block_size: usize,
}

impl PoolView for SimPool<'_> {
    fn slots(&self) -> usize {
        self.pool.members.len() / self.pool.ranks
    }

    fn ranks(&self) -> usize {
        self.pool.ranks
    }

    fn eligible(&self, _: usize) -> bool {
        true
    }

    fn active_blocks(&self, t: usize) -> usize {
        self.workers[self.pool.members[t]].active_blocks
    }

    fn overlaps(&self, hashes: &[u64]) -> Option<Vec<crate::router::Overlap>> {
        self.pool.index.as_ref().map(|ix| ix.overlaps(hashes))
    }

    fn block_size(&self) -> Option<usize> {
        Some(self.block_size)
    }
}

impl<'a> Cluster<'a> {
    pub(super) fn new(
        cfg: &'a ClusterConfig,
        profile: Arc<Profile>,
        trace: &'a [TraceRequest],
    ) -> Self {
        let track_kv = matches!(cfg.policy, Policy::Kv { .. });
        let disaggregated = matches!(cfg.topology, Topology::Disaggregated { .. });
        let profile = profile.priced_for(disaggregated);
        let ranks = profile.attention_dp.max(1);
        let decode_engine = cfg.decode_engine.clone().unwrap_or_else(|| EngineConfig {
            enable_prefix_caching: false,
            host_kv_blocks: 0,
            ..cfg.engine.clone()
        });
        let (sizes, policies) = match cfg.topology {
            Topology::Aggregated { workers } => {
                (vec![(workers, false, cfg.engine.clone())], vec![cfg.policy])
            }
            Topology::Disaggregated { prefill, decode } => (
                vec![
                    (
                        prefill,
                        true,
                        cfg.prefill_engine.clone().unwrap_or(cfg.engine.clone()),
                    ),
                    (decode, false, decode_engine),
                ],
                vec![cfg.policy, Policy::kv(0.0)],
            ),
        };
        let (mut workers, mut gangs, mut pools) = (Vec::new(), Vec::new(), Vec::new());
        for (p, ((n, prefill_role, engine), policy)) in sizes.into_iter().zip(policies).enumerate()
        {
            let track_kv = track_kv && engine.enable_prefix_caching;
            let first = workers.len();
            for slot in 0..n {
                let mut members = Vec::with_capacity(ranks);
                for rank in 0..ranks {
                    let (tx, rx) = channel();
                    let mut core = EngineCore::new(engine.clone(), SimExecutor::default(), vec![])
                        .expect("the engine config was validated");
                    if track_kv {
                        // The router indexes blocks by hash: their tokens would be copied for nothing.
                        core.set_event_sink(tx, EventDetail::Hashes);
                    }
                    members.push(workers.len());
                    workers.push(Worker {
                        core,
                        events: rx,
                        pool: p,
                        slot,
                        rank,
                        gang: gangs.len(),
                        prefill_role,
                        outputs: Vec::new(),
                        step_events: Vec::new(),
                        active_blocks: 0,
                    });
                }
                gangs.push(Gang {
                    members,
                    busy: false,
                    debt: 0.0,
                    reserves: Vec::new(),
                    pulls: PullService::default(),
                    waking: false,
                    wake_at: 0,
                    last_end: None,
                });
            }
            pools.push(Pool {
                // Engines were made worker by worker, rank by rank: target order already.
                members: (first..workers.len()).collect(),
                ranks,
                policy,
                index: track_kv.then(|| KvIndex::with_ranks(n, ranks)),
                next: 0,
            });
        }
        Cluster {
            cfg,
            path: Path::of(profile.serving_of(disaggregated)),
            profile,
            trace,
            workers,
            gangs,
            pools,
            heap: BinaryHeap::new(),
            records: Vec::with_capacity(trace.len()),
            tracks: Vec::with_capacity(trace.len()),
            rng: StdRng::seed_from_u64(cfg.seed),
            steps: 0,
            transfers: 0,
            frontend_next: 0,
        }
    }
}
