//! The executor seam: the engine hands a step to an [`Executor`] and gets tokens back.
//! [`ModelExecutor`] runs the real model on every tensor-parallel rank (ranks as threads);
//! a simulated executor can stand in for it with a timing model.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use super::sampler::{SampleContext, Sampled, sample};
use super::sequence::RequestId;
use super::tier_copy::{CopyThread, HostArena, Pending};
use crate::backend::ModelInput;
use crate::backend::{Backend, HostTensor, KvMemory};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::kv::{BlockId, KvCopy};
use crate::model::{Qwen3, TpRank, WeightSource};

/// One sequence's share of a step, as a timing model sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SeqWork {
    /// Tokens computed for it this step (1 for a decode).
    pub new_tokens: usize,
    /// Tokens in its cache after the step (cached prefix, earlier tokens and the new ones).
    pub context_len: usize,
}

/// One step: the model input, plus one sampling context per row of `input.logit_rows`.
pub struct StepBatch<'a> {
    /// Every scheduled sequence's share, in row order.
    pub work: Vec<SeqWork>,
    /// The request of each scheduled sequence, in row order.
    pub ids: Vec<RequestId>,
    /// Tokens, positions, slots and attention metadata; empty when the executor runs no
    /// model ([`Executor::runs_model`]).
    pub input: ModelInput,
    /// How to sample each logits row.
    pub samples: Vec<SampleContext<'a>>,
    /// The request of each logits row.
    pub sample_ids: Vec<RequestId>,
    /// Copies between the device cache and the host tier that the step's allocations
    /// queued, in queue order: they run before (or, layer by layer, beside) the forward pass.
    pub copies: Vec<KvCopy>,
}

/// Runs steps; implemented by the real model and by simulators.
pub trait Executor: Send {
    /// Runs one step (its tier copies first, or beside it) and returns one sampled token
    /// per sampling context, in order. A failed copy is [`Error::KvCopy`]: the step did not
    /// complete.
    fn execute(&mut self, batch: &StepBatch<'_>) -> Result<Vec<Sampled>>;

    /// Whether it needs the model input (tokens, positions, slots, block tables); a timing
    /// model reads only [`StepBatch::work`], and building the input would dominate its step.
    fn runs_model(&self) -> bool {
        true
    }

    /// Copies blocks out of the KV cache, one buffer per tensor-parallel rank (its shard of
    /// every layer: for each layer, for each block, K then V).
    fn read_kv_blocks(&mut self, _blocks: &[BlockId]) -> Result<Vec<Vec<u8>>> {
        Err(Error::Backend(
            "this executor holds no KV data to transfer".into(),
        ))
    }

    /// Writes blocks laid out as [`Executor::read_kv_blocks`] returns them.
    fn write_kv_blocks(&mut self, _blocks: &[BlockId], _shards: &[Vec<u8>]) -> Result<()> {
        Err(Error::Backend(
            "this executor holds no KV data to transfer".into(),
        ))
    }

    /// Where each rank's cache lives, rank by rank and layer by layer, for a transfer
    /// library to read and write in place (empty: nowhere it can).
    fn kv_memory(&self) -> Vec<Vec<KvMemory>> {
        Vec::new()
    }

    /// Seconds spent on copies between the tiers so far (the ranks copy their shards at once).
    fn copy_seconds(&self) -> f64 {
        0.0
    }

    /// Runs copies between the device cache and the host tier, in order, on every rank, and
    /// returns when they are done (copies queued outside a step: see [`StepBatch::copies`]).
    fn copy_kv(&mut self, copies: &[KvCopy]) -> Result<()> {
        if copies.is_empty() {
            return Ok(());
        }
        Err(Error::Backend("this executor has no host KV tier".into()))
    }
}

/// The first `n` rows of `t` (a backend may return padding rows after the real ones).
fn first_rows(mut t: HostTensor, n: usize) -> HostTensor {
    if t.rows() > n {
        let cols = t.cols();
        t.data.truncate(n * cols);
        t.shape = vec![n, cols];
    }
    t
}

/// What a rank thread is asked to do.
enum RankCmd {
    Forward(Arc<ModelInput>, Arc<Vec<KvCopy>>),
    Read(Arc<Vec<BlockId>>),
    Write(Arc<Vec<BlockId>>, Vec<u8>),
    Copy(Arc<Vec<KvCopy>>),
}

/// Everything one rank owns: its device, its weight shard and its KV cache.
struct Rank<B: Backend> {
    /// Declared before `kv`, so that a copy thread that writes the cache ends first.
    tier: HostTier,
    backend: B,
    model: Qwen3<B>,
    kv: Vec<B::KvCache>,
    /// Bytes of one block of one layer of this rank's cache (K and V).
    block_bytes: usize,
    /// Every layer's cache memory, taken once at load (it never moves).
    memory: Vec<KvMemory>,
    /// Seconds spent copying between the tiers.
    copy_seconds: f64,
}

/// Who copies between a rank's cache and its host-tier arena.
enum HostTier {
    /// No host tier.
    Off,
    /// The rank's copy thread, layer by layer beside the forward: the cache is host memory.
    Beside(CopyThread),
    /// The backend, on a stream of its own that the forward's work waits for: the cache is
    /// device memory, the arena the backend's pinned memory.
    Backend,
}

impl<B: Backend> Rank<B> {
    fn load(
        backend: B,
        cfg: &ModelConfig,
        src: &WeightSource,
        tp: TpRank,
        ecfg: &ExecutorConfig,
        progress: bool,
    ) -> Result<Self> {
        let model = Qwen3::load(&backend, cfg, src, tp, ecfg.max_model_len, progress)?;
        let spec = model.kv_cache_spec(ecfg.num_blocks, ecfg.block_size);
        let mut kv: Vec<_> = (0..cfg.num_hidden_layers)
            .map(|_| backend.alloc_kv_cache(&spec))
            .collect::<Result<_>>()?;
        let block_bytes = backend.kv_block_bytes(&spec);
        let memory: Vec<KvMemory> = kv.iter_mut().filter_map(|l| backend.kv_memory(l)).collect();
        let slot_bytes = block_bytes * kv.len();
        let host_memory = memory.len() == kv.len() && memory.iter().all(|m| m.device.is_none());
        let tier = match ecfg.host_blocks {
            0 => HostTier::Off,
            slots if backend.alloc_host_tier(slots * slot_bytes)? => HostTier::Backend,
            slots if host_memory => {
                let arena = HostArena::new(slots, slot_bytes);
                let name = format!("kv-copy-{}", tp.rank);
                HostTier::Beside(CopyThread::spawn(name, arena, memory.clone())?)
            }
            _ => {
                return Err(Error::EngineConfig(
                    "this backend can keep no host KV tier".into(),
                ));
            }
        };
        Ok(Rank {
            tier,
            backend,
            model,
            kv,
            block_bytes,
            memory,
            copy_seconds: 0.0,
        })
    }

