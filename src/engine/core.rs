//! The engine step: schedule, build the model input, execute, append tokens, finish requests.

use std::collections::HashMap;
use std::sync::mpsc::Sender;

use super::executor::{Executor, SeqWork, StepBatch};
use super::hold::{Held, HoldView};
use super::output::{RequestOutput, StepFailure};
use super::sampler::SampleContext;
use super::scheduler::{Scheduler, SchedulerConfig, SchedulerOutput};
use super::sequence::{FinishReason, Request, RequestId, Sequence, validate_request};
use crate::backend::ModelInput;
use crate::backend::{AttentionMeta, AttnSeq};
use crate::config::EngineConfig;
use crate::error::{Error, Result};
use crate::kv::{BlockTable, EventDetail, KvCacheManager, KvCopy, KvEvent, PoolStats};

/// The engine of one worker: scheduler, KV cache manager and executor, stepped by its owner.
pub struct EngineCore<E: Executor> {
    pub(super) cfg: EngineConfig,
    pub(super) scheduler: Scheduler,
    pub(super) kv: KvCacheManager,
    pub(super) executor: E,
    eos: Vec<u32>,
    events: Option<Sender<KvEvent>>,
    next_seed: u64,
    num_preemptions: u64,
    num_aborted: u64,
    num_generated: u64,
    num_copy_failures: u64,
    /// Blocks of finished prefill requests, waiting to be pulled (see handoff.rs).
    pub(super) held: HashMap<RequestId, Held>,
    /// Which requests are in `held`, published for the transfer service.
    pub(super) hold_view: HoldView,
    /// Blocks allocated for KV arriving from a prefill worker (see handoff.rs).
    pub(super) reserved: HashMap<RequestId, BlockTable>,
    scratch: StepScratch,
}

/// A step's own lists, empty between steps, kept for the next one: a simulator runs
/// hundreds of thousands of steps, and allocating them anew each time was a visible share of
/// its time.
#[derive(Default)]
struct StepScratch {
    work: Vec<SeqWork>,
    ids: Vec<RequestId>,
    sample_ids: Vec<RequestId>,
    sampling: Vec<bool>,
}

impl<E: Executor> EngineCore<E> {
    /// An engine over `executor`, whose KV cache has `cfg.num_blocks` blocks; `eos` ends requests
    /// that do not ignore it.
    pub fn new(cfg: EngineConfig, executor: E, eos: Vec<u32>) -> Result<Self> {
        cfg.validate()?;
        let kv = KvCacheManager::new(
            cfg.num_blocks,
            cfg.block_size,
            cfg.enable_prefix_caching,
            EventDetail::Off,
        )
        .with_host_tier(cfg.host_kv_blocks);
        let scheduler = Scheduler::new(SchedulerConfig {
            max_num_seqs: cfg.max_num_seqs,
            max_num_batched_tokens: cfg.max_num_batched_tokens,
            long_prefill_token_threshold: cfg.long_prefill_token_threshold,
        });
        Ok(EngineCore {
            cfg,
            scheduler,
            kv,
            executor,
            eos,
            events: None,
            next_seed: rand::random(),
            num_preemptions: 0,
            num_aborted: 0,
            num_generated: 0,
            num_copy_failures: 0,
            held: HashMap::new(),
            hold_view: HoldView::default(),
            reserved: HashMap::new(),
            scratch: StepScratch::default(),
        })
    }

    /// The same engine over `f(executor)` (e.g. the executor wrapped in test hooks).
    pub fn map_executor<F: Executor>(self, f: impl FnOnce(E) -> F) -> EngineCore<F> {
        EngineCore {
            cfg: self.cfg,
            scheduler: self.scheduler,
            kv: self.kv,
            executor: f(self.executor),
            eos: self.eos,
            events: self.events,
            next_seed: self.next_seed,
            num_preemptions: self.num_preemptions,
            num_aborted: self.num_aborted,
            num_generated: self.num_generated,
            num_copy_failures: self.num_copy_failures,
            held: self.held,
            hold_view: self.hold_view,
            reserved: self.reserved,
            scratch: self.scratch,
        }
    }

