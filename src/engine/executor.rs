//! The executor seam: the engine hands a step to an [`Executor`] and gets tokens back.
//! [`ModelExecutor`] runs the real model on every tensor-parallel rank (ranks as threads);
//! a simulated executor can stand in for it with a timing model.

use std::sync::Arc;
use std::sync::mpsc::{Receiver, Sender, channel};
use std::thread::JoinHandle;

use super::sampler::{SampleContext, Sampled, sample};
use super::sequence::RequestId;
use crate::backend::{Backend, HostTensor};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
use crate::model::{ModelInput, Qwen3, TpRank, WeightSource};

/// One step: the model input, plus one sampling context per row of `input.logit_rows`.
pub struct StepBatch<'a> {
    /// Tokens, positions, slots and attention metadata.
    pub input: ModelInput,
    /// How to sample each logits row.
    pub samples: Vec<SampleContext<'a>>,
    /// The request of each logits row.
    pub sample_ids: Vec<RequestId>,
}

/// Runs steps; implemented by the real model and by simulators.
pub trait Executor: Send {
    /// Runs one step and returns one sampled token per sampling context, in order.
    fn execute(&mut self, batch: &StepBatch<'_>) -> Result<Vec<Sampled>>;
}

/// Everything one rank owns: its device, its weight shard and its KV cache.
struct Rank<B: Backend> {
    backend: B,
    model: Qwen3<B>,
    kv: Vec<B::KvCache>,
}

impl<B: Backend> Rank<B> {
    #[allow(clippy::too_many_arguments)]
    fn load(
        backend: B,
        cfg: &ModelConfig,
        src: &WeightSource,
        tp: TpRank,
        num_blocks: usize,
        block_size: usize,
        max_model_len: usize,
        progress: bool,
    ) -> Result<Self> {
        let model = Qwen3::load(&backend, cfg, src, tp, max_model_len, progress)?;
        let spec = model.kv_cache_spec(num_blocks, block_size);
        let kv = (0..cfg.num_hidden_layers)
            .map(|_| backend.alloc_kv_cache(&spec))
            .collect::<Result<_>>()?;
        Ok(Rank { backend, model, kv })
    }

    fn forward(&mut self, input: &ModelInput) -> Result<B::Tensor> {
        self.model.forward(&self.backend, &mut self.kv, input)
    }
}

struct RankThread {
    tx: Sender<Arc<ModelInput>>,
    done: Receiver<Result<()>>,
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
    /// Show a progress bar while loading.
    pub progress: bool,
}

/// The real model on `tp_size` ranks: rank 0 runs on the caller's thread, the others on their own.
pub struct ModelExecutor<B: Backend> {
    rank0: Rank<B>,
    others: Vec<RankThread>,
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
            let (tx, rx) = channel::<Arc<ModelInput>>();
            let (done_tx, done) = channel::<Result<()>>();
            let (ready_tx, ready_rx) = channel::<Result<()>>();
            let (backend, cfg, src) = (make_backend(rank), cfg.clone(), src.clone());
            let tp = TpRank {
                rank,
                size: ecfg.tp_size,
            };
            let handle = std::thread::Builder::new()
                .name(format!("tp-rank-{rank}"))
                .spawn(move || {
                    let loaded = Rank::load(
                        backend,
                        &cfg,
                        &src,
                        tp,
                        ecfg.num_blocks,
                        ecfg.block_size,
                        ecfg.max_model_len,
                        false,
                    );
                    let mut state = match loaded {
                        Ok(s) => {
                            let _ = ready_tx.send(Ok(()));
                            s
                        }
                        Err(e) => {
                            let _ = ready_tx.send(Err(e));
                            return;
                        }
                    };
                    while let Ok(input) = rx.recv() {
                        let r = state.forward(&input).map(|_| ());
                        if done_tx.send(r).is_err() {
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
        let rank0 = Rank::load(
            make_backend(0),
            cfg,
            &src,
            tp0,
            ecfg.num_blocks,
            ecfg.block_size,
            ecfg.max_model_len,
            ecfg.progress,
        )?;
        for r in ready {
            r.recv()
                .map_err(|_| Error::Backend("a rank died while loading".into()))??;
        }
        Ok(ModelExecutor { rank0, others })
    }

    /// Runs the model on every rank and returns the logits of `input.logit_rows`.
    pub fn forward_logits(&mut self, input: &ModelInput) -> Result<HostTensor> {
        if !self.others.is_empty() {
            let shared = Arc::new(input.clone());
            for r in &self.others {
                r.tx.send(shared.clone())
                    .map_err(|_| Error::Backend("a tensor-parallel rank has exited".into()))?;
            }
        }
        let logits = self
            .rank0
            .forward(input)
            .and_then(|t| self.rank0.backend.to_host(&t));
        for r in &self.others {
            r.done
                .recv()
                .map_err(|_| Error::Backend("a tensor-parallel rank has exited".into()))??;
        }
        logits
    }
}

impl<B: Backend> Executor for ModelExecutor<B> {
    fn execute(&mut self, batch: &StepBatch<'_>) -> Result<Vec<Sampled>> {
        let logits = self.forward_logits(&batch.input)?;
        Ok(batch
            .samples
            .iter()
            .enumerate()
            .map(|(i, ctx)| sample(&mut logits.row(i).to_vec(), ctx))
            .collect())
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
