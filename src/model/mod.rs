//! Qwen3 (dense, 0.6B to 32B), written once over the [`Backend`] trait, with tensor parallelism.

pub mod demo;
pub mod rope;
pub mod weights;

use indicatif::{ProgressBar, ProgressStyle};

use crate::backend::{Backend, HeadDims, HostTensor, KvCacheSpec, ModelInput};
use crate::config::ModelConfig;
use crate::error::{Error, Result};
pub use weights::{Shard, WeightSource};

/// This process's place in a tensor-parallel group.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TpRank {
    /// Rank in the group.
    pub rank: usize,
    /// Ranks in the group.
    pub size: usize,
}

impl TpRank {
    /// No tensor parallelism.
    pub const SINGLE: TpRank = TpRank { rank: 0, size: 1 };

    /// Checks that `cfg` can be split `size` ways.
    pub fn validate(size: usize, cfg: &ModelConfig) -> Result<()> {
        let ok = size > 0
            && cfg.num_attention_heads.is_multiple_of(size)
            && cfg.num_key_value_heads.is_multiple_of(size)
            && cfg.intermediate_size.is_multiple_of(size);
        if ok {
            Ok(())
        } else {
            Err(Error::EngineConfig(format!(
                "tensor parallel size {size} must divide the query heads ({}), KV heads ({}) and intermediate size ({})",
                cfg.num_attention_heads, cfg.num_key_value_heads, cfg.intermediate_size
            )))
        }
    }

    /// Rank-local `(start, len)` of an evenly split dimension.
    fn even(&self, total: usize) -> (usize, usize) {
        let n = total / self.size;
        (self.rank * n, n)
    }

    /// Rank-local `(start, len)` of the vocabulary: ceil-sized shards, the last one shorter.
    pub fn vocab_range(&self, vocab: usize) -> (usize, usize) {
        let per = vocab.div_ceil(self.size);
        let start = (self.rank * per).min(vocab);
        (start, per.min(vocab - start))
    }
}

struct Layer<T> {
    input_norm: T,
    qkv: T,
    q_norm: T,
    k_norm: T,
    o_proj: T,
    post_norm: T,
    gate_up: T,
    down: T,
}

/// The weights of one rank of a Qwen3 model on a backend.
pub struct Qwen3<B: Backend> {
    cfg: ModelConfig,
    tp: TpRank,
    dims: HeadDims,
    vocab_start: usize,
    embed: B::Tensor,
    lm_head: Option<B::Tensor>,
    layers: Vec<Layer<B::Tensor>>,
    norm: B::Tensor,
    rope: B::Tensor,
}

fn concat_rows(parts: Vec<HostTensor>) -> HostTensor {
    let cols = parts[0].cols();
    let mut data = Vec::new();
    for p in parts {
        data.extend(p.data);
    }
    HostTensor::new(vec![data.len() / cols, cols], data)
}

impl<B: Backend> Qwen3<B> {
    /// Loads rank `tp`'s shard of every weight from `src` onto `backend`, with RoPE tables up to
    /// `max_model_len` positions. Shows a progress bar on a terminal when `progress` is set.
    pub fn load(
        backend: &B,
        cfg: &ModelConfig,
        src: &WeightSource,
        tp: TpRank,
        max_model_len: usize,
        progress: bool,
    ) -> Result<Self> {
        TpRank::validate(tp.size, cfg)?;
        let (h, d, inter) = (cfg.hidden_size, cfg.head_dim, cfg.intermediate_size);
        let (nq, nkv) = (cfg.num_attention_heads, cfg.num_key_value_heads);
        let dims = HeadDims {
            q_heads: nq / tp.size,
            kv_heads: nkv / tp.size,
            head_dim: d,
        };
        let (vocab_start, vocab_len) = tp.vocab_range(cfg.vocab_size);
        let bar = if progress {
            ProgressBar::new((cfg.num_hidden_layers + 2) as u64)
        } else {
            ProgressBar::hidden()
        };
        bar.set_style(
            ProgressStyle::with_template("loading weights {bar:40} {pos}/{len} layers {elapsed}")
                .expect("static template"),
        );
        let up = |t: HostTensor| backend.upload(&t);
        let heads = |n: usize| {
            let (s, l) = tp.even(n);
            Shard::Rows(s * d, l * d)
        };
        let vocab_shard = Shard::Rows(vocab_start, vocab_len);
        let embed = up(src.get(
            "model.embed_tokens.weight",
            &[cfg.vocab_size, h],
            vocab_shard,
        )?)?;
        // Tied checkpoints may also store lm_head.weight; the embedding is the one that counts.
        let lm_head = if cfg.tie_word_embeddings {
            None
        } else {
            Some(up(src.get(
                "lm_head.weight",
                &[cfg.vocab_size, h],
                vocab_shard,
            )?)?)
        };
        bar.inc(1);
        let mut layers = Vec::with_capacity(cfg.num_hidden_layers);
        for i in 0..cfg.num_hidden_layers {
            let p = format!("model.layers.{i}");
            let w = |name: &str, shape: &[usize], shard| {
                src.get(&format!("{p}.{name}.weight"), shape, shard)
            };
            let (qo, kvo) = (nq * d, nkv * d);
            let qkv = concat_rows(vec![
                w("self_attn.q_proj", &[qo, h], heads(nq))?,
                w("self_attn.k_proj", &[kvo, h], heads(nkv))?,
                w("self_attn.v_proj", &[kvo, h], heads(nkv))?,
            ]);
            let (qs, ql) = tp.even(nq);
            let (is, il) = tp.even(inter);
            let gate_up = concat_rows(vec![
                w("mlp.gate_proj", &[inter, h], Shard::Rows(is, il))?,
                w("mlp.up_proj", &[inter, h], Shard::Rows(is, il))?,
            ]);
            layers.push(Layer {
                input_norm: up(w("input_layernorm", &[h], Shard::Full)?)?,
                qkv: up(qkv)?,
                q_norm: up(w("self_attn.q_norm", &[d], Shard::Full)?)?,
                k_norm: up(w("self_attn.k_norm", &[d], Shard::Full)?)?,
                o_proj: up(w(
                    "self_attn.o_proj",
                    &[h, qo],
                    Shard::Cols(qs * d, ql * d),
                )?)?,
                post_norm: up(w("post_attention_layernorm", &[h], Shard::Full)?)?,
                gate_up: up(gate_up)?,
                down: up(w("mlp.down_proj", &[h, inter], Shard::Cols(is, il))?)?,
            });
            bar.inc(1);
        }
        let norm = up(src.get("model.norm.weight", &[h], Shard::Full)?)?;
        let rope = up(rope::rope_table(cfg, max_model_len))?;
        bar.inc(1);
        bar.finish_and_clear();
        Ok(Qwen3 {
            cfg: cfg.clone(),
            tp,
            dims,
            vocab_start,
            embed,
            lm_head,
            layers,
            norm,
            rope,
        })
    }

