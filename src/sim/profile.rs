//! The timing model of one worker: how long a step and a KV transfer take.
//!
//! A step is a roofline: the larger of its bytes over the HBM bandwidth and its FLOPs over the
//! matmul rate (each at a stated efficiency), plus the tensor-parallel all-reduces and a fixed
//! overhead. A KV transfer is a latency plus its bytes over the link. The default profile is
//! derived from Qwen3-32B's shapes and the H200's data sheet (see [`Profile::arithmetic`]);
//! a profile measured on the CUDA backend replaces it through `--profile FILE` (the same JSON).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::grid::{Measured, StepShape};
use super::hardware::{Gpu, H200, ModelShape, QWEN3_32B};
use crate::engine::SeqWork;
use crate::error::{Error, Result};

/// Timing model of one worker (all of its tensor-parallel ranks), in SI units.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// What the profile describes.
    pub name: String,
    /// Weight bytes one rank reads in every step.
    pub weight_bytes: f64,
    /// FLOPs per token of the dense layers on one rank (2 × parameters read).
    pub linear_flops_per_token: f64,
    /// Attention FLOPs on one rank per (query token, context token) pair.
    pub attn_flops_per_pair: f64,
    /// KV bytes per token on one rank (read by attention, written once).
    pub kv_bytes_per_token: f64,
    /// HBM bandwidth of one GPU, bytes/s.
    pub hbm_bandwidth: f64,
    /// Fraction of `hbm_bandwidth` a step reaches.
    pub hbm_efficiency: f64,
    /// Dense bf16 matmul rate of one GPU, FLOP/s.
    pub matmul_flops: f64,
    /// Fraction of `matmul_flops` a step reaches.
    pub matmul_efficiency: f64,
    /// Attention's rate as a fraction of the dense layers' (1 in the arithmetic profile; a
    /// CPU's attention loops run far below its matrix products).
    #[serde(default = "one")]
    pub attention_efficiency: f64,
    /// Bytes each rank all-reduces per token (0 at TP1).
    pub allreduce_bytes_per_token: f64,
    /// All-reduce bus bandwidth between the ranks, bytes/s.
    pub allreduce_bandwidth: f64,
    /// Fixed cost of a step, s: kernel launches, all-reduce latencies, scheduling.
    pub step_overhead_s: f64,
    /// KV bytes per token over all ranks: what a prefill-to-decode transfer moves.
    pub transfer_bytes_per_token: f64,
    /// Bandwidth between a prefill and a decode worker, bytes/s.
    pub link_bandwidth: f64,
    /// Fraction of `link_bandwidth` a transfer reaches.
    pub link_efficiency: f64,
    /// Fixed cost of a transfer, s: the handshake and the first round trip.
    pub transfer_latency_s: f64,
    /// Tokens of KV one worker holds.
    pub kv_capacity_tokens: usize,
    /// Step grids and transfer figures measured by `tandem profile` (the roofline above is
    /// then the one fitted to them, for steps beyond the grids); none in an arithmetic
    /// profile.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measured: Option<Measured>,
    /// The serving path around the engine (client, frontend, gRPC), measured by `tandem
    /// profile` under load; zero unless measured.
    #[serde(default)]
    pub serving: super::serving::ServingCosts,
    /// The same, measured on a disaggregated deployment (a prefill and a decode worker, each
    /// on its own cores): the path a disaggregated request takes (two calls, the KV pull,
    /// the roles' own CPU). None: `serving` stands for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub serving_disagg: Option<super::serving::ServingCosts>,
    /// Attention data-parallel ranks of one worker, each with its own batch and KV cache
    /// (1: none). Per-rank fields above (weights, KV, capacity) are then one rank's.
    #[serde(default = "one_rank", skip_serializing_if = "is_one_rank")]
    pub attention_dp: usize,
    /// Sparse attention: context tokens each query attends to (DeepSeek's `index_topk`);
    /// none: all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attention_top_k: Option<f64>,
    /// FLOPs per (query, context) pair of the sparse attention's indexer, which scores the
    /// whole context.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub index_flops_per_pair: f64,
    /// Indexer key bytes per context token, read in full every step.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub index_bytes_per_token: f64,
    /// The routed experts of a mixture-of-experts model (none: dense); the fields above are
    /// then everything else.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub moe: Option<MoeCost>,
    /// Bandwidth between one GPU and host memory per direction, bytes/s: what the host KV
    /// tier's offloads and onboards cross (each rank its own shard, over its own link).
    #[serde(default = "default_host_link")]
    pub host_link_bandwidth: f64,
    /// Fraction of `host_link_bandwidth` the copies reach.
    #[serde(default = "default_host_link_efficiency")]
    pub host_link_efficiency: f64,
}

