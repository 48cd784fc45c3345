//! Memory planning of a GPU rank: the activation arena for the largest step, and how many KV
//! blocks fit in what `--gpu-memory-utilization` leaves after weights and arena.

use crate::config::ModelConfig;

/// Bytes of one bf16 value.
const BF16: usize = 2;

/// Activation arena of one rank for steps of up to `max_tokens` tokens and `max_seqs`
/// sequences: every tensor a forward pass holds at once (hidden states, residual, norm
/// output, qkv, attention output, o_proj, gate_up, activation), the logits, the
/// flash-decoding partials, plus a quarter for fragmentation.
pub fn arena_bytes(cfg: &ModelConfig, tp: usize, max_tokens: usize, max_seqs: usize) -> usize {
    let tp = tp.max(1);
    let (h, d) = (cfg.hidden_size, cfg.head_dim);
    let (qh, kvh) = (cfg.num_attention_heads / tp, cfg.num_key_value_heads / tp);
    let inter = cfg.intermediate_size / tp;
    let qkv = (qh + 2 * kvh) * d;
    let per_token = (6 * h + qkv + qh * d + 3 * inter) * BF16 + 64;
    let vocab_shard = cfg.vocab_size.div_ceil(tp);
    // Shard, padded shard, gathered shards and the assembled row.
    let logits = max_seqs * (3 * vocab_shard * tp + vocab_shard) * BF16;
    let d_pad = d.next_power_of_two().max(32);
    let partials = max_seqs * qh * super::attention::MAX_SPLITS * (d_pad + 2) * 4;
    let need = max_tokens * per_token + logits + partials;
    need + need / 4 + (16 << 20)
}

/// Arena bytes the decode graphs keep for good: each ladder size's logits and its static
/// inputs (token ids, positions, slots, logit rows, attention metadata with full-width block
/// tables), each rounded up to the arena's alignment.
pub fn graph_bytes(
    cfg: &ModelConfig,
    max_seqs: usize,
    max_model_len: usize,
    block_size: usize,
) -> usize {
    let max_blocks = max_model_len.div_ceil(block_size.max(1));
    let round = |b: usize| b.next_multiple_of(256).max(256);
    super::graph::ladder(max_seqs)
        .into_iter()
        .map(|b| {
            round(b * cfg.vocab_size * BF16)
                + 5 * round(b * 4)
                + round((2 * b + b * max_blocks) * 4)
        })
        .sum()
}

/// Bytes of the weights one rank holds in bf16.
pub fn weight_bytes(cfg: &ModelConfig, tp: usize) -> usize {
    let tp = tp.max(1);
    let (h, d) = (cfg.hidden_size, cfg.head_dim);
    let attn = (cfg.num_attention_heads * 2 + cfg.num_key_value_heads * 2) * d * h / tp;
    let mlp = 3 * cfg.intermediate_size * h / tp;
    let norms = 2 * h + 2 * d;
    let layers = cfg.num_hidden_layers * (attn + mlp + norms);
    let vocab = cfg.vocab_size.div_ceil(tp) * h;
    let heads = if cfg.tie_word_embeddings {
        vocab
    } else {
        2 * vocab
    };
    (layers + heads + h) * BF16
}

/// KV blocks (all layers) that fit in `utilization` of `total` device memory once
/// `used` bytes (weights, arena, library workspaces, RoPE table) are taken.
pub fn kv_blocks(
    total: usize,
    used: usize,
    utilization: f64,
    block_bytes_all_layers: usize,
) -> usize {
    let budget = (total as f64 * utilization) as usize;
    budget.saturating_sub(used) / block_bytes_all_layers.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn qwen3_32b() -> ModelConfig {
        ModelConfig::from_json(
            r#"{"architectures":["Qwen3ForCausalLM"],"hidden_size":5120,"intermediate_size":25600,
            "num_hidden_layers":64,"num_attention_heads":64,"num_key_value_heads":8,"head_dim":128,
            "vocab_size":151936,"max_position_embeddings":40960,"rope_theta":1000000.0,
            "tie_word_embeddings":false}"#,
        )
        .unwrap()
    }

    #[test]
    fn qwen3_32b_plan() {
        let cfg = qwen3_32b();
        // 32.8B parameters in bf16.
        let w = weight_bytes(&cfg, 1) as f64 / 1e9;
        assert!((65.0..66.5).contains(&w), "{w} GB");
        let half = weight_bytes(&cfg, 2) as f64 / 1e9;
        assert!(
            (w / 2.0 - half).abs() < 0.1 + 1e-6 * w,
            "{half} GB per TP2 rank"
        );
        // The arena of an 8192-token step is a few GiB, not tens.
        let a = arena_bytes(&cfg, 1, 8192, 256) as f64 / (1u64 << 30) as f64;
        assert!((1.0..6.0).contains(&a), "{a} GiB");
        // 80 GiB at 0.9 with 70 GiB used leaves 2 GiB: 2 GiB / (64 layers * 2 * 64 * 8 * 128 * 2 B).
        let gib = 1usize << 30;
        let block = 2 * 64 * 64 * 8 * 128 * 2;
        assert_eq!(kv_blocks(80 * gib, 70 * gib, 0.9, block), 2 * gib / block);
        assert_eq!(kv_blocks(80 * gib, 79 * gib, 0.9, block), 0);
        // Graphs for every batch up to 256 keep about a GiB (mostly their logits).
        let g = graph_bytes(&cfg, 256, 40960, 64) as f64 / (1u64 << 30) as f64;
        assert!((0.5..2.5).contains(&g), "{g} GiB");
    }
}
