//! The cost of mixture-of-experts models with multi-head latent attention (DeepSeek-V3's
//! family), on workers that run attention data-parallel and experts expert-parallel (DEP).
//!
//! A DEP worker of G GPUs is G attention ranks, each with its own batch, KV cache and full
//! copy of the attention weights, and one expert-parallel group that holds the routed experts,
//! E / G per GPU. Every MoE layer sends each token to its experts' GPUs (dispatch) and back
//! (combine) over NVLink. The ranks step in lockstep, since each layer's all-to-all waits for
//! all of them: [`super::Profile::worker_step_time`].

use serde_json::Value;

use super::hardware::{Gpu, ModelShape};
use super::profile::{MoeCost, Profile};
use crate::error::{Error, Result};

/// A model the cost model knows, read from its config.json.
#[derive(Debug, Clone, PartialEq)]
pub enum ModelCost {
    /// A dense transformer with grouped-query attention (Qwen3, Llama).
    Dense(ModelShape),
    /// Mixture of experts with latent attention (DeepSeek-V3, V3.2).
    Moe(MoeShape),
}

/// The shapes of a DeepSeek-style MoE model that decide its cost (config.json names).
#[derive(Debug, Clone, PartialEq)]
pub struct MoeShape {
    /// `hidden_size`.
    pub hidden: f64,
    /// `num_hidden_layers`.
    pub layers: f64,
    /// `first_k_dense_replace`: leading layers with a dense MLP instead of experts.
    pub dense_layers: f64,
    /// `intermediate_size`: the dense layers' MLP width.
    pub intermediate: f64,
    /// `moe_intermediate_size`: one expert's MLP width.
    pub moe_intermediate: f64,
    /// `n_routed_experts`.
    pub experts: f64,
    /// `num_experts_per_tok`.
    pub active: f64,
    /// `n_shared_experts`: experts every token goes through.
    pub shared: f64,
    /// `num_attention_heads`.
    pub heads: f64,
    /// `q_lora_rank` (0: queries projected from the hidden state directly).
    pub q_lora_rank: f64,
    /// `kv_lora_rank`: width of the latent KV.
    pub kv_lora_rank: f64,
    /// `qk_nope_head_dim`.
    pub qk_nope: f64,
    /// `qk_rope_head_dim`: the decoupled RoPE key, cached beside the latent.
    pub qk_rope: f64,
    /// `v_head_dim`.
    pub v_head: f64,
    /// `vocab_size`.
    pub vocab: f64,
    /// DeepSeek sparse attention: `index_topk`, `index_n_heads`, `index_head_dim`.
    pub sparse: Option<(f64, f64, f64)>,
    /// Bits per weight of the MLPs, experts and output projections (`quantization_config`
    /// NVFP4: 4 bits and an FP8 scale per 16 values, 4.5); 16 otherwise.
    pub mlp_weight_bits: f64,
}

const DENSE_FIELDS: [&str; 6] = [
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "num_key_value_heads",
    "vocab_size",
];

const MOE_FIELDS: [&str; 12] = [
    "hidden_size",
    "num_hidden_layers",
    "intermediate_size",
    "moe_intermediate_size",
    "n_routed_experts",
    "num_experts_per_tok",
    "num_attention_heads",
    "kv_lora_rank",
    "qk_nope_head_dim",
    "qk_rope_head_dim",
    "v_head_dim",
    "vocab_size",
];

fn num(cfg: &Value, key: &str) -> Option<f64> {
    cfg.get(key)?.as_f64()
}