/// A profile written before the host tier existed: the H200's PCIe link.
fn default_host_link() -> f64 {
    H200.host_link_bandwidth
}

fn default_host_link_efficiency() -> f64 {
    HOST_LINK_EFFICIENCY
}

/// Fraction of the host link that pinned-memory copies of whole blocks reach (PCIe Gen5 x16
/// copies of pinned buffers run at about 50 of its 63 GB/s per direction).
pub const HOST_LINK_EFFICIENCY: f64 = 0.80;

fn one() -> f64 {
    1.0
}

fn one_rank() -> usize {
    1
}

fn is_one_rank(n: &usize) -> bool {
    *n == 1
}

fn is_zero(x: &f64) -> bool {
    *x == 0.0
}

/// The routed experts of a profile: what a step pays for them on each GPU of the worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MoeCost {
    /// Routed experts per MoE layer.
    pub experts: f64,
    /// Routed experts each token goes to.
    pub active: f64,
    /// GPUs the experts are spread over (the worker's expert-parallel size).
    pub ep: f64,
    /// Weight bytes of one routed expert over all MoE layers.
    pub expert_bytes: f64,
    /// FLOPs of one token through one routed expert over all MoE layers, counted at the
    /// profile's matmul rate (an FP4 FLOP is a quarter of a bf16 one).
    pub expert_flops: f64,
    /// Bytes one token moves per routed expert over all MoE layers: dispatch and combine.
    pub a2a_bytes_per_pick: f64,
    /// All-to-all bandwidth of one GPU, bytes/s, at the efficiency it reaches.
    pub a2a_bandwidth: f64,
}

impl MoeCost {
    /// Seconds the routed experts add to a step of `tokens` tokens over the worker, whose
    /// busiest rank sends `max_rank_tokens`: the local experts' weights the step touches (or
    /// their FLOPs, whichever is slower) and that rank's all-to-all.
    pub fn time(&self, p: &Profile, tokens: f64, max_rank_tokens: f64) -> f64 {
        if tokens <= 0.0 {
            return 0.0;
        }
        // Each expert escapes all T tokens' top-k with probability (1 − k/E)^T.
        let touched = 1.0 - (1.0 - self.active / self.experts).powf(tokens);
        let bytes = self.experts / self.ep * touched * self.expert_bytes;
        let memory = bytes / (p.hbm_bandwidth * p.hbm_efficiency);
        let compute = tokens * self.active / self.ep * self.expert_flops
            / (p.matmul_flops * p.matmul_efficiency);
        let remote = (self.ep - 1.0) / self.ep;
        memory.max(compute)
            + max_rank_tokens * self.active * self.a2a_bytes_per_pick * remote / self.a2a_bandwidth
    }