    /// Runs `copies` and waits for them.
    fn copy(&mut self, copies: &[KvCopy]) -> Result<()> {
        let pending = self.start_copies(copies)?;
        self.finish_copies(pending)?;
        if matches!(self.tier, HostTier::Backend) {
            // Queueing them was counted; the rest of their time is this wait.
            let start = std::time::Instant::now();
            self.backend
                .wait_host_tier()
                .map_err(|e| Error::KvCopy(e.to_string()))?;
            self.copy_seconds += start.elapsed().as_secs_f64();
        }
        Ok(())
    }

    /// Starts `copies`: on the copy thread (the answer says when each layer is done), or on
    /// the backend's copy stream (its next work waits for them; the time counted is the
    /// host's, queueing them).
    fn start_copies(&mut self, copies: &[KvCopy]) -> Result<Option<Pending>> {
        if copies.is_empty() {
            return Ok(None);
        }
        match &mut self.tier {
            HostTier::Off => Err(Error::KvCopy("this worker has no host KV tier".into())),
            HostTier::Beside(t) => Ok(Some(t.start(Arc::new(copies.to_vec())))),
            HostTier::Backend => {
                let start = std::time::Instant::now();
                let slot_bytes = self.block_bytes * self.kv.len();
                self.backend
                    .copy_host_tier(&mut self.kv, copies, slot_bytes)
                    .map_err(|e| Error::KvCopy(e.to_string()))?;
                self.copy_seconds += start.elapsed().as_secs_f64();
                Ok(None)
            }
        }
    }

    fn finish_copies(&mut self, pending: Option<Pending>) -> Result<()> {
        if let Some(p) = pending {
            self.copy_seconds += p.finish()?;
        }
        Ok(())
    }

    /// Runs the step's copies and the forward pass; layer `l` of the forward starts once
    /// layer `l` of the copies is done. A failed copy wins over the forward's own error.
    fn forward(&mut self, input: &ModelInput, copies: &[KvCopy]) -> Result<B::Tensor> {
        let pending = self.start_copies(copies)?;
        let (backend, model, kv) = (&self.backend, &self.model, &mut self.kv);
        let ready = |layer: usize| pending.as_ref().map_or(Ok(()), |p| p.ready(layer));
        let out = backend.run_step(input, |inp| model.forward(backend, kv, inp, &ready));
        self.finish_copies(pending)?;
        out
    }

