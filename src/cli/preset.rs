//! `tandem simulate --preset`: reference deployments whose model, hardware, engine settings,
//! trace and SLA come from a published recipe, and `--model-config`: the cost model of any
//! config.json.

use clap::ValueEnum;

use crate::config::EngineConfig;
use crate::sim::Profile;
use crate::sim::hardware::{GB200, Gpu, H200};
use crate::sim::moe::{DEEPSEEK_V32_NVFP4, Dep, ModelCost};

/// A reference deployment.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum Preset {
    /// DeepSeek-V3.2 NVFP4 on 32 GB200s (TensorRT-LLM, WideEP): 4 aggregated DEP8 workers
    /// behind round-robin against 2 prefill + 2 decode DEP8 workers behind the KV router, on
    /// the conversation trace synthesized as the recipe does; SLA TTFT 20 s, ITL 50 ms.
    DeepseekV32Gb200,
}

/// GPU kinds the cost model knows.
#[derive(Debug, Clone, Copy, ValueEnum, PartialEq, Eq)]
pub enum GpuArg {
    /// H200 SXM.
    H200,
    /// Blackwell of a GB200 NVL72 rack.
    Gb200,
}

impl GpuArg {
    /// The data sheet's figures.
    pub fn gpu(self) -> &'static Gpu {
        match self {
            GpuArg::H200 => &H200,
            GpuArg::Gb200 => &GB200,
        }
    }
}

/// The recipe's facts, in the simulator's terms.
pub struct Recipe {
    /// The model's config.json.
    pub model_config: &'static str,
    /// The GPU.
    pub gpu: GpuArg,
    /// GPUs per worker, all attention data-parallel ranks and one expert-parallel group.
    pub gpus_per_worker: usize,
    /// Aggregated workers of the baseline.
    pub workers: usize,
    /// Prefill and decode workers of the comparison.
    pub split: (usize, usize),
    /// Tokens per KV block.
    pub block_size: usize,
    /// Step token budget (`max_num_tokens`).
    pub max_num_batched_tokens: usize,
    /// `max_seq_len`.
    pub max_model_len: usize,
    /// `max_batch_size` of aggregated, prefill and decode workers.
    pub max_num_seqs: (usize, usize, usize),
    /// Block reuse of aggregated, prefill and decode workers.
    pub prefix_caching: (bool, bool, bool),
    /// AIPerf goodput thresholds.
    pub goodput: &'static str,
    /// `datagen synthesize` arguments: prefix and prompt length multipliers, ISL cap,
    /// requests.
    pub synthesis: (f64, f64, usize, usize),
}

impl Preset {
    /// What the recipe says.
    pub fn recipe(self) -> Recipe {
        match self {
            Preset::DeepseekV32Gb200 => Recipe {
                model_config: DEEPSEEK_V32_NVFP4,
                gpu: GpuArg::Gb200,
                gpus_per_worker: 8,
                workers: 4,
                split: (2, 2),
                block_size: 64,
                max_num_batched_tokens: 8192,
                max_model_len: 121_000,
                max_num_seqs: (8, 32, 8),
                prefix_caching: (false, true, false),
                goodput: "time_to_first_token:20000 inter_token_latency:50",
                synthesis: (16.0, 10.0, 110_000, 10_000),
            },
        }
    }
}

impl Recipe {
    /// The engines of aggregated, prefill and decode workers, from one base.
    pub fn engines(&self, base: &EngineConfig) -> (EngineConfig, EngineConfig, EngineConfig) {
        let role = |seqs: usize, cache: bool| EngineConfig {
            max_num_seqs: seqs,
            enable_prefix_caching: cache,
            host_kv_blocks: if cache { base.host_kv_blocks } else { 0 },
            ..base.clone()
        };
        (
            role(self.max_num_seqs.0, self.prefix_caching.0),
            role(self.max_num_seqs.1, self.prefix_caching.1),
            role(self.max_num_seqs.2, self.prefix_caching.2),
        )
    }
}

/// The arithmetic profile of the model `config_json` describes on workers of `gpus` GPUs of
/// kind `gpu` with `attention_dp` data-parallel attention ranks. Dense models run tensor
/// parallel (DP 1); MoE models run DEP (DP = GPUs, experts over all of them).
pub fn model_profile(
    config_json: &str,
    gpu: GpuArg,
    gpus: usize,
    attention_dp: usize,
) -> anyhow::Result<Profile> {
    if attention_dp == 0 || !gpus.is_multiple_of(attention_dp) {
        anyhow::bail!(
            "--attention-dp {attention_dp} does not divide the worker's {gpus} GPUs \
             (--tensor-parallel-size)"
        );
    }
    let cfg: serde_json::Value = serde_json::from_str(config_json)
        .map_err(|e| anyhow::anyhow!("model config: not JSON: {e}"))?;
    Ok(match ModelCost::from_config(&cfg)? {
        ModelCost::Dense(shape) => {
            if attention_dp != 1 {
                anyhow::bail!(
                    "attention data parallelism is modelled for MoE models (DEP) only; a dense \
                     model runs tensor-parallel: --attention-dp 1"
                );
            }
            Profile::arithmetic(&shape, gpu.gpu(), gpus)
        }
        ModelCost::Moe(shape) => {
            if attention_dp != gpus {
                anyhow::bail!(
                    "an MoE model is modelled as DEP: attention data-parallel over all the \
                     worker's GPUs (--attention-dp {gpus}), not {attention_dp}"
                );
            }
            Profile::arithmetic_moe(
                &shape,
                gpu.gpu(),
                Dep {
                    gpus,
                    kv_bytes: 1.0,
                    kv_memory_fraction: 0.9,
                },
            )
        }
    })
}