    /// The fields that must be positive.
    pub fn fields(&self) -> [(&'static str, f64); 7] {
        [
            ("moe.experts", self.experts),
            ("moe.active", self.active),
            ("moe.ep", self.ep),
            ("moe.expert_bytes", self.expert_bytes),
            ("moe.expert_flops", self.expert_flops),
            ("moe.a2a_bytes_per_pick", self.a2a_bytes_per_pick),
            ("moe.a2a_bandwidth", self.a2a_bandwidth),
        ]
    }
}

impl Profile {
    /// The profile of `model` split over `tp` GPUs of kind `gpu`, from arithmetic:
    ///
    /// - weights read per step per rank: (layers × (q + k + v + o + gate + up + down) + lm_head)
    ///   × dtype bytes / tp — the embedding is gathered, not read;
    /// - dense FLOPs per token per rank: 2 × those parameters / tp;
    /// - attention FLOPs per (query, context) pair per rank: 4 × layers × q_heads × head_dim / tp
    ///   (QKᵀ and PV);
    /// - KV bytes per token per rank: 2 (K, V) × layers × kv_heads × head_dim × dtype bytes / tp;
    /// - all-reduce bytes per token: 2 per layer × hidden × dtype bytes (at TP > 1), over NVLink;
    /// - KV capacity: 90% of device memory, less the weights and 4 GiB of activations, over the
    ///   KV bytes per token;
    /// - transfers cross nodes: one NIC per rank.
    ///
    /// Efficiencies: 80% of HBM bandwidth, 70% of the matmul rate, 70% of NVLink, 80% of the
    /// NICs (what tuned kernels and NCCL/NIXL reach on Hopper); 1.5 ms of fixed step cost (two
    /// all-reduce latencies per layer plus launches, with CUDA graphs); 2 ms per transfer.
    pub fn arithmetic(model: &ModelShape, gpu: &Gpu, tp: usize) -> Self {
        let m = model;
        let tp_f = tp as f64;
        let per_layer = m.hidden * (m.q_heads + 2.0 * m.kv_heads) * m.head_dim
            + m.q_heads * m.head_dim * m.hidden
            + 3.0 * m.hidden * m.intermediate;
        let read_params = (m.layers * per_layer + m.vocab * m.hidden) / tp_f;
        let stored_params = read_params + m.vocab * m.hidden / tp_f;
        let kv_all_ranks = 2.0 * m.layers * m.kv_heads * m.head_dim * m.dtype_bytes;
        let kv_per_rank = kv_all_ranks / tp_f;
        let usable = 0.90 * gpu.memory - stored_params * m.dtype_bytes - 4.0 * (1u64 << 30) as f64;
        Profile {
            name: if (m.hidden, m.layers) == (QWEN3_32B.hidden, QWEN3_32B.layers) {
                format!("Qwen3-32B TP{tp} on {} (arithmetic)", gpu.name)
            } else {
                format!(
                    "Qwen3 of {} layers × {} TP{tp} on {} (arithmetic)",
                    m.layers, m.hidden, gpu.name
                )
            },
            weight_bytes: read_params * m.dtype_bytes,
            linear_flops_per_token: 2.0 * read_params,
            attn_flops_per_pair: 4.0 * m.layers * m.q_heads * m.head_dim / tp_f,
            kv_bytes_per_token: kv_per_rank,
            hbm_bandwidth: gpu.hbm_bandwidth,
            hbm_efficiency: 0.80,
            matmul_flops: gpu.matmul_flops,
            matmul_efficiency: 0.70,
            attention_efficiency: 1.0,
            allreduce_bytes_per_token: if tp > 1 {
                2.0 * m.layers * m.hidden * m.dtype_bytes
            } else {
                0.0
            },
            allreduce_bandwidth: 0.70 * gpu.nvlink_bandwidth,
            step_overhead_s: 1.5e-3,
            transfer_bytes_per_token: kv_all_ranks,
            link_bandwidth: gpu.nic_bandwidth * tp_f,
            link_efficiency: 0.80,
            transfer_latency_s: 2e-3,
            kv_capacity_tokens: (usable.max(0.0) / kv_per_rank) as usize,
            measured: None,
            serving: Default::default(),
            serving_disagg: None,
            attention_dp: 1,
            attention_top_k: None,
            index_flops_per_pair: 0.0,
            index_bytes_per_token: 0.0,
            moe: None,
            host_link_bandwidth: gpu.host_link_bandwidth,
            host_link_efficiency: HOST_LINK_EFFICIENCY,
        }
    }

