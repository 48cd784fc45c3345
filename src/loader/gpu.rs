//! Loading onto GPUs (feature `cuda`): one rank per device, NCCL between them, and the KV
//! cache sized as vLLM sizes it, from `--gpu-memory-utilization`.

use std::sync::Mutex;

use super::{DeviceKind, LoadedModel, ModelSpec, assemble, prepare};
use crate::backend::cuda::{CudaBackend, NcclComm, device_count, sizing};
use crate::error::{Error, Result};

/// Loads `spec` with rank r on GPU r.
///
/// Memory: the backends are opened first (context, kernels, cuBLASLt workspace, activation
/// arena sized for `max_num_batched_tokens`), then each device's free memory is read; of
/// `gpu_memory_utilization * total`, what the weights will take is set aside and the rest
/// becomes KV blocks (the smallest count over ranks, so every rank holds the same blocks).
pub fn load_cuda(spec: &ModelSpec) -> Result<LoadedModel<CudaBackend>> {
    if spec.device != DeviceKind::Cuda {
        return Err(Error::EngineConfig("load_cuda needs device cuda".into()));
    }
    let util = spec.gpu_memory_utilization;
    if !(util > 0.0 && util <= 1.0) {
        return Err(Error::EngineConfig(format!(
            "--gpu-memory-utilization {util} must be in (0, 1]"
        )));
    }
    let p = prepare(spec)?;
    let cfg = &p.config;
    let tp = spec.tp_size.max(1);
    crate::model::TpRank::validate(tp, cfg)?;
    let visible = device_count()?;
    if visible < tp {
        return Err(Error::EngineConfig(format!(
            "tensor parallel size {tp} needs {tp} GPUs, {visible} visible"
        )));
    }
    let ordinals: Vec<usize> = (0..tp).collect();
    let comms = NcclComm::group(&ordinals)?;
    let max_len = spec.max_model_len.unwrap_or(cfg.max_position_embeddings);
    let mut arena = sizing::arena_bytes(cfg, tp, spec.max_num_batched_tokens, spec.max_num_seqs);
    if !spec.enforce_eager {
        arena += sizing::graph_bytes(cfg, spec.max_num_seqs, max_len, spec.block_size);
    }
    let backends: Vec<CudaBackend> = comms
        .into_iter()
        .zip(&ordinals)
        .map(|(comm, &o)| CudaBackend::new(o, arena, comm))
        .collect::<Result<_>>()?;
    if !spec.enforce_eager {
        for b in &backends {
            b.enable_decode_graphs(spec.max_num_seqs, max_len, spec.block_size);
        }
    }

    let weights = sizing::weight_bytes(cfg, tp);
    let rope = max_len * cfg.head_dim * 2;
    let kv_heads = cfg.num_key_value_heads / tp;
    let block_bytes = 2 * cfg.num_hidden_layers * spec.block_size * kv_heads * cfg.head_dim * 2;
    let mut num_blocks = usize::MAX;
    for (rank, b) in backends.iter().enumerate() {
        let (free, total) = b.device().mem_info()?;
        let used = total.saturating_sub(free) + weights + rope;
        let fit = sizing::kv_blocks(total, used, util, block_bytes);
        tracing::info!(
            rank,
            total_gib = total as f64 / (1u64 << 30) as f64,
            in_use_gib = (total - free) as f64 / (1u64 << 30) as f64,
            weights_gib = weights as f64 / (1u64 << 30) as f64,
            arena_gib = arena as f64 / (1u64 << 30) as f64,
            graphs = !spec.enforce_eager,
            "cuda memory before weights"
        );
        // Less the scratch block each layer cache keeps for graph padding rows.
        num_blocks = num_blocks.min(fit.saturating_sub(1));
    }
    let concurrency = (num_blocks * spec.block_size) as f64 / max_len.max(1) as f64;
    tracing::info!(
        num_blocks,
        block_size = spec.block_size,
        kv_gib_per_rank = (num_blocks * block_bytes) as f64 / (1u64 << 30) as f64,
        "cuda KV cache: {num_blocks} blocks; maximum concurrency at max_model_len {max_len}: \
         {concurrency:.2}x"
    );
    if num_blocks == 0 {
        return Err(Error::EngineConfig(format!(
            "no GPU memory left for the KV cache at --gpu-memory-utilization {util} \
             (weights need {:.2} GiB per rank)",
            weights as f64 / (1u64 << 30) as f64
        )));
    }
    // ModelExecutor asks for each rank's backend once, by rank.
    let slots: Mutex<Vec<Option<CudaBackend>>> =
        Mutex::new(backends.into_iter().map(Some).collect());
    let take = |rank: usize| {
        slots
            .lock()
            .ok()
            .and_then(|mut s| s.get_mut(rank).and_then(Option::take))
            .expect("ModelExecutor asks for each rank's backend exactly once")
    };
    let host_blocks = super::host_kv_blocks(spec, block_bytes * tp)?;
    let loaded = assemble(spec, p, (num_blocks, host_blocks), take)?;
    Ok(loaded)
}
