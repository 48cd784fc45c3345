//! A simulated cluster: the servers' router decision, scheduler and KV cache, stepped on a
//! simulated clock. Workers are [`EngineCore`]s over a [`SimExecutor`]; a step starts when a
//! worker is idle and has work, and its tokens and KV events land when the profile says it
//! ends. Disaggregated requests follow the frontend's path: prefill (KV-aware choice), first
//! token, decode worker by load, reservation there, KV transfer, release on the prefill side.

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
use crate::engine::{EngineCore, Request, RequestOutput, SamplingParams};
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
    /// Every worker's engine.
    pub engine: EngineConfig,
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
    members: Vec<usize>,
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
        self.pool.members.len()
    }

    fn eligible(&self, _: usize) -> bool {
        true
    }

    fn active_blocks(&self, i: usize) -> usize {
        self.workers[self.pool.members[i]].active_blocks
    }

    fn overlaps(&self, hashes: &[u64]) -> Option<Vec<usize>> {
        self.pool.index.as_ref().map(|ix| ix.overlaps(hashes))
    }

    fn block_size(&self) -> Option<usize> {
        Some(self.block_size)
    }
}

struct Worker {
    core: EngineCore<SimExecutor>,
    events: Receiver<KvEvent>,
    pool: usize,
    slot: usize,
    prefill_role: bool,
    busy: bool,
    /// When the step in flight ends.
    busy_until: u64,
    /// What the step in flight produces when it ends.
    outputs: Vec<RequestOutput>,
    step_events: Vec<KvEvent>,
    /// Blocks of requests the router has in flight here.
    active_blocks: usize,
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
        let (sizes, policies) = match cfg.topology {
            Topology::Aggregated { workers } => (vec![(workers, false)], vec![cfg.policy]),
            Topology::Disaggregated { prefill, decode } => (
                vec![(prefill, true), (decode, false)],
                vec![cfg.policy, Policy::Kv { temperature: 0.0 }],
            ),
        };
        let mut workers = Vec::new();
        let mut pools = Vec::new();
        for (p, (&(n, prefill_role), policy)) in sizes.iter().zip(policies).enumerate() {
            let members = (workers.len()..workers.len() + n).collect();
            // Decode workers keep no prefix cache, as `tandem serve` runs them.
            let decode_pool = p == 1;
            let engine = EngineConfig {
                enable_prefix_caching: cfg.engine.enable_prefix_caching && !decode_pool,
                ..cfg.engine.clone()
            };
            let track_kv = track_kv && engine.enable_prefix_caching;
            for slot in 0..n {
                let (tx, rx) = channel();
                let mut core = EngineCore::new(
                    engine.clone(),
                    SimExecutor::new(profile.clone()),
                    Vec::new(),
                )
                .expect("the engine config was validated");
                if track_kv {
                    core.set_event_sink(tx);
                }
                workers.push(Worker {
                    core,
                    events: rx,
                    pool: p,
                    slot,
                    prefill_role,
                    busy: false,
                    busy_until: 0,
                    outputs: Vec::new(),
                    step_events: Vec::new(),
                    active_blocks: 0,
                });
            }
            pools.push(Pool {
                members,
                policy,
                index: track_kv.then(|| KvIndex::new(n)),
                next: 0,
            });
        }
        Cluster {
            cfg,
            profile,
            trace,
            workers,
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
        let w = self.pools[0].members[choice.worker];
        self.charge(id, w, blocks);
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

    /// Starts a step on an idle worker that has work.
    fn kick(&mut self, w: usize, t: u64) {
        let worker = &mut self.workers[w];
        if worker.busy || !worker.core.has_work() {
            return;
        }
        let outputs = match worker.core.step() {
            Ok(o) => o,
            Err(f) => {
                let msg = f.error.to_string();
                for id in f.failed {
                    self.fail(id as usize, msg.clone());
                }
                return;
            }
        };
        let worker = &mut self.workers[w];
        worker.step_events.extend(worker.events.try_iter());
        let Some(d) = worker.core.executor_mut().take_step_time() else {
            // Nothing fit (blocks are held elsewhere): wait for a release or an arrival.
            return;
        };
        worker.busy = true;
        worker.outputs = outputs;
        self.steps += 1;
        let end = t + ((d * NS) as u64).max(1);
        worker.busy_until = end;
        self.heap.push(Reverse((end, Event::StepDone(w))));
    }

    fn step_done(&mut self, w: usize, t: u64) {
        let worker = &mut self.workers[w];
        worker.busy = false;
        let outputs = std::mem::take(&mut worker.outputs);
        let events = std::mem::take(&mut worker.step_events);
        if let Some(ix) = &mut self.pools[worker.pool].index {
            for e in &events {
                ix.apply(worker.slot, e);
            }
        }
        let prefill_role = worker.prefill_role;
        let mut handed_off = Vec::new();
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
                handed_off.push(id);
            } else {
                if prefill_role {
                    self.workers[w].core.release_held(id as u64);
                }
                self.tracks[id].prompt = Vec::new();
            }
        }
        self.kick(w, t);
        // The decode worker's pull reaches the prefill worker's engine thread, which reads
        // the held blocks between steps: after the step it has just started, if any.
        let read_at = if self.workers[w].busy {
            self.workers[w].busy_until
        } else {
            t
        };
        for id in handed_off {
            self.start_transfer(id, w, read_at);
        }
    }

    fn start_transfer(&mut self, id: usize, prefill: usize, read_at: u64) {
        let prompt = std::mem::take(&mut self.tracks[id].prompt);
        let mut hashes = std::mem::take(&mut self.tracks[id].hashes);
        let choice = self
            .route(1, &prompt, &mut hashes)
            .expect("the decode pool has a worker");
        let d = self.pools[1].members[choice.worker];
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