    /// The serving path of a deployment, disaggregated or not.
    pub fn serving_of(&self, disaggregated: bool) -> &super::serving::ServingCosts {
        match &self.serving_disagg {
            Some(d) if disaggregated => d,
            _ => &self.serving,
        }
    }

    /// The profile a deployment's steps are priced by: its grids scaled by the step levels
    /// its serving path measured under load, or this one where there are none (or no
    /// grids).
    pub fn priced_for(self: &std::sync::Arc<Self>, disaggregated: bool) -> std::sync::Arc<Self> {
        match (self.serving_of(disaggregated).step_levels(), &self.measured) {
            (Some((prefill, decode)), Some(m)) => std::sync::Arc::new(Profile {
                measured: Some(m.scaled(prefill, decode)),
                ..(**self).clone()
            }),
            _ => self.clone(),
        }
    }

    /// The default: Qwen3-32B, TP2, H200.
    pub fn default_qwen3_32b_tp2_h200() -> Self {
        Self::arithmetic(&QWEN3_32B, &H200, 2)
    }

    /// Reads a profile from JSON.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        let p: Profile = serde_json::from_str(&text)
            .map_err(|e| Error::InvalidRequest(format!("profile {}: {e}", path.display())))?;
        p.validate()?;
        Ok(p)
    }

    /// Checks that every rate is positive and every efficiency in (0, 1].
    pub fn validate(&self) -> Result<()> {
        self.serving.validate("serving")?;
        if let Some(d) = &self.serving_disagg {
            d.validate("serving_disagg")?;
        }
        let positive = [
            ("weight_bytes", self.weight_bytes),
            ("linear_flops_per_token", self.linear_flops_per_token),
            ("kv_bytes_per_token", self.kv_bytes_per_token),
            ("hbm_bandwidth", self.hbm_bandwidth),
            ("matmul_flops", self.matmul_flops),
            ("attention_efficiency", self.attention_efficiency),
            ("allreduce_bandwidth", self.allreduce_bandwidth),
            ("transfer_bytes_per_token", self.transfer_bytes_per_token),
            ("link_bandwidth", self.link_bandwidth),
            ("host_link_bandwidth", self.host_link_bandwidth),
        ];
        let non_negative = [
            ("attn_flops_per_pair", self.attn_flops_per_pair),
            ("index_flops_per_pair", self.index_flops_per_pair),
            ("index_bytes_per_token", self.index_bytes_per_token),
            ("allreduce_bytes_per_token", self.allreduce_bytes_per_token),
            ("step_overhead_s", self.step_overhead_s),
            ("transfer_latency_s", self.transfer_latency_s),
        ];
        let fractions = [
            ("hbm_efficiency", self.hbm_efficiency),
            ("matmul_efficiency", self.matmul_efficiency),
            ("link_efficiency", self.link_efficiency),
            ("host_link_efficiency", self.host_link_efficiency),
        ];
        let top_k = [("attention_top_k", self.attention_top_k.unwrap_or(1.0))];
        let moe: Vec<_> = self.moe.iter().flat_map(|m| m.fields()).collect();
        let bad = positive
            .iter()
            .chain(&top_k)
            .chain(&moe)
            .filter(|(_, v)| !(v.is_finite() && *v > 0.0))
            .chain(
                non_negative
                    .iter()
                    .filter(|(_, v)| !(v.is_finite() && *v >= 0.0)),
            )
            .chain(
                fractions
                    .iter()
                    .filter(|(_, v)| !(v.is_finite() && *v > 0.0 && *v <= 1.0)),
            )
            .map(|(k, _)| *k)
            .collect::<Vec<_>>();
        if !bad.is_empty() {
            return Err(Error::InvalidRequest(format!(
                "profile {:?}: out of range: {}",
                self.name,
                bad.join(", ")
            )));
        }
        if let Some(m) = &self.measured {
            m.validate()
                .map_err(|e| Error::InvalidRequest(format!("profile {:?}: {e}", self.name)))?;
        }
        if self.attention_dp == 0 {
            return Err(Error::InvalidRequest(format!(
                "profile {:?}: attention_dp is 0 (a worker has at least one rank)",
                self.name
            )));
        }
        if let Some(m) = &self.moe
            && (m.active > m.experts || m.ep < 1.0)
        {
            return Err(Error::InvalidRequest(format!(
                "profile {:?}: moe.active exceeds moe.experts, or moe.ep is below 1",
                self.name
            )));
        }
        if self.kv_capacity_tokens == 0 {
            return Err(Error::InvalidRequest(format!(
                "profile {:?}: kv_capacity_tokens is 0 (the weights leave no room for KV)",
                self.name
            )));
        }
        Ok(())
    }

