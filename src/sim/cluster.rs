//! A simulated cluster: the servers' router decision, scheduler and KV cache, stepped on a
//! simulated clock. Workers are [`EngineCore`]s over a [`SimExecutor`]; a step starts when a
//! worker is idle and has work, and its tokens and KV events land when the profile says it
//! ends. Disaggregated requests follow the frontend's path: prefill (KV-aware choice), first
//! token, decode worker by load, reservation there, KV transfer, release on the prefill side.
//!
//! A worker with attention data parallelism (the profile's `attention_dp`) is that many
//! engines, one per rank, each with its own KV cache; the router picks a (worker, rank), and
//! the ranks step together (a step starts when the worker is idle and any rank has work, and
//! lasts [`Profile::worker_step_time`] of all their batches).

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::Arc;
use std::sync::mpsc::{Receiver, channel};
use std::time::Instant;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

use super::executor::SimExecutor;
use super::profile::Profile;
use crate::config::EngineConfig;
use crate::engine::{EngineCore, Request, RequestOutput, SamplingParams, SeqWork};
use crate::error::Result;
use crate::kv::KvEvent;
use crate::replay::metrics::RequestRecord;
use crate::replay::trace::{TraceRequest, synthesize};
use crate::router::index::KvIndex;
use crate::router::{Choice, Policy, PoolView, pick};

/// How the workers are arranged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Topology {
    /// Every worker serves whole requests.
    Aggregated {
        /// Workers.
        workers: usize,
    },
    /// Prefill workers compute prompts; decode workers pull their KV and generate.
    Disaggregated {
        /// Prefill workers.
        prefill: usize,
        /// Decode workers.
        decode: usize,
    },
}

/// One simulated deployment.
#[derive(Debug, Clone)]
pub struct ClusterConfig {
    /// Its name in reports.
    pub name: String,
    /// Worker arrangement.
    pub topology: Topology,
    /// Routing of the aggregated (or prefill) pool; decode workers are picked by load.
    pub policy: Policy,
    /// Every worker's engine (decode workers' without prefix caching, as `tandem serve` runs
    /// them), unless the role's own below is given.
    pub engine: EngineConfig,
    /// The prefill workers' engine, if it differs.
    pub prefill_engine: Option<EngineConfig>,
    /// The decode workers' engine, if it differs.
    pub decode_engine: Option<EngineConfig>,
    /// Replay this many times faster than the trace's timestamps.
    pub speedup: f64,
    /// Synthesized prompts use token ids below this.
    pub vocab: u32,
    /// Tokens per hash id of the trace.
    pub trace_block: usize,
    /// Seed of the router's draws at a positive temperature.
    pub seed: u64,
}

/// What a simulated run produced.
#[derive(Debug, Clone)]
pub struct SimOutcome {
    /// One record per trace request, as the replay client writes them.
    pub records: Vec<RequestRecord>,
    /// Simulated time from the first arrival to the last token, s.
    pub duration_s: f64,
    /// Engine steps over all workers.
    pub steps: u64,
    /// Preemptions over all workers.
    pub preemptions: u64,
    /// KV transfers from prefill to decode workers.
    pub transfers: u64,
    /// Wall-clock time the simulation took, s.
    pub wall_s: f64,
}

/// A group of workers behind one router.
struct Pool {
    /// The engines of its targets: worker w's rank r at `w × ranks + r`.
    members: Vec<usize>,
    ranks: usize,
    policy: Policy,
    /// The router's view of the members' caches, fed by their events (KV routing only).
    index: Option<KvIndex>,
    next: usize,
}

/// A simulated pool as the router sees it.
struct SimPool<'a> {
    pool: &'a Pool,
    workers: &'a [Worker],
    block_size: usize,
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

/// One engine: a worker, or one data-parallel rank of one.
struct Worker {
    core: EngineCore<SimExecutor>,
    events: Receiver<KvEvent>,
    pool: usize,
    /// The worker in its pool, and the rank in the worker.
    slot: usize,
    rank: usize,
    /// The gang of ranks it steps with.
    gang: usize,
    prefill_role: bool,
    /// What the step in flight produces when it ends.
    outputs: Vec<RequestOutput>,
    step_events: Vec<KvEvent>,
    /// Blocks of requests the router has in flight here.
    active_blocks: usize,
}

