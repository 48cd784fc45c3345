//! Builds a ready engine from a model directory (or the built-in demo model).

use std::path::PathBuf;
use std::sync::Arc;

use crate::backend::{Backend, CpuBackend, ThreadComm};
use crate::config::{EngineConfig, GenerationConfig, ModelConfig};
use crate::engine::{EngineCore, ExecutorConfig, ModelExecutor};
use crate::error::{Error, Result};
use crate::model::WeightSource;
use crate::model::demo;
use crate::tokenizer::Tokenizer;

/// Seed of `--load-format dummy` weights.
const DUMMY_SEED: u64 = 0x007A_4DE3;

/// How weights are obtained.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum LoadFormat {
    /// Read the safetensors files.
    #[default]
    Auto,
    /// Generate values of the real shapes; only config.json is read.
    Dummy,
}

/// Which backend runs the model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum DeviceKind {
    /// The f32 reference backend, ranks as threads.
    #[default]
    Cpu,
    /// One GPU per rank (needs the `cuda` feature).
    Cuda,
}

/// What to load and how to run it.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// Hugging Face model directory; None runs the built-in demo model.
    pub model: Option<PathBuf>,
    /// Real or dummy weights.
    pub load_format: LoadFormat,
    /// Tensor-parallel ranks.
    pub tp_size: usize,
    /// Tokens per KV block.
    pub block_size: usize,
    /// Bytes of KV cache across all ranks.
    pub kv_cache_bytes: usize,
    /// Longest sequence; the model's max_position_embeddings when None.
    pub max_model_len: Option<usize>,
    /// Most running sequences.
    pub max_num_seqs: usize,
    /// Token budget per step.
    pub max_num_batched_tokens: usize,
    /// Reuse cached prefixes.
    pub enable_prefix_caching: bool,
    /// Most prefill tokens one sequence gets per step (0: only the step budget limits).
    pub long_prefill_token_threshold: usize,
    /// Show a progress bar while loading.
    pub progress: bool,
    /// How long finished prefill requests hold their blocks for a pull.
    pub kv_hold_timeout: std::time::Duration,
    /// Bytes of the host KV tier across all ranks (0: none).
    pub host_kv_cache_bytes: usize,
    /// Which backend runs the model.
    pub device: DeviceKind,
    /// Fraction of each GPU's memory for weights, activations and KV (cuda only; the KV
    /// cache gets what is left, `kv_cache_bytes` is not used).
    pub gpu_memory_utilization: f64,
    /// Cuda only: run decode steps eagerly instead of replaying CUDA graphs.
    pub enforce_eager: bool,
}

impl Default for ModelSpec {
    fn default() -> Self {
        ModelSpec {
            model: None,
            load_format: LoadFormat::Auto,
            tp_size: 1,
            block_size: 64,
            kv_cache_bytes: 1 << 30,
            max_model_len: None,
            max_num_seqs: 256,
            max_num_batched_tokens: 8192,
            enable_prefix_caching: true,
            long_prefill_token_threshold: 0,
            progress: false,
            kv_hold_timeout: std::time::Duration::from_secs(30),
            host_kv_cache_bytes: 0,
            device: DeviceKind::Cpu,
            gpu_memory_utilization: 0.9,
            enforce_eager: false,
        }
    }
}

/// A loaded model, ready to serve (on the CPU backend unless `B` says otherwise).
pub struct LoadedModel<B: Backend = CpuBackend> {
    /// The model's config.
    pub config: ModelConfig,
    /// Its generation defaults.
    pub generation: GenerationConfig,
    /// Its tokenizer, when the directory has one (the demo model always does).
    pub tokenizer: Option<Tokenizer>,
    /// The engine.
    pub engine: EngineCore<ModelExecutor<B>>,
    /// Whether this is the built-in demo model.
    pub is_demo: bool,
}

/// Everything about a model that comes before choosing a backend.
struct Prepared {
    config: ModelConfig,
    generation: GenerationConfig,
    tokenizer: Option<Tokenizer>,
    src: WeightSource,
    is_demo: bool,
    max_model_len: usize,
}

fn prepare(spec: &ModelSpec) -> Result<Prepared> {
    let (config, generation, tokenizer, src, is_demo) = match &spec.model {
        None => {
            let src = match spec.load_format {
                LoadFormat::Auto => demo::weights()?,
                LoadFormat::Dummy => WeightSource::dummy(DUMMY_SEED),
            };
            (
                demo::config()?,
                demo::generation_config()?,
                Some(demo::tokenizer()?),
                src,
                true,
            )
        }
        Some(dir) => {
            if !dir.is_dir() {
                return Err(Error::Config(format!(
                    "model directory {} does not exist",
                    dir.display()
                )));
            }
            let cfg = ModelConfig::from_dir(dir)?;
            let generation = GenerationConfig::from_dir(dir)?;
            let tok_path = dir.join("tokenizer.json");
            let tokenizer = if tok_path.exists() {
                Some(Tokenizer::from_file(&tok_path)?)
            } else {
                None
            };
            let src = match spec.load_format {
                LoadFormat::Auto => WeightSource::open(dir)?,
                LoadFormat::Dummy => WeightSource::dummy(DUMMY_SEED),
            };
            (cfg, generation, tokenizer, src, false)
        }
    };
    let max_model_len = spec.max_model_len.unwrap_or(config.max_position_embeddings);
    if max_model_len > config.max_position_embeddings {
        return Err(Error::EngineConfig(format!(
            "max_model_len {max_model_len} exceeds the model's max_position_embeddings {}",
            config.max_position_embeddings
        )));
    }
    Ok(Prepared {
        config,
        generation,
        tokenizer,
        src,
        is_demo,
        max_model_len,
    })
}