    /// Seconds one step takes: from the measured grids when the profile has them (the
    /// roofline beyond them), else from the roofline. A step of several prompts reads each
    /// prompt's ratio at its own length (beside the step's decodes), weighted by its
    /// roofline time alone: see the note in `sim/grid.rs`.
    pub fn step_time(&self, work: &[SeqWork]) -> f64 {
        let t = self.roofline_time(work);
        let Some(m) = &self.measured else {
            return t;
        };
        let ratio = |s: &StepShape| m.ratio(s, |s| self.shape_time(s));
        let shape = StepShape::of(work);
        if shape.prefill_seqs < 2.0 {
            return t * ratio(&shape);
        }
        let (mut weighted, mut weights) = (0.0, 0.0);
        for p in work.iter().filter(|w| w.new_tokens > 1) {
            let alone = self.roofline_time(std::slice::from_ref(p));
            // This prompt alone beside the step's decodes.
            let own = StepShape {
                prefill_tokens: p.new_tokens as f64,
                prefill_seqs: 1.0,
                prefill_cached: (p.context_len - p.new_tokens) as f64,
                ..shape
            };
            weighted += alone * ratio(&own);
            weights += alone;
        }
        t * weighted / weights
    }

    /// The roofline's time of a step of `s`'s shape.
    pub fn shape_time(&self, s: &StepShape) -> f64 {
        let mut work = Vec::new();
        if s.prefill_tokens > 0.0 {
            // Its prompts alike: each of the mean length.
            let k = s.prefill_seqs.round().max(1.0);
            let n = (s.prefill_tokens / k).round().max(1.0) as usize;
            work.extend(std::iter::repeat_n(
                SeqWork {
                    new_tokens: n,
                    context_len: n + s.prefill_cached.round() as usize,
                },
                k as usize,
            ));
        }
        let d = s.decodes.round() as usize;
        work.extend(std::iter::repeat_n(
            SeqWork {
                new_tokens: 1,
                context_len: s.decode_context.round().max(1.0) as usize,
            },
            d,
        ));
        self.roofline_time(&work)
    }

    /// Seconds the host-tier copies of `blocks` blocks of `block_size` tokens take on one rank
    /// (offloads and onboards alike cross the host link once).
    pub fn host_copy_time(&self, blocks: usize, block_size: usize) -> f64 {
        if blocks == 0 {
            return 0.0;
        }
        let bytes = (blocks * block_size) as f64 * self.kv_bytes_per_token;
        bytes / (self.host_link_bandwidth * self.host_link_efficiency)
    }