    /// Sends every KV event, in `detail`, to `sink` from now on (none are recorded without
    /// a sink).
    pub fn set_event_sink(&mut self, sink: Sender<KvEvent>, detail: EventDetail) {
        self.events = Some(sink);
        self.kv.set_event_detail(detail);
    }

    /// The engine's configuration.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The executor.
    pub fn executor(&self) -> &E {
        &self.executor
    }

    /// The executor (for tests that inspect it).
    pub fn executor_mut(&mut self) -> &mut E {
        &mut self.executor
    }

    /// Counters of the KV cache.
    pub fn kv_stats(&self) -> PoolStats {
        self.kv.stats()
    }

    /// Running and waiting sequences.
    pub fn num_requests(&self) -> (usize, usize) {
        (self.scheduler.running.len(), self.scheduler.waiting.len())
    }

    /// Prompt tokens not yet computed, over waiting and running sequences.
    pub fn queued_prefill_tokens(&self) -> usize {
        let s = &self.scheduler;
        s.waiting
            .iter()
            .chain(&s.running)
            .map(|q| q.prompt_len.saturating_sub(q.num_computed))
            .sum()
    }

    /// Preemptions since the engine started.
    pub fn num_preemptions(&self) -> u64 {
        self.num_preemptions
    }

    /// Requests ended by [`EngineCore::abort`] while live, since the engine started.
    pub fn num_aborted(&self) -> u64 {
        self.num_aborted
    }

    /// Tokens sampled since the engine started.
    pub fn num_generated(&self) -> u64 {
        self.num_generated
    }

    /// Whether a step would do anything.
    pub fn has_work(&self) -> bool {
        self.scheduler.has_work()
    }

    /// Checks the KV invariants; when idle, also that every block is free with no references.
    pub fn check_invariants(&self) -> std::result::Result<(), String> {
        if self.has_work() || !self.held.is_empty() || !self.reserved.is_empty() {
            self.kv.pool().check_invariants()
        } else {
            self.kv.pool().check_all_free()
        }
    }

    /// Queues a request after validating it.
    pub fn add_request(&mut self, req: Request) -> Result<()> {
        validate_request(&self.cfg, &req)?;
        if self.scheduler.contains(req.id) {
            return Err(Error::InvalidRequest(format!(
                "request id {} is already in use",
                req.id
            )));
        }
        self.next_seed = self.next_seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
        self.scheduler
            .waiting
            .push_back(Sequence::new(req, self.next_seed));
        Ok(())
    }

    /// Gives a waiting request the sequence hashes of its prompt's leading full blocks
    /// (`kv::hash::extend_sequence_hashes` at this engine's block size), as a KV router
    /// computed them to pick this worker, so that its prefix lookup does not hash the prompt
    /// again. The caller vouches for them; a lookup still compares a hit's tokens.
    pub fn give_prompt_hashes(&mut self, id: RequestId, hashes: Vec<u64>) -> Result<()> {
        let bs = self.cfg.block_size;
        let seq = self
            .scheduler
            .waiting
            .iter_mut()
            .rev()
            .find(|s| s.id == id)
            .ok_or_else(|| Error::InvalidRequest(format!("request {id} is not waiting")))?;
        if hashes.len() > seq.prompt_len / bs || !seq.table.start_from_hashes(hashes) {
            return Err(Error::InvalidRequest(format!(
                "request {id}: more hashes than full prompt blocks, or blocks already looked up"
            )));
        }
        Ok(())
    }

    /// Ends a request wherever it is and frees its blocks; false if it is not live.
    pub fn abort(&mut self, id: RequestId) -> bool {
        let found = self.scheduler.remove(id, &mut self.kv).is_some()
            || self.release_held(id)
            || self.cancel_reserved(id);
        self.num_aborted += u64::from(found);
        self.flush_events();
        found
    }

    /// Ends every live request (running, waiting, held for a pull, reserved for one) and
    /// frees its blocks; returns their ids.
    pub fn abort_all(&mut self) -> Vec<RequestId> {
        let ids: Vec<RequestId> = self
            .scheduler
            .running
            .iter()
            .chain(&self.scheduler.waiting)
            .map(|s| s.id)
            .chain(self.held.keys().copied())
            .chain(self.reserved.keys().copied())
            .collect();
        for &id in &ids {
            self.abort(id);
        }
        ids
    }