/// The ranks of one worker, which step together.
struct Gang {
    members: Vec<usize>,
    busy: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    StepDone(usize),
    TransferDone(usize),
}

/// A request's timeline.
#[derive(Default)]
struct Track {
    send: u64,
    first: Option<u64>,
    last: u64,
    /// (worker, blocks) the router counts against a worker while the request is there.
    charge: Option<(usize, usize)>,
    /// The prompt and its block hashes, kept for the decode worker (disaggregated only).
    prompt: Vec<u32>,
    hashes: Vec<u64>,
    first_token: u32,
    transfer: Option<(usize, usize)>,
}

const NS: f64 = 1e9;

struct Cluster<'a> {
    cfg: &'a ClusterConfig,
    profile: Arc<Profile>,
    trace: &'a [TraceRequest],
    workers: Vec<Worker>,
    gangs: Vec<Gang>,
    pools: Vec<Pool>,
    heap: BinaryHeap<Reverse<(u64, Event)>>,
    records: Vec<RequestRecord>,
    tracks: Vec<Track>,
    rng: StdRng,
    steps: u64,
    transfers: u64,
}

/// Runs `trace` through the deployment `cfg` with workers timed by `profile`.
pub fn simulate(
    cfg: &ClusterConfig,
    profile: Arc<Profile>,
    trace: &[TraceRequest],
) -> Result<SimOutcome> {
    let wall = Instant::now();
    cfg.engine.validate()?;
    for e in cfg.prefill_engine.iter().chain(&cfg.decode_engine) {
        e.validate()?;
    }
    let mut c = Cluster::new(cfg, profile, trace);
    let mut next = 0;
    loop {
        let arrival = trace
            .get(next)
            .map(|r| (r.timestamp as f64 * 1e6 / cfg.speedup) as u64);
        let event = c.heap.peek().map(|Reverse((t, _))| *t);
        match (arrival, event) {
            (None, None) => break,
            // Completions at the same instant land before an arrival sees the state.
            (Some(a), Some(e)) if e <= a => c.pop_event(),
            (Some(a), _) => {
                c.arrive(next, a);
                next += 1;
            }
            (None, Some(_)) => c.pop_event(),
        }
    }
    c.finish(wall)
}