impl ModelCost {
    /// The model a config.json describes. A config with neither the dense nor the MoE
    /// fields is refused, naming what each lacks.
    pub fn from_config(cfg: &Value) -> Result<Self> {
        let missing = |fields: &[&str]| -> Vec<String> {
            fields
                .iter()
                .filter(|k| num(cfg, k).is_none())
                .map(|k| k.to_string())
                .collect()
        };
        let f = |k: &str| num(cfg, k).unwrap_or(0.0);
        let moe_missing = missing(&MOE_FIELDS);
        if moe_missing.is_empty() {
            let sparse = match (
                num(cfg, "index_topk"),
                num(cfg, "index_n_heads"),
                num(cfg, "index_head_dim"),
            ) {
                (Some(k), Some(h), Some(d)) => Some((k, h, d)),
                _ => None,
            };
            let quant = cfg
                .get("quantization_config")
                .and_then(|q| q.get("quant_algo").or_else(|| q.get("quant_method")))
                .and_then(Value::as_str)
                .unwrap_or("");
            let shape = MoeShape {
                hidden: f("hidden_size"),
                layers: f("num_hidden_layers"),
                dense_layers: f("first_k_dense_replace"),
                intermediate: f("intermediate_size"),
                moe_intermediate: f("moe_intermediate_size"),
                experts: f("n_routed_experts"),
                active: f("num_experts_per_tok"),
                shared: f("n_shared_experts"),
                heads: f("num_attention_heads"),
                q_lora_rank: f("q_lora_rank"),
                kv_lora_rank: f("kv_lora_rank"),
                qk_nope: f("qk_nope_head_dim"),
                qk_rope: f("qk_rope_head_dim"),
                v_head: f("v_head_dim"),
                vocab: f("vocab_size"),
                sparse,
                mlp_weight_bits: if quant.eq_ignore_ascii_case("nvfp4") {
                    4.5
                } else {
                    16.0
                },
            };
            if shape.dense_layers > shape.layers || shape.active > shape.experts {
                return Err(Error::InvalidRequest(
                    "model config: first_k_dense_replace exceeds num_hidden_layers, or \
                     num_experts_per_tok exceeds n_routed_experts"
                        .into(),
                ));
            }
            return Ok(ModelCost::Moe(shape));
        }
        let dense_missing = missing(&DENSE_FIELDS);
        if dense_missing.is_empty() {
            let heads = f("num_attention_heads");
            let head_dim = num(cfg, "head_dim").unwrap_or(f("hidden_size") / heads);
            return Ok(ModelCost::Dense(ModelShape {
                hidden: f("hidden_size"),
                intermediate: f("intermediate_size"),
                layers: f("num_hidden_layers"),
                q_heads: heads,
                kv_heads: f("num_key_value_heads"),
                head_dim,
                vocab: f("vocab_size"),
                dtype_bytes: 2.0,
            }));
        }
        Err(Error::InvalidRequest(format!(
            "model config: neither a dense model (missing {}) nor a mixture of experts \
             (missing {})",
            dense_missing.join(", "),
            moe_missing.join(", ")
        )))
    }
}

/// How a DEP worker runs, beside the GPU: its size and the KV cache's precision.
#[derive(Debug, Clone, Copy)]
pub struct Dep {
    /// GPUs per worker: attention data-parallel ranks and expert-parallel size alike.
    pub gpus: usize,
    /// Bytes per cached KV value (fp8: 1).
    pub kv_bytes: f64,
    /// Fraction of the memory left after the weights that holds KV (TensorRT-LLM's
    /// `free_gpu_memory_fraction`).
    pub kv_memory_fraction: f64,
}

/// Weights of one MoE model on one rank of a DEP worker, in parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankWeights {
    /// Attention's latent projections, its indexer, the embedding and the LM head, kept in
    /// 16 bits (read every step, except the embedding, which is gathered).
    pub wide_read: f64,
    /// The embedding (stored, not read).
    pub embedding: f64,
    /// Output projections, dense MLPs and shared experts, at the MLP precision.
    pub narrow: f64,
    /// This rank's routed experts, at the MLP precision.
    pub experts: f64,
}

impl MoeShape {
    /// Parameters of one routed (or shared) expert in one layer: gate, up and down.
    pub fn expert_params(&self) -> f64 {
        3.0 * self.hidden * self.moe_intermediate
    }

    /// MoE layers.
    pub fn moe_layers(&self) -> f64 {
        self.layers - self.dense_layers
    }

    /// The weights one rank of a `gpus`-GPU DEP worker holds: attention, the dense layers
    /// and the shared experts replicated, the routed experts split.
    pub fn rank_weights(&self, gpus: f64) -> RankWeights {
        let q = if self.q_lora_rank > 0.0 {
            self.hidden * self.q_lora_rank
                + self.q_lora_rank * self.heads * (self.qk_nope + self.qk_rope)
        } else {
            self.hidden * self.heads * (self.qk_nope + self.qk_rope)
        };
        let kv = self.hidden * (self.kv_lora_rank + self.qk_rope)
            + self.kv_lora_rank * self.heads * (self.qk_nope + self.v_head);
        // The indexer's query comes from the compressed query; its key and head weights from
        // the hidden state.
        let q_in = if self.q_lora_rank > 0.0 {
            self.q_lora_rank
        } else {
            self.hidden
        };
        let indexer = self
            .sparse
            .map_or(0.0, |(_, ih, id)| q_in * ih * id + self.hidden * (id + ih));
        let o = self.heads * self.v_head * self.hidden;
        let dense_mlp = 3.0 * self.hidden * self.intermediate;
        let head = self.vocab * self.hidden;
        RankWeights {
            wide_read: self.layers * (q + kv + indexer) + head,
            embedding: head,
            narrow: self.layers * o
                + self.dense_layers * dense_mlp
                + self.moe_layers() * self.shared * self.expert_params(),
            experts: self.moe_layers() * self.experts / gpus * self.expert_params(),
        }
    }