    /// Requests whose blocks are held for a pull or reserved for one.
    pub fn num_handoffs(&self) -> usize {
        self.held.len() + self.reserved.len()
    }

    /// Drops the prefix cache; false while requests hold blocks.
    pub fn reset_prefix_cache(&mut self) -> bool {
        let ok = self.kv.reset_prefix_cache();
        self.flush_events();
        ok
    }

    /// Copies between the tiers that failed (their blocks were recomputed instead).
    pub fn num_copy_failures(&self) -> u64 {
        self.num_copy_failures
    }

    /// Seconds the executor spent on copies between the tiers.
    pub fn copy_seconds(&self) -> f64 {
        self.executor.copy_seconds()
    }

    /// Runs the copies between the tiers that the pool has queued outside a step, and waits
    /// for them. A failed one only loses its host copies (its slots are forgotten).
    pub(super) fn run_copies(&mut self) {
        let copies = self.kv.drain_copies();
        if copies.is_empty() {
            return;
        }
        if let Err(e) = self.executor.copy_kv(&copies) {
            self.copy_failed(&copies, &e);
        }
    }

    fn copy_failed(&mut self, copies: &[KvCopy], e: &Error) {
        self.num_copy_failures += 1;
        tracing::warn!("KV copy between tiers failed ({e}); recomputing instead");
        self.kv.forget_offloads(copies);
    }