    /// The config the model was built from.
    pub fn config(&self) -> &ModelConfig {
        &self.cfg
    }

    /// The layout of one layer's KV cache on this rank for `num_blocks` blocks.
    pub fn kv_cache_spec(&self, num_blocks: usize, block_size: usize) -> KvCacheSpec {
        KvCacheSpec {
            num_blocks,
            block_size,
            kv_heads: self.dims.kv_heads,
            head_dim: self.dims.head_dim,
        }
    }

    /// Runs one step: writes the new tokens' K/V into `kv` (one cache per layer) and returns the
    /// full-vocabulary logits `[logit_rows, vocab]` (identical on every rank). Layer `l` touches
    /// its cache only after `layer_ready(l)` returns (copies between the KV tiers may still be
    /// writing later layers).
    pub fn forward(
        &self,
        backend: &B,
        kv: &mut [B::KvCache],
        input: &ModelInput,
        layer_ready: &dyn Fn(usize) -> Result<()>,
    ) -> Result<B::Tensor> {
        if kv.len() != self.layers.len() {
            return Err(Error::Backend(format!(
                "{} KV caches for {} layers",
                kv.len(),
                self.layers.len()
            )));
        }
        let eps = self.cfg.rms_norm_eps as f32;
        let mut h = backend.embedding(&self.embed, &input.tokens, self.vocab_start)?;
        if self.tp.size > 1 {
            backend.all_reduce(&mut h)?;
        }
        let mut residual: Option<B::Tensor> = None;
        for (l, (layer, cache)) in self.layers.iter().zip(kv.iter_mut()).enumerate() {
            layer_ready(l)?;
            let x = match residual.as_mut() {
                None => {
                    let x = backend.rms_norm(&h, &layer.input_norm, eps)?;
                    residual = Some(h);
                    x
                }
                Some(res) => backend.add_rms_norm(&h, res, &layer.input_norm, eps)?,
            };
            let mut qkv = backend.linear(&x, &layer.qkv)?;
            backend.qk_norm_rope(
                &mut qkv,
                self.dims,
                &layer.q_norm,
                &layer.k_norm,
                eps,
                &self.rope,
                &input.positions,
            )?;
            backend.write_kv(cache, &qkv, self.dims, &input.slots)?;
            let attn = backend.attention(&qkv, self.dims, cache, &input.attn)?;
            let mut o = backend.linear(&attn, &layer.o_proj)?;
            backend.all_reduce(&mut o)?;
            let res = residual.as_mut().expect("set by the first layer");
            let x = backend.add_rms_norm(&o, res, &layer.post_norm, eps)?;
            let act = backend.silu_mul(&backend.linear(&x, &layer.gate_up)?)?;
            h = backend.linear(&act, &layer.down)?;
            backend.all_reduce(&mut h)?;
        }
        let mut res = residual.ok_or_else(|| Error::Backend("model has no layers".into()))?;
        let x = backend.add_rms_norm(&h, &mut res, &self.norm, eps)?;
        let x = backend.gather_rows(&x, &input.logit_rows)?;
        let logits = backend.linear(&x, self.lm_head.as_ref().unwrap_or(&self.embed))?;
        backend.all_gather_cols(&logits)
    }
}