    /// KV bytes per token on the rank that holds a sequence: the latent and the RoPE key
    /// (what attention reads), and the indexer's key with its f32 scale (what the indexer
    /// reads, over the whole context).
    pub fn kv_bytes_per_token(&self, kv_bytes: f64) -> (f64, f64) {
        let latent = self.layers * (self.kv_lora_rank + self.qk_rope) * kv_bytes;
        let index = self
            .sparse
            .map_or(0.0, |(_, _, id)| self.layers * (id * kv_bytes + 4.0));
        (latent, index)
    }
}

impl Profile {
    /// The profile of an MoE model on a DEP worker of `dep.gpus` GPUs of kind `gpu`, from
    /// arithmetic (docs/ARCHITECTURE.md states every constant and its source):
    ///
    /// - per rank, the weights [`MoeShape::rank_weights`] says, 16-bit parts at 2 bytes and
    ///   the rest at `mlp_weight_bits`;
    /// - FLOPs at the bf16 rate: a 16-bit parameter costs 2 per token, an FP4 one 2 / 4 and
    ///   an FP8 one 2 / 2 (the GPU's FP4 and FP8 rates are 4× and 2× its bf16 rate);
    /// - attention per (query, context) pair: 2 × heads × (qk_nope + qk_rope + v_head) per
    ///   layer (prefill's uncompressed form), over at most `index_topk` context tokens; the
    ///   indexer scores every pair: 2 × index heads × index dim per layer, in FP8;
    /// - the all-to-all moves each routed pick's hidden state out in FP4 and back in bf16,
    ///   over NVLink at 70%;
    /// - KV capacity per rank: `kv_memory_fraction` of what the weights and 8 GiB of
    ///   activations and all-to-all buffers leave.
    pub fn arithmetic_moe(m: &MoeShape, gpu: &Gpu, dep: Dep) -> Self {
        let g = dep.gpus as f64;
        let w = m.rank_weights(g);
        let narrow_bytes = m.mlp_weight_bits / 8.0;
        let narrow_flops = if m.mlp_weight_bits <= 4.5 {
            2.0 * gpu.matmul_flops / gpu.fp4_flops
        } else if m.mlp_weight_bits <= 8.0 {
            2.0 * gpu.matmul_flops / gpu.fp8_flops
        } else {
            2.0
        };
        let (latent, index) = m.kv_bytes_per_token(dep.kv_bytes);
        let stored = (w.wide_read + w.embedding) * 2.0 + (w.narrow + w.experts) * narrow_bytes;
        let usable =
            dep.kv_memory_fraction * (gpu.memory - stored - 8.0 * (1u64 << 30) as f64).max(0.0);
        let (top_k, index_flops) = match m.sparse {
            Some((k, ih, id)) => (
                Some(k),
                m.layers * 2.0 * ih * id * gpu.matmul_flops / gpu.fp8_flops,
            ),
            None => (None, 0.0),
        };
        let hidden_fp4 = m.hidden * 4.5 / 8.0;
        Profile {
            name: format!(
                "MoE {} layers × {} ({} experts, top {}) DEP{} on {} (arithmetic)",
                m.layers, m.hidden, m.experts, m.active, dep.gpus, gpu.name
            ),
            weight_bytes: w.wide_read * 2.0 + w.narrow * narrow_bytes,
            linear_flops_per_token: 2.0 * w.wide_read + narrow_flops * w.narrow,
            attn_flops_per_pair: m.layers * 2.0 * m.heads * (m.qk_nope + m.qk_rope + m.v_head),
            kv_bytes_per_token: latent,
            hbm_bandwidth: gpu.hbm_bandwidth,
            hbm_efficiency: 0.80,
            matmul_flops: gpu.matmul_flops,
            matmul_efficiency: 0.70,
            attention_efficiency: 1.0,
            // Attention is data-parallel: no tensor-parallel all-reduce.
            allreduce_bytes_per_token: 0.0,
            allreduce_bandwidth: 0.70 * gpu.nvlink_bandwidth,
            // An all-to-all latency pair per MoE layer on top of the launches.
            step_overhead_s: 1.5e-3 + m.moe_layers() * 2.0 * 10e-6,
            transfer_bytes_per_token: latent + index,
            link_bandwidth: gpu.nvlink_bandwidth,
            link_efficiency: 0.80,
            transfer_latency_s: 2e-3,
            kv_capacity_tokens: (usable / (latent + index)) as usize,
            measured: None,
            serving: Default::default(),
            serving_disagg: None,
            attention_dp: dep.gpus,
            attention_top_k: top_k,
            index_flops_per_pair: index_flops,
            index_bytes_per_token: index,
            moe: Some(MoeCost {
                experts: m.experts,
                active: m.active,
                ep: g,
                expert_bytes: m.moe_layers() * m.expert_params() * narrow_bytes,
                expert_flops: m.moe_layers() * m.expert_params() * narrow_flops,
                a2a_bytes_per_pick: m.moe_layers() * (hidden_fp4 + 2.0 * m.hidden),
                a2a_bandwidth: 0.70 * gpu.nvlink_bandwidth,
            }),
            host_link_bandwidth: gpu.host_link_bandwidth,
            host_link_efficiency: super::profile::HOST_LINK_EFFICIENCY,
        }
    }
}