    /// Runs one step. On an executor error the step's requests are ended (their blocks freed)
    /// and reported in the [`StepFailure`]; the engine stays usable. A failed copy between the
    /// tiers ends none: the step's sequences start over and compute what they no longer find.
    pub fn step(&mut self) -> std::result::Result<Vec<RequestOutput>, StepFailure> {
        let began = std::time::Instant::now();
        let plan = self.scheduler.schedule(&mut self.kv);
        self.num_preemptions += plan.preempted.len() as u64;
        if plan.scheduled.is_empty() {
            self.run_copies();
            self.flush_events();
            return Ok(Vec::new());
        }
        let copies = self.kv.drain_copies();
        let bs = self.cfg.block_size;
        let mut input = ModelInput {
            attn: AttentionMeta {
                block_size: bs,
                seqs: Vec::new(),
            },
            ..Default::default()
        };
        let runs_model = self.executor.runs_model();
        let StepScratch {
            mut work,
            mut ids,
            mut sample_ids,
            mut sampling,
        } = std::mem::take(&mut self.scratch);
        let mut samples = Vec::new();
        let mut rows = 0;
        for s in &plan.scheduled {
            let seq = &self.scheduler.running[s.index];
            let start = seq.num_computed;
            let end = start + s.num_new;
            work.push(SeqWork {
                new_tokens: s.num_new,
                context_len: end,
            });
            ids.push(seq.id);
            if runs_model {
                input.attn.seqs.push(AttnSeq {
                    query_start: rows,
                    query_len: s.num_new,
                    context_len: end,
                    block_table: seq.table.blocks.clone(),
                });
                input.tokens.extend_from_slice(&seq.tokens[start..end]);
                for pos in start..end {
                    input.positions.push(pos as u32);
                    input
                        .slots
                        .push(seq.table.blocks[pos / bs] * bs as u32 + (pos % bs) as u32);
                }
            }
            rows += s.num_new;
            let samples_now = end == seq.tokens.len();
            if samples_now {
                if runs_model {
                    input.logit_rows.push(rows - 1);
                }
                samples.push(SampleContext {
                    params: &seq.params,
                    prompt: seq.prompt(),
                    output: seq.output(),
                    eos: &self.eos,
                    seed: seq.seed,
                });
                sample_ids.push(seq.id);
            }
            sampling.push(samples_now);
        }
        let batch = StepBatch {
            work,
            ids,
            input,
            samples,
            sample_ids,
            copies,
        };
        let result = self.executor.execute(&batch);
        let StepBatch {
            mut work,
            mut ids,
            mut sample_ids,
            copies,
            ..
        } = batch;
        work.clear();
        ids.clear();
        sample_ids.clear();
        let sampled = match result {
            Ok(s) => {
                self.kv.commit_cached();
                s
            }
            Err(Error::KvCopy(e)) => {
                // Sequences of this step may count onboarded blocks as computed, and the step
                // did not complete: they start over (as after a preemption), and what it
                // cached leaves the cache again, so they recompute it.
                self.copy_failed(&copies, &Error::KvCopy(e));
                let ids = self.scheduled_ids(&plan);
                self.kv.forget_uncommitted();
                self.scheduler.requeue(&ids, &mut self.kv);
                self.flush_events();
                return Ok(Vec::new());
            }
            Err(e) => {
                self.kv.forget_uncommitted();
                let failed = self.scheduled_ids(&plan);
                for &id in &failed {
                    self.scheduler.remove(id, &mut self.kv);
                }
                self.flush_events();
                return Err(StepFailure { error: e, failed });
            }
        };
        let mut sampled = sampled.into_iter();
        // A simulator's steps take no real time: it keeps its own clock.
        let ended = runs_model.then(std::time::Instant::now);
        let mut outputs = Vec::with_capacity(plan.scheduled.len());
        let mut finished = Vec::new();
        for (s, &samples_now) in plan.scheduled.iter().zip(&sampling) {
            let seq = &mut self.scheduler.running[s.index];
            seq.num_computed += s.num_new;
            let mut out = RequestOutput {
                id: seq.id,
                token: None,
                finish: None,
                prompt_tokens: seq.prompt_len,
                cached_tokens: seq.num_cached_prompt.unwrap_or(0),
                held_blocks: None,
                timing: None,
                steps: Vec::new(),
            };
            if let Some(ended) = ended {
                seq.times.steps.push(crate::timeline::StepTimes {
                    start: crate::timeline::instant_ns(began),
                    end: crate::timeline::instant_ns(ended),
                    sampled: samples_now,
                });
            }
            if samples_now {
                let tok = sampled
                    .next()
                    .expect("the executor returns one token per sampling context");
                seq.tokens.push(tok.token);
                self.num_generated += 1;
                seq.times
                    .first_token
                    .get_or_insert_with(std::time::Instant::now);
                out.finish = self.finish_reason(&self.scheduler.running[s.index], tok.token);
                out.token = Some(tok);
            }
            if out.finish.is_some() {
                let seq = &self.scheduler.running[s.index];
                if seq.hold_kv {
                    out.held_blocks = Some(seq.table.blocks.clone());
                }
                out.timing = Some(seq.times.timing(std::time::Instant::now()));
                out.steps = std::mem::take(&mut self.scheduler.running[s.index].times.steps);
                finished.push(out.id);
            }
            // Only requests with news report: a mid-prompt chunk says nothing.
            if out.token.is_some() {
                outputs.push(out);
            }
        }
        for id in finished {
            self.finish_sequence(id);
        }
        sampling.clear();
        self.scratch = StepScratch {
            work,
            ids,
            sample_ids,
            sampling,
        };
        self.flush_events();
        Ok(outputs)
    }

    /// The requests a plan scheduled, in its order.
    fn scheduled_ids(&self, plan: &SchedulerOutput) -> Vec<RequestId> {
        plan.scheduled
            .iter()
            .map(|s| self.scheduler.running[s.index].id)
            .collect()
    }

    fn finish_reason(&self, seq: &Sequence, token: u32) -> Option<FinishReason> {
        let p = &seq.params;
        if (!p.ignore_eos && self.eos.contains(&token)) || p.stop_token_ids.contains(&token) {
            Some(FinishReason::Stop)
        } else if seq.output().len() >= p.max_tokens || seq.tokens.len() >= self.cfg.max_model_len {
            Some(FinishReason::Length)
        } else {
            None
        }
    }

    fn flush_events(&mut self) {
        let events = self.kv.drain_events();
        if let Some(sink) = &self.events {
            for e in events {
                if sink.send(e).is_err() {
                    self.events = None;
                    self.kv.set_event_detail(EventDetail::Off);
                    break;
                }
            }
        }
    }
}