    fn memory(&self) -> Vec<KvMemory> {
        self.memory.clone()
    }

    fn read(&self, blocks: &[BlockId]) -> Result<Vec<u8>> {
        let mut out = Vec::new();
        for layer in &self.kv {
            out.extend(self.backend.read_kv_blocks(layer, blocks)?);
        }
        Ok(out)
    }

    fn write(&mut self, blocks: &[BlockId], data: &[u8]) -> Result<()> {
        let per_layer = data.len() / self.kv.len().max(1);
        if per_layer * self.kv.len() != data.len() {
            return Err(Error::Backend(format!(
                "{} bytes do not split over {} layers",
                data.len(),
                self.kv.len()
            )));
        }
        for (layer, chunk) in self.kv.iter_mut().zip(data.chunks(per_layer.max(1))) {
            self.backend.write_kv_blocks(layer, blocks, chunk)?;
        }
        Ok(())
    }

    fn run(&mut self, cmd: RankCmd) -> Result<Option<Vec<u8>>> {
        match cmd {
            RankCmd::Forward(input, copies) => self.forward(&input, &copies).map(|_| None),
            RankCmd::Read(blocks) => self.read(&blocks).map(Some),
            RankCmd::Write(blocks, data) => self.write(&blocks, &data).map(|_| None),
            RankCmd::Copy(copies) => self.copy(&copies).map(|_| None),
        }
    }
}

struct RankThread {
    tx: Sender<RankCmd>,
    done: Receiver<Result<Option<Vec<u8>>>>,
    handle: Option<JoinHandle<()>>,
}

/// Where and how to load the model for a [`ModelExecutor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExecutorConfig {
    /// Tensor-parallel ranks.
    pub tp_size: usize,
    /// KV blocks per rank.
    pub num_blocks: usize,
    /// Tokens per block.
    pub block_size: usize,
    /// Longest sequence (sizes the RoPE table).
    pub max_model_len: usize,
    /// Slots of the host KV tier per rank (0: none).
    pub host_blocks: usize,
    /// Show a progress bar while loading.
    pub progress: bool,
}

/// The real model on `tp_size` ranks: rank 0 runs on the caller's thread, the others on their own.
pub struct ModelExecutor<B: Backend> {
    rank0: Rank<B>,
    others: Vec<RankThread>,
    /// Every rank's cache memory, gathered at load (it never moves).
    memory: Vec<Vec<KvMemory>>,
}