impl<'a> Cluster<'a> {
    fn new(cfg: &'a ClusterConfig, profile: Arc<Profile>, trace: &'a [TraceRequest]) -> Self {
        let track_kv = matches!(cfg.policy, Policy::Kv { .. });
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
                        core.set_event_sink(tx);
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
        }
    }

    fn pop_event(&mut self) {
        let Some(Reverse((t, ev))) = self.heap.pop() else {
            return;
        };
        match ev {
            Event::StepDone(w) => self.step_done(w, t),
            Event::TransferDone(id) => self.transfer_done(id, t),
        }
    }

    fn params(&self, id: usize) -> SamplingParams {
        SamplingParams {
            max_tokens: self.trace[id].output_length,
            ignore_eos: true,
            ..Default::default()
        }
    }

    /// The router's pick in pool `p`: [`crate::router::pick`], as the frontend's router
    /// makes it. `hashes` holds the prompt's block hashes once computed, so the decode pool's
    /// pick does not hash the prompt again.
    fn route(&mut self, p: usize, prompt: &[u32], hashes: &mut Vec<u64>) -> Option<Choice> {
        let start = self.pools[p].next;
        self.pools[p].next += 1;
        let view = SimPool {
            pool: &self.pools[p],
            workers: &self.workers,
            block_size: self.cfg.engine.block_size,
        };
        let policy = self.pools[p].policy;
        pick(
            &view,
            policy,
            start,
            (prompt, hashes),
            &[],
            self.rng.random::<f64>(),
        )
    }

    /// The engine of pool `p`'s `choice`.
    fn member(&self, p: usize, choice: Choice) -> usize {
        let pool = &self.pools[p];
        pool.members[choice.worker * pool.ranks + choice.rank]
    }

    fn charge(&mut self, id: usize, w: usize, blocks: usize) {
        self.workers[w].active_blocks += blocks;
        self.tracks[id].charge = Some((w, blocks));
    }

    fn uncharge(&mut self, id: usize) {
        if let Some((w, b)) = self.tracks[id].charge.take() {
            self.workers[w].active_blocks -= b;
        }
    }

    fn arrive(&mut self, id: usize, t: u64) {
        let r = &self.trace[id];
        self.records.push(RequestRecord {
            index: id,
            send_ms: t as f64 / 1e6,
            input_tokens: r.input_length,
            cached_tokens: 0,
            ttft_ms: None,
            latency_ms: None,
            output_tokens: 0,
            error: None,
        });
        self.tracks.push(Track {
            send: t,
            ..Default::default()
        });
        let prompt = synthesize(r, 0, self.cfg.vocab, self.cfg.trace_block);
        let blocks = prompt.len().div_ceil(self.cfg.engine.block_size);
        let mut hashes = Vec::new();
        let choice = self
            .route(0, &prompt, &mut hashes)
            .expect("every pool has a worker");
        let w = self.member(0, choice);
        self.charge(id, w, choice.load_blocks(blocks));
        let prefill_role = self.workers[w].prefill_role;
        let mut params = self.params(id);
        if prefill_role {
            // The prefill call asks for one token; the decode worker makes the rest.
            params.max_tokens = 1;
            self.tracks[id].prompt = prompt.clone();
            self.tracks[id].hashes = hashes;
        }
        let req = Request {
            id: id as u64,
            prompt,
            params,
        };
        let core = &mut self.workers[w].core;
        let added = if prefill_role {
            core.add_prefill_request(req)
        } else {
            core.add_request(req)
        };
        match added {
            Ok(()) => self.kick(w, t),
            Err(e) => self.fail(id, e.to_string()),
        }
    }

    fn fail(&mut self, id: usize, error: String) {
        self.uncharge(id);
        self.tracks[id].prompt = Vec::new();
        self.records[id].error = Some(error);
    }

    /// Starts a step of engine `w`'s worker, all its ranks, if it is idle and has work.
    fn kick(&mut self, w: usize, t: u64) {
        let g = self.workers[w].gang;
        if self.gangs[g].busy {
            return;
        }
        let mut works = Vec::new();
        let mut copy_s = 0.0;
        for i in 0..self.gangs[g].members.len() {
            let m = self.gangs[g].members[i];
            let worker = &mut self.workers[m];
            if !worker.core.has_work() {
                continue;
            }
            let outputs = match worker.core.step() {
                Ok(o) => o,
                Err(f) => {
                    let msg = f.error.to_string();
                    for id in f.failed {
                        self.fail(id as usize, msg.clone());
                    }
                    continue;
                }
            };
            let worker = &mut self.workers[m];
            worker.step_events.extend(worker.events.try_iter());
            worker.outputs = outputs;
            // None: nothing fit (blocks are held elsewhere); the rank waits for a release or
            // an arrival.
            if let Some(work) = worker.core.executor_mut().take_step_work() {
                works.push(work);
            }
            // Each rank copies its host-tier blocks over its own link, layer by layer beside
            // the step (as the real executor's copy thread does): the step takes the longer
            // of the two (the first layer's copy, 1/layers of it, is not hidden; ignored).
            let copied = worker.core.executor_mut().take_copied_blocks();
            let bs = worker.core.config().block_size;
            copy_s = f64::max(copy_s, self.profile.host_copy_time(copied, bs));
        }
        if works.is_empty() {
            return;
        }
        let ranks: Vec<&[SeqWork]> = works.iter().map(Vec::as_slice).collect();
        let d = self.profile.worker_step_time(&ranks).max(copy_s);
        self.steps += 1;
        let end = t + ((d * NS) as u64).max(1);
        self.gangs[g].busy = true;
        self.heap.push(Reverse((end, Event::StepDone(g))));
    }

    fn step_done(&mut self, g: usize, t: u64) {
        self.gangs[g].busy = false;
        let mut handed_off = Vec::new();
        for i in 0..self.gangs[g].members.len() {
            let w = self.gangs[g].members[i];
            let worker = &mut self.workers[w];
            let outputs = std::mem::take(&mut worker.outputs);
            let events = std::mem::take(&mut worker.step_events);
            if let Some(ix) = &mut self.pools[worker.pool].index {
                for e in &events {
                    ix.apply(worker.slot, worker.rank, e);
                }
            }
            let prefill_role = worker.prefill_role;
            for out in outputs {
                let id = out.id as usize;
                let Some(tok) = out.token else { continue };
                let (rec, track) = (&mut self.records[id], &mut self.tracks[id]);
                if track.first.is_none() {
                    track.first = Some(t);
                    rec.cached_tokens = out.cached_tokens;
                }
                track.last = t;
                rec.output_tokens += 1;
                if out.finish.is_none() {
                    continue;
                }
                // The worker call returned: the router stops counting the request there.
                self.uncharge(id);
                if prefill_role && self.trace[id].output_length > 1 {
                    self.tracks[id].first_token = tok.token;
                    handed_off.push((id, w));
                } else {
                    if prefill_role {
                        self.workers[w].core.release_held(id as u64);
                    }
                    self.tracks[id].prompt = Vec::new();
                }
            }
        }
        let Some(&first) = self.gangs[g].members.first() else {
            return;
        };
        self.kick(first, t);
        // The decode worker reads the held blocks in place (NIXL, or the KV socket over a
        // cache in host memory), beside the prefill worker's next step: it starts now.
        for (id, w) in handed_off {
            self.start_transfer(id, w, t);
        }
    }

    fn start_transfer(&mut self, id: usize, prefill: usize, read_at: u64) {
        let prompt = std::mem::take(&mut self.tracks[id].prompt);
        let mut hashes = std::mem::take(&mut self.tracks[id].hashes);
        let choice = self
            .route(1, &prompt, &mut hashes)
            .expect("the decode pool has a worker");
        let d = self.member(1, choice);
        self.charge(id, d, prompt.len().div_ceil(self.cfg.engine.block_size));
        if let Err(e) = self.workers[d].core.reserve_kv(id as u64, prompt.len()) {
            self.workers[prefill].core.release_held(id as u64);
            self.fail(id, e.to_string());
            return;
        }
        let end = read_at + ((self.profile.transfer_time(prompt.len()) * NS) as u64).max(1);
        self.tracks[id].prompt = prompt;
        self.tracks[id].transfer = Some((prefill, d));
        self.transfers += 1;
        self.heap.push(Reverse((end, Event::TransferDone(id))));
    }

    fn transfer_done(&mut self, id: usize, t: u64) {
        let Some((prefill, d)) = self.tracks[id].transfer.take() else {
            return;
        };
        self.workers[prefill].core.release_held(id as u64);
        self.kick(prefill, t);
        let req = Request {
            id: id as u64,
            prompt: std::mem::take(&mut self.tracks[id].prompt),
            params: self.params(id),
        };
        let first = self.tracks[id].first_token;
        match self.workers[d].core.commit_prefilled(req, first) {
            Ok(()) => self.kick(d, t),
            Err(e) => self.fail(id, e.to_string()),
        }
    }

    fn finish(mut self, wall: Instant) -> Result<SimOutcome> {
        let mut end = 0;
        // What the serving path adds to each request (HTTP, gRPC, the first token's relay):
        // the client sees its first and last tokens this much later.
        let extra_ms = self.profile.request_overhead_s() * 1e3;
        for (rec, tr) in self.records.iter_mut().zip(&self.tracks) {
            let ms = |x: u64| (x - tr.send) as f64 / 1e6 + extra_ms;
            if rec.error.is_none() {
                if tr.first.is_none() || rec.output_tokens < self.trace[rec.index].output_length {
                    rec.error = Some("the request did not finish".into());
                    continue;
                }
                rec.ttft_ms = tr.first.map(ms);
                rec.latency_ms = Some(ms(tr.last));
                end = end.max(tr.last);
            }
        }
        for w in &self.workers {
            if let Err(e) = w.core.check_invariants() {
                return Err(crate::Error::Backend(format!("KV invariant broken: {e}")));
            }
        }
        let preemptions = self.workers.iter().map(|w| w.core.num_preemptions()).sum();
        let start = self.tracks.first().map_or(0, |t| t.send);
        Ok(SimOutcome {
            records: std::mem::take(&mut self.records),
            duration_s: end.saturating_sub(start) as f64 / NS,
            steps: self.steps,
            preemptions,
            transfers: self.transfers,
            wall_s: wall.elapsed().as_secs_f64(),
        })
    }
}