    /// Seconds one step of a worker takes whose data-parallel ranks run `ranks` (one entry
    /// per rank; without DP, one): they step together, so the slowest rank's attention and
    /// dense layers, then the experts for every rank's tokens. Without experts or DP this is
    /// [`Profile::step_time`].
    pub fn worker_step_time(&self, ranks: &[&[SeqWork]]) -> f64 {
        let slowest = ranks.iter().map(|w| self.step_time(w)).fold(0.0, f64::max);
        let Some(moe) = &self.moe else {
            return slowest;
        };
        let tokens = |w: &[SeqWork]| w.iter().map(|s| s.new_tokens as f64).sum::<f64>();
        let total: f64 = ranks.iter().map(|w| tokens(w)).sum();
        let busiest = ranks.iter().map(|w| tokens(w)).fold(0.0, f64::max);
        slowest + moe.time(self, total, busiest)
    }

    /// Seconds one step takes on the roofline: new tokens cost FLOPs, context costs KV bytes.
    /// With sparse attention a query attends to at most `attention_top_k` tokens and reads
    /// their KV, while the indexer scores and reads the whole context.
    pub fn roofline_time(&self, work: &[SeqWork]) -> f64 {
        let (mut tokens, mut pairs, mut kv_tokens) = (0.0, 0.0, 0.0);
        let (mut index_pairs, mut index_tokens) = (0.0, 0.0);
        for w in work {
            let new = w.new_tokens as f64;
            let before = (w.context_len - w.new_tokens) as f64;
            let ctx = w.context_len as f64;
            tokens += new;
            // Causal: the i-th new token sees the cached context and the i new tokens up to it.
            let all = new * before + new * (new + 1.0) / 2.0;
            match self.attention_top_k {
                None => {
                    pairs += all;
                    kv_tokens += ctx;
                }
                Some(k) => {
                    // Σ_{i=1..new} min(before + i, k): the tokens up to k, then k each.
                    let m = (k - before).clamp(0.0, new);
                    pairs += m * before + m * (m + 1.0) / 2.0 + (new - m) * k;
                    kv_tokens += ctx.min(new * k);
                    index_pairs += all;
                    index_tokens += ctx;
                }
            }
        }
        let bytes = self.weight_bytes
            + kv_tokens * self.kv_bytes_per_token
            + index_tokens * self.index_bytes_per_token;
        let memory = bytes / (self.hbm_bandwidth * self.hbm_efficiency);
        let rate = self.matmul_flops * self.matmul_efficiency;
        let compute = tokens * self.linear_flops_per_token / rate
            + (pairs * self.attn_flops_per_pair + index_pairs * self.index_flops_per_pair)
                / (rate * self.attention_efficiency);
        memory.max(compute)
            + tokens * self.allreduce_bytes_per_token / self.allreduce_bandwidth
            + self.step_overhead_s
    }

