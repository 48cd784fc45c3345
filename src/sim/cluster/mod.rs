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
use std::sync::mpsc::Receiver;
use std::time::Instant;

use rand::RngExt;
use rand::rngs::StdRng;

mod build;
mod handoff;

use build::{Pool, SimPool};

use super::executor::SimExecutor;
use super::profile::Profile;
use super::pulls::PullService;
use super::serving::RESUMES_AFTER_NS;
use super::track::{Path, Track};
use crate::config::EngineConfig;
use crate::engine::{EngineCore, Request, RequestOutput, SamplingParams, SeqWork};
use crate::error::Result;
use crate::kv::KvEvent;
use crate::replay::metrics::RequestRecord;
use crate::replay::trace::{TraceRequest, synthesize_into};
use crate::router::{Choice, Policy, pick};

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
    /// Write each request's clock points into its record (as a timed real request's).
    pub timelines: bool,
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
    /// CPU time the serving path took from its cores since its step began, s: its next
    /// step takes that much longer.
    debt: f64,
    /// Decode calls waiting for the step in flight to end: the engine thread reserves
    /// their blocks between steps, and only then do their pulls start.
    reserves: Vec<usize>,
    /// The pulls it serves as a prefill worker.
    pulls: PullService,
    /// Its engine thread was woken and starts a step at `wake_at`.
    waking: bool,
    wake_at: u64,
    /// When its last step ended (None before its first).
    last_end: Option<u64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    StepDone(usize),
    /// Pulls served by a gang may have ended (gang, version of its pull service).
    PullsDone(usize, u64),
    /// A routed request reaches its engine.
    Enqueue(usize),
    /// A decode worker gets the Decode call of a request.
    PullStart(usize),
    /// An idle gang's engine thread, woken by a request, starts its step.
    Wake(usize),
    /// A gang's engine thread, done with its turn between two steps, starts the next.
    Resume(usize),
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
    path: Path,
    /// When the frontend takes its next request (a burst's come one after another).
    frontend_next: u64,
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