/// Slots of a host KV tier of `spec.host_kv_cache_bytes` for blocks of `block_bytes` (all
/// ranks and layers), refused when the machine does not have that much memory free.
pub(crate) fn host_kv_blocks(spec: &ModelSpec, block_bytes: usize) -> Result<usize> {
    let want = spec.host_kv_cache_bytes;
    if want == 0 {
        return Ok(0);
    }
    if let Some(free) = available_memory()
        && want as u64 > free
    {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        return Err(Error::EngineConfig(format!(
            "a host KV tier of {:.2} GiB does not fit in the {:.2} GiB of memory this \
             machine has free; lower --host-kv-cache-gib",
            gib(want as u64),
            gib(free)
        )));
    }
    Ok(want / block_bytes.max(1))
}

/// MemAvailable of /proc/meminfo, in bytes (None where there is no such file).
fn available_memory() -> Option<u64> {
    let info = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = info.lines().find(|l| l.starts_with("MemAvailable:"))?;
    let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib * 1024)
}

/// Builds the engine over `num_blocks` blocks (and `host_blocks` host-tier slots) with
/// backends made by `make_backend(rank)`.
fn assemble<B: Backend>(
    spec: &ModelSpec,
    p: Prepared,
    (num_blocks, host_blocks): (usize, usize),
    make_backend: impl Fn(usize) -> B,
) -> Result<LoadedModel<B>> {
    let Prepared {
        config,
        generation,
        tokenizer,
        src,
        is_demo,
        max_model_len,
    } = p;
    let mut ecfg = EngineConfig::for_model(&config, num_blocks);
    ecfg.block_size = spec.block_size;
    ecfg.max_model_len = max_model_len;
    ecfg.max_num_seqs = spec.max_num_seqs;
    ecfg.max_num_batched_tokens = spec.max_num_batched_tokens;
    ecfg.enable_prefix_caching = spec.enable_prefix_caching;
    ecfg.long_prefill_token_threshold = spec.long_prefill_token_threshold;
    ecfg.kv_hold_timeout = spec.kv_hold_timeout;
    ecfg.host_kv_blocks = host_blocks;
    ecfg.validate()?;
    let executor = ModelExecutor::load(
        &config,
        Arc::new(src),
        ExecutorConfig {
            tp_size: spec.tp_size,
            num_blocks,
            block_size: spec.block_size,
            max_model_len,
            host_blocks,
            progress: spec.progress,
        },
        make_backend,
    )?;
    let mut eos = generation.eos_token_ids.clone();
    for id in &config.eos_token_ids {
        if !eos.contains(id) {
            eos.push(*id);
        }
    }
    let engine = EngineCore::new(ecfg, executor, eos)?;
    Ok(LoadedModel {
        config,
        generation,
        tokenizer,
        engine,
        is_demo,
    })
}

/// Loads `spec` onto the CPU backend, ranks as threads.
pub fn load_cpu(spec: &ModelSpec) -> Result<LoadedModel> {
    if spec.device != DeviceKind::Cpu {
        return Err(Error::EngineConfig(
            "load_cpu needs device cpu (use load_cuda for the GPU)".into(),
        ));
    }
    let p = prepare(spec)?;
    let config = &p.config;
    let block_bytes = 2
        * config.num_hidden_layers
        * spec.block_size
        * config.num_key_value_heads
        * config.head_dim
        * 4;
    let num_blocks = spec.kv_cache_bytes / block_bytes.max(1);
    let host_blocks = host_kv_blocks(spec, block_bytes)?;
    let comm = Arc::new(ThreadComm::new(spec.tp_size.max(1)));
    assemble(spec, p, (num_blocks, host_blocks), |rank| {
        CpuBackend::with_comm(rank, comm.clone())
    })
}

/// Without the `cuda` feature there is no GPU backend: a clear error instead.
#[cfg(not(feature = "cuda"))]
pub fn load_cuda(_spec: &ModelSpec) -> Result<LoadedModel> {
    Err(Error::EngineConfig(
        "--device cuda: this tandem was built without the cuda feature (rebuild with \
         `cargo build --release --features cuda`, see README)"
            .into(),
    ))
}

#[cfg(feature = "cuda")]
pub use gpu::load_cuda;

#[cfg(feature = "cuda")]
mod gpu;