/// DeepSeek-V3.2's config.json, as the NVFP4 checkpoint ships it (the fields the cost model
/// reads; data/models/deepseek-v3.2-nvfp4/config.json).
pub const DEEPSEEK_V32_NVFP4: &str =
    include_str!("../../data/models/deepseek-v3.2-nvfp4/config.json");

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sim::hardware::{GB200, H200};

    fn v32() -> MoeShape {
        match ModelCost::from_config(&serde_json::from_str(DEEPSEEK_V32_NVFP4).unwrap()).unwrap() {
            ModelCost::Moe(m) => m,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn deepseek_v32_weights_and_kv_by_hand() {
        let m = v32();
        assert_eq!(m.mlp_weight_bits, 4.5);
        let w = m.rank_weights(8.0);
        // Per layer: q_a 7168×1536, q_b 1536×128×192, kv_a 7168×576, kv_b 512×128×256, and
        // the indexer's 1536×64×128 + 7168×128 + 7168×64: 83,623,936; × 61, plus the LM head
        // 129,280 × 7168 = 926,679,040.
        assert_eq!(w.wide_read, 61.0 * 83_623_936.0 + 926_679_040.0);
        // o_proj 128×128×7168 × 61, 3 dense MLPs of 3×7168×18432, 58 shared experts of
        // 3×7168×2048.
        assert_eq!(
            w.narrow,
            61.0 * 117_440_512.0 + 3.0 * 396_361_728.0 + 58.0 * 44_040_192.0
        );
        // 256 experts over 8 GPUs: 32 × 58 layers × 44,040,192 = 81.7 B parameters per rank.
        assert_eq!(w.experts, 32.0 * 58.0 * 44_040_192.0);
        // fp8 KV: (512 + 64) × 61 = 35,136 bytes of latent per token, and the indexer's
        // 128-byte key with its 4-byte scale: 8,052.
        assert_eq!(m.kv_bytes_per_token(1.0), (35_136.0, 8_052.0));
        let p = Profile::arithmetic_moe(
            &m,
            &GB200,
            Dep {
                gpus: 8,
                kv_bytes: 1.0,
                kv_memory_fraction: 0.9,
            },
        );
        p.validate().unwrap();
        // 16-bit reads 12.06 GB, FP4 parts 6.14 GB per rank per step.
        let want = (61.0 * 83_623_936.0 + 926_679_040.0) * 2.0 + w.narrow * 0.5625;
        assert!((p.weight_bytes - want).abs() < 1.0, "{}", p.weight_bytes);
        assert!((18.1e9..18.3e9).contains(&p.weight_bytes));
        // About 66 GB of weights per rank leave (186 − 66 − 8.6) × 0.9 ≈ 100 GB: ~2.3 M tokens.
        assert!(
            (2_100_000..2_500_000).contains(&p.kv_capacity_tokens),
            "{}",
            p.kv_capacity_tokens
        );
        assert_eq!(p.attention_dp, 8);
        assert_eq!(p.attention_top_k, Some(2048.0));
    }

    #[test]
    fn configs_the_model_does_not_know_are_refused_by_field() {
        let e = ModelCost::from_config(&serde_json::json!({"hidden_size": 8, "vocab_size": 9}))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("num_key_value_heads") && e.contains("n_routed_experts"),
            "{e}"
        );
        assert!(!e.contains("missing hidden_size"), "{e}");
        // Qwen3-32B's fields give the dense shape the default profile uses.
        let q = serde_json::json!({
            "hidden_size": 5120, "intermediate_size": 25600, "num_hidden_layers": 64,
            "num_attention_heads": 64, "num_key_value_heads": 8, "head_dim": 128,
            "vocab_size": 151936
        });
        let ModelCost::Dense(s) = ModelCost::from_config(&q).unwrap() else {
            panic!("dense")
        };
        assert_eq!(
            Profile::arithmetic(&s, &H200, 2),
            Profile::default_qwen3_32b_tp2_h200()
        );
    }
}