impl Cluster<'_> {
    fn pop_event(&mut self) {
        let Some(Reverse((t, ev))) = self.heap.pop() else {
            return;
        };
        match ev {
            Event::StepDone(w) => self.step_done(w, t),
            Event::PullsDone(g, v) => self.pulls_done(g, v, t),
            Event::Enqueue(id) => self.enqueue(id, t),
            Event::PullStart(id) => self.pull_start(id, t),
            // A later arrival has put the wake off: its own event comes.
            Event::Wake(g) if self.gangs[g].waking && t >= self.gangs[g].wake_at => {
                self.gangs[g].waking = false;
                let first = self.gangs[g].members[0];
                self.kick(first, t);
            }
            Event::Wake(_) => {}
            Event::Resume(g) => {
                self.engine_free(g, t);
                let first = self.gangs[g].members[0];
                self.kick(first, t);
            }
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
        self.records
            .push(RequestRecord::sent(id, t as f64 / 1e6, r.input_length));
        // Room for the output too: the engine appends it in place.
        let mut prompt = Vec::with_capacity(r.input_length + r.output_length);
        synthesize_into(r, 0, self.cfg.vocab, self.cfg.trace_block, &mut prompt);
        let blocks = prompt.len().div_ceil(self.cfg.engine.block_size);
        let mut hashes = Vec::new();
        let choice = self
            .route(0, &prompt, &mut hashes)
            .expect("every pool has a worker");
        let w = self.member(0, choice);
        let prefill_role = self.workers[w].prefill_role;
        // The frontend takes a burst's requests one after another.
        let taken = t.max(self.frontend_next);
        self.frontend_next = taken + self.path.arrival_gap;
        let stagger = taken - t;
        self.tracks.push(Track::new(
            (t, stagger),
            &self.path,
            self.cfg.timelines,
            prefill_role,
        ));
        self.charge(id, w, choice.load_blocks(blocks));
        self.share_cpu(self.path.shared_cpu_per_request);
        let mut params = self.params(id);
        if prefill_role {
            // The prefill call asks for one token; the decode worker makes the rest.
            params.max_tokens = 1;
            let mut kept = Vec::with_capacity(prompt.capacity());
            kept.extend_from_slice(&prompt);
            self.tracks[id].prompt = kept;
            // Kept to route the decode; the engine gets a copy.
            self.tracks[id].hashes = hashes.clone();
        }
        let req = Request {
            id: id as u64,
            prompt,
            params,
        };
        if self.path.entry + stagger == 0 {
            self.add(id, w, req, hashes, t);
        } else {
            // The router counts it against the worker from its pick on, as the frontend's.
            self.tracks[id].pending = Some((w, req, hashes));
            let at = t + stagger + self.path.entry;
            self.heap.push(Reverse((at, Event::Enqueue(id))));
        }
    }

    fn enqueue(&mut self, id: usize, t: u64) {
        if let Some((w, req, hashes)) = self.tracks[id].pending.take() {
            self.add(id, w, req, hashes, t);
        }
    }

    /// Request `id` reaches engine `w` at `t`, with the block hashes its router computed
    /// (none under round-robin), which spare the engine hashing the prompt again.
    fn add(&mut self, id: usize, w: usize, req: Request, hashes: Vec<u64>, t: u64) {
        let g = self.workers[w].gang;
        if self.gangs[g].busy {
            self.gangs[g].debt += self.path.worker_cpu_per_request;
        }
        let prefill_role = self.workers[w].prefill_role;
        let core = &mut self.workers[w].core;
        let added = if prefill_role {
            core.add_prefill_request(req)
        } else {
            core.add_request(req)
        };
        match added {
            Ok(()) => {
                if !hashes.is_empty() {
                    core.give_prompt_hashes(id as u64, hashes)
                        .expect("the router hashes the prompt at the engine's block size");
                }
                self.wake(w, t)
            }
            Err(e) => self.fail(id, e.to_string()),
        }
    }

    /// A request reached engine `w` at `t`. An idle engine thread starts its step once the
    /// worker's serving thread, which shares its core, has gone quiet for `engine_wake`:
    /// each arrival meanwhile puts the step off, and joins it (a burst's requests that
    /// reach the worker close together make one step, as they do for real), except in the
    /// measured share of the bursts where the engine thread takes the core first.
    pub(super) fn wake(&mut self, w: usize, t: u64) {
        let g = self.workers[w].gang;
        if self.gangs[g].busy {
            return;
        }
        if self.path.engine_wake == 0 {
            self.kick(w, t);
            return;
        }
        if !self.gangs[g].waking && self.rng.random::<f64>() < self.path.engine_early_share {
            // The engine thread wins the race for the core: it starts with this request
            // alone, and the burst's others reach it behind the step.
            self.kick(w, t);
            return;
        }
        let at = t + self.path.engine_wake;
        self.gangs[g].waking = true;
        self.gangs[g].wake_at = at;
        self.heap.push(Reverse((at, Event::Wake(g))));
    }

    /// CPU time `s` that the frontend and the client take from the shared cores, spread
    /// evenly over them: a busy worker's core gives its share from its next step, an idle
    /// core absorbs its share unnoticed.
    fn share_cpu(&mut self, s: f64) {
        if s <= 0.0 || self.path.shared_cores <= 0.0 {
            return;
        }
        let each = s / self.path.shared_cores;
        for g in self.gangs.iter_mut().filter(|g| g.busy) {
            g.debt += each;
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
        // An engine that sat idle resumes slower (the same rule as the real steps' is
        // measured by: `RESUMES_AFTER_NS` since its last step's end).
        let resumed = self.gangs[g]
            .last_end
            .is_none_or(|e| t.saturating_sub(e) >= RESUMES_AFTER_NS);
        let d = self.profile.worker_step_time(&ranks).max(copy_s)
            + std::mem::take(&mut self.gangs[g].debt)
            + if resumed {
                self.path.engine_resume
            } else {
                0.0
            };
        self.steps += 1;
        let end = t + ((d * NS) as u64).max(1);
        self.gangs[g].busy = true;
        self.heap.push(Reverse((end, Event::StepDone(g))));
        if self.cfg.timelines {
            for i in 0..self.gangs[g].members.len() {
                let m = self.gangs[g].members[i];
                let worker = &mut self.workers[m];
                let sampled: Vec<u64> = worker
                    .outputs
                    .iter()
                    .filter(|o| o.token.is_some())
                    .map(|o| o.id)
                    .collect();
                let role = worker.prefill_role;
                for id in worker.core.executor_mut().take_step_ids() {
                    self.tracks[id as usize].step(role, t, end, sampled.contains(&id));
                }
            }
        }
    }

    /// Gang `g`'s engine thread is between steps: the reservations waiting for it are made,
    /// and their pulls start.
    fn engine_free(&mut self, g: usize, t: u64) {
        self.gangs[g].busy = false;
        for id in std::mem::take(&mut self.gangs[g].reserves) {
            self.begin_pull(id, t);
        }
    }

    fn step_done(&mut self, g: usize, t: u64) {
        self.engine_free(g, t);
        self.gangs[g].last_end = Some(t);
        let mut handed_off = Vec::new();
        let mut tokens = 0;
        // Whether the engine steps on at once: its serving thread then sends beside it.
        let stepping_on = self.gangs[g]
            .members
            .iter()
            .any(|&m| self.workers[m].core.has_work());
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
                    rec.cached_tokens = out.cached_tokens;
                }
                let relayed = track.token(prefill_role, (t, stepping_on), tokens, &self.path);
                rec.output_tokens += 1;
                tokens += 1;
                if out.finish.is_none() {
                    continue;
                }
                // The worker call returned: the router stops counting the request there.
                self.uncharge(id);
                if prefill_role && self.trace[id].output_length > 1 {
                    self.tracks[id].first_token = tok.token;
                    handed_off.push((id, w, relayed));
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
        // The engine thread's turn between steps (it hands the outputs over, takes its
        // commands) puts the next one off; the gang counts as busy meanwhile.
        let gap = self.path.engine_gap(tokens);
        if stepping_on && gap > 0 {
            self.gangs[g].busy = true;
            self.heap.push(Reverse((t + gap, Event::Resume(g))));
        } else {
            self.kick(first, t);
        }
        // What the serving path took from the cores during the step is paid by the next
        // one; a worker that goes idle owes nothing (its core had time to spare).
        // The worker's own serving threads send its tokens on its cores; the frontend and
        // the client relay them on the shared ones.
        if self.gangs[g].busy {
            self.gangs[g].debt += tokens as f64 * self.path.worker_cpu_per_token;
        } else {
            self.gangs[g].debt = 0.0;
        }
        self.share_cpu(tokens as f64 * self.path.shared_cpu_per_token);
        // The decode worker reads the held blocks in place (NIXL, or the KV socket over a
        // cache in host memory), beside the prefill worker's next step: it starts once the
        // frontend has relayed the first token and called it.
        for (id, w, relayed) in handed_off {
            self.start_transfer(id, w, relayed + self.path.decode_call);
        }
    }

    fn finish(mut self, wall: Instant) -> Result<SimOutcome> {
        let mut end = 0;
        for (rec, tr) in self.records.iter_mut().zip(&mut self.tracks) {
            let ms = |x: u64| (x - tr.send) as f64 / 1e6;
            if rec.error.is_none() {
                if tr.first.is_none() || rec.output_tokens < self.trace[rec.index].output_length {
                    rec.error = Some("the request did not finish".into());
                    continue;
                }
                rec.ttft_ms = tr.first.map(ms);
                rec.latency_ms = Some(ms(tr.end));
                rec.timeline = tr.timeline.take();
                end = end.max(tr.end);
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