impl<B: Backend> ModelExecutor<B> {
    /// Loads every rank's shard (in parallel) with backends made by `make_backend(rank)`.
    pub fn load(
        cfg: &ModelConfig,
        src: Arc<WeightSource>,
        ecfg: ExecutorConfig,
        make_backend: impl Fn(usize) -> B,
    ) -> Result<Self> {
        TpRank::validate(ecfg.tp_size, cfg)?;
        let mut others = Vec::new();
        let mut ready = Vec::new();
        for rank in 1..ecfg.tp_size {
            let (tx, rx) = channel::<RankCmd>();
            let (done_tx, done) = channel::<Result<Option<Vec<u8>>>>();
            let (ready_tx, ready_rx) = channel::<Result<Vec<KvMemory>>>();
            let (backend, cfg, src) = (make_backend(rank), cfg.clone(), src.clone());
            let tp = TpRank {
                rank,
                size: ecfg.tp_size,
            };
            let handle = std::thread::Builder::new()
                .name(format!("tp-rank-{rank}"))
                .spawn(move || {
                    let loaded = Rank::load(backend, &cfg, &src, tp, &ecfg, false);
                    let mut state = match loaded {
                        Ok(s) => {
                            let _ = ready_tx.send(Ok(s.memory()));
                            s
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    while let Ok(cmd) = rx.recv() {
                        if done_tx.send(state.run(cmd)).is_err() {
                            break;
                        }
                    }
                })
                .map_err(|e| Error::Backend(format!("cannot spawn rank {rank}: {e}")))?;
            others.push(RankThread {
                tx,
                done,
                handle: Some(handle),
            });
            ready.push(ready_rx);
        }
        let tp0 = TpRank {
            rank: 0,
            size: ecfg.tp_size,
        };
        let rank0 = Rank::load(make_backend(0), cfg, &src, tp0, &ecfg, ecfg.progress)?;
        let mut memory = vec![rank0.memory()];
        for r in ready {
            memory.push(
                r.recv()
                    .map_err(|_| Error::Backend("a rank died while loading".into()))??,
            );
        }
        Ok(ModelExecutor {
            rank0,
            others,
            memory,
        })
    }

    /// Sends `make(rank)` to ranks 1.. and collects their answers after `rank0` ran on this thread.
    fn on_all_ranks<T>(
        &mut self,
        make: impl Fn(usize) -> RankCmd,
        rank0: impl FnOnce(&mut Rank<B>) -> Result<T>,
    ) -> Result<(T, Vec<Option<Vec<u8>>>)> {
        let exited = || Error::Backend("a tensor-parallel rank has exited".into());
        for (i, r) in self.others.iter().enumerate() {
            r.tx.send(make(i + 1)).map_err(|_| exited())?;
        }
        let first = rank0(&mut self.rank0);
        let mut rest = Vec::with_capacity(self.others.len());
        for r in &self.others {
            rest.push(r.done.recv().map_err(|_| exited())??);
        }
        Ok((first?, rest))
    }

    /// Rank 0's backend (device statistics).
    pub fn backend(&self) -> &B {
        &self.rank0.backend
    }

    /// Bytes of one block of one layer on one rank (K and V), as the backend stores them.
    pub fn kv_block_bytes(&self) -> usize {
        self.rank0.block_bytes
    }

    /// Runs `copies` between the tiers and the model on every rank, and returns the logits
    /// of `input.logit_rows`.
    pub fn forward_logits(&mut self, input: &ModelInput, copies: &[KvCopy]) -> Result<HostTensor> {
        // TP1 never calls `make`: no copy of the input then.
        let shared = std::cell::OnceCell::new();
        let (logits, _) = self.on_all_ranks(
            |_| {
                let (input, copies) =
                    shared.get_or_init(|| (Arc::new(input.clone()), Arc::new(copies.to_vec())));
                RankCmd::Forward(input.clone(), copies.clone())
            },
            |r| r.forward(input, copies).and_then(|t| r.backend.to_host(&t)),
        )?;
        Ok(first_rows(logits, input.logit_rows.len()))
    }
}

impl<B: Backend> Executor for ModelExecutor<B> {
    fn execute(&mut self, batch: &StepBatch<'_>) -> Result<Vec<Sampled>> {
        let logits = self.forward_logits(&batch.input, &batch.copies)?;
        Ok(batch
            .samples
            .iter()
            .enumerate()
            .map(|(i, ctx)| sample(&mut logits.row(i).to_vec(), ctx))
            .collect())
    }

    fn kv_memory(&self) -> Vec<Vec<KvMemory>> {
        self.memory.clone()
    }

    fn copy_seconds(&self) -> f64 {
        self.rank0.copy_seconds
    }

    fn copy_kv(&mut self, copies: &[KvCopy]) -> Result<()> {
        if copies.is_empty() {
            return Ok(());
        }
        let shared = Arc::new(copies.to_vec());
        self.on_all_ranks(|_| RankCmd::Copy(shared.clone()), |r| r.copy(copies))?;
        Ok(())
    }

    fn read_kv_blocks(&mut self, blocks: &[BlockId]) -> Result<Vec<Vec<u8>>> {
        let shared = Arc::new(blocks.to_vec());
        let (first, rest) =
            self.on_all_ranks(|_| RankCmd::Read(shared.clone()), |r| r.read(blocks))?;
        Ok(std::iter::once(first)
            .chain(rest.into_iter().map(Option::unwrap_or_default))
            .collect())
    }

    fn write_kv_blocks(&mut self, blocks: &[BlockId], shards: &[Vec<u8>]) -> Result<()> {
        if shards.len() != self.others.len() + 1 {
            return Err(Error::Backend(format!(
                "{} KV shards for {} ranks",
                shards.len(),
                self.others.len() + 1
            )));
        }
        let shared = Arc::new(blocks.to_vec());
        self.on_all_ranks(
            |rank| RankCmd::Write(shared.clone(), shards[rank].clone()),
            |r| r.write(blocks, &shards[0]),
        )?;
        Ok(())
    }
}

impl<B: Backend> Drop for ModelExecutor<B> {
    fn drop(&mut self) {
        for mut r in self.others.drain(..) {
            drop(r.tx);
            if let Some(h) = r.handle.take() {
                let _ = h.join();
            }
        }
    }
}