    /// Seconds to move the KV of `tokens` prompt tokens from a prefill to a decode worker.
    pub fn transfer_time(&self, tokens: usize) -> f64 {
        if let Some(m) = &self.measured {
            return m.transfer_time(tokens as f64 * self.transfer_bytes_per_token);
        }
        self.transfer_latency_s
            + tokens as f64 * self.transfer_bytes_per_token
                / (self.link_bandwidth * self.link_efficiency)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode(batch: usize, ctx: usize) -> Vec<SeqWork> {
        vec![
            SeqWork {
                new_tokens: 1,
                context_len: ctx,
            };
            batch
        ]
    }

    #[test]
    fn qwen3_32b_tp2_h200_figures() {
        let p = Profile::default_qwen3_32b_tp2_h200();
        p.validate().unwrap();
        // 32.0 GB of weights per rank per step; 128 KiB of KV per token per rank.
        assert!(
            (p.weight_bytes / 1e9 - 32.0).abs() < 0.1,
            "{}",
            p.weight_bytes
        );
        assert_eq!(p.kv_bytes_per_token, 131_072.0);
        assert_eq!(p.transfer_bytes_per_token, 262_144.0);
        // About 750k tokens of KV per worker.
        assert!((700_000..800_000).contains(&p.kv_capacity_tokens));
        // Decode at batch 1 is bound by the weights: 32 GB / 3.84 TB/s + overheads ≈ 10 ms.
        let t1 = p.step_time(&decode(1, 1000));
        assert!((0.0095..0.0105).contains(&t1), "{t1}");
        // Decode is memory-bound, so batch 64 at 2k context costs little more than the weights
        // plus 64 × 2k tokens of KV.
        let t64 = p.step_time(&decode(64, 2048));
        let kv = 64.0 * 2048.0 * 131_072.0 / (4.8e12 * 0.8);
        assert!((t64 - t1 - kv).abs() < 1e-3, "{t64}");
        // An 8k prefill is compute-bound: ~0.5 s.
        let t8k = p.step_time(&[SeqWork {
            new_tokens: 8192,
            context_len: 8192,
        }]);
        assert!((0.4..0.6).contains(&t8k), "{t8k}");
        // A cached prefix makes a prefill cheaper than computing it.
        let cached = p.step_time(&[SeqWork {
            new_tokens: 1024,
            context_len: 8192,
        }]);
        assert!(cached < t8k / 4.0);
        // 12k tokens of KV (3.2 GB) over 2 × 50 GB/s at 80%: ~40 ms.
        let x = p.transfer_time(12_000);
        assert!((0.035..0.045).contains(&x), "{x}");
    }

    #[test]
    fn profiles_round_trip_and_are_checked() {
        let p = Profile::default_qwen3_32b_tp2_h200();
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("p.json");
        std::fs::write(&f, serde_json::to_string_pretty(&p).unwrap()).unwrap();
        assert_eq!(Profile::load(&f).unwrap(), p);
        let mut bad = p.clone();
        bad.hbm_efficiency = 1.5;
        bad.link_bandwidth = 0.0;
        let e = bad.validate().unwrap_err().to_string();
        assert!(
            e.contains("hbm_efficiency") && e.contains("link_bandwidth"),
            "{e}"
        );
        std::fs::write(&f, "{\"name\": \"x\"}").unwrap();
        assert!(
            Profile::load(&f)
                .unwrap_err()
                .to_string()
                .contains("missing field")
        );
    }

    #[test]
    fn a_step_of_several_prompts_prices_each_at_its_own_length() {
        let p = crate::sim::median::tests::pass(1.0);
        let m = p.measured.as_ref().unwrap();
        let w = |n: usize| SeqWork {
            new_tokens: n,
            context_len: n,
        };
        let ratio = |work: &[SeqWork]| m.ratio(&StepShape::of(work), |s| p.shape_time(s));
        // Prompts of one length: the ratio at that length, as one prompt reads it.
        let same = [w(20); 4];
        let got = p.step_time(&same) / p.roofline_time(&same);
        assert!((got / ratio(&[w(20)]) - 1.0).abs() < 1e-12);
        // A long prompt beside short ones: each at its own length's ratio, weighted by its
        // roofline time alone; not the ratio at their mean length.
        let mixed = [w(150), w(4), w(4), w(4)];
        let (long, short) = (p.roofline_time(&[w(150)]), p.roofline_time(&[w(4)]));
        let want = (long * ratio(&[w(150)]) + 3.0 * short * ratio(&[w(4)])) / (long + 3.0 * short);
        let got = p.step_time(&mixed) / p.roofline_time(&mixed);
        assert!((got / want - 1.0).abs() < 1e-12, "{got} {want}");
        assert!(
            (got / ratio(&[w(40)]) - 1.0).abs() > 1e-3,
            "the mean's ratio"
        );
        // With decodes: each prompt beside all of them.
        let d = SeqWork {
            new_tokens: 1,
            context_len: 30,
        };
        let mixed = [w(150), d, w(4), d];
        let (a, b) = (ratio(&[w(150), d, d]), ratio(&[w(4), d, d]));
        let want = (long * a + short * b) / (long + short);
        let got = p.step_time(&mixed) / p.roofline_time(&mixed);
        assert!((got / want - 1.0).abs() < 1e-12, "{got} {want}");
    }
}
