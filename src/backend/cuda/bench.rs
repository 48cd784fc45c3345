//! Kernel microbenchmarks at Qwen3-32B shapes (`tandem bench-kernels`): every kernel of the
//! backend, the full model's shapes (TP1) and one TP2 rank's shard, each reported as achieved
//! bandwidth or FLOP rate and as a fraction of ceilings measured in the same run (device copy
//! bandwidth, cuBLASLt bf16 GEMM rate). Inputs are random (never zeros), times are medians of
//! event-timed repetitions after a warm-up.

use cudarc::driver::{CudaEvent, sys::CUevent_flags};

use super::{Buf, CudaBackend, CudaKvCache, CudaTensor, device::cuda_err};
use crate::backend::{AttentionMeta, AttnSeq, Backend, HeadDims, KvCacheSpec};
use crate::error::Result;

/// One measured kernel.
#[derive(Debug, Clone)]
pub struct BenchRow {
    /// Kernel or op.
    pub kernel: String,
    /// Shape in words.
    pub shape: String,
    /// Median time of one call, microseconds.
    pub us: f64,
    /// Achieved rate in `unit`.
    pub achieved: f64,
    /// "GB/s" or "TFLOP/s".
    pub unit: &'static str,
    /// achieved / the ceiling of the same unit.
    pub fraction: f64,
}

/// The ceilings every row is compared with.
#[derive(Debug, Clone, Copy)]
pub struct Ceilings {
    /// Device-to-device copy, bytes read + written per second, in GB/s.
    pub copy_gbs: f64,
    /// cuBLASLt bf16 GEMM 8192^3, TFLOP/s.
    pub gemm_tflops: f64,
}

/// Qwen3-32B dimensions on one rank of `tp`.
#[derive(Debug, Clone, Copy)]
struct Shape {
    hidden: usize,
    q_heads: usize,
    kv_heads: usize,
    head_dim: usize,
    inter: usize,
    vocab: usize,
}

impl Shape {
    fn qwen3_32b(tp: usize) -> Self {
        Shape {
            hidden: 5120,
            q_heads: 64 / tp,
            kv_heads: 8 / tp,
            head_dim: 128,
            inter: 25600 / tp,
            vocab: 151_936usize.div_ceil(tp),
        }
    }

    fn dims(&self) -> HeadDims {
        HeadDims {
            q_heads: self.q_heads,
            kv_heads: self.kv_heads,
            head_dim: self.head_dim,
        }
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

impl CudaBackend {
    fn event(&self) -> Result<CudaEvent> {
        self.dev
            .ctx
            .new_event(Some(CUevent_flags::CU_EVENT_DEFAULT))
            .map_err(cuda_err("event"))
    }

    /// Median microseconds of one `f()`, over 7 event-timed runs of `iters` calls.
    fn time(&self, iters: usize, mut f: impl FnMut() -> Result<()>) -> Result<f64> {
        for _ in 0..3 {
            f()?;
        }
        self.dev.sync()?;
        let (start, end) = (self.event()?, self.event()?);
        let mut runs = Vec::new();
        for _ in 0..7 {
            start.record(&self.dev.stream).map_err(cuda_err("record"))?;
            for _ in 0..iters {
                f()?;
            }
            end.record(&self.dev.stream).map_err(cuda_err("record"))?;
            end.synchronize().map_err(cuda_err("event sync"))?;
            let ms = start.elapsed_ms(&end).map_err(cuda_err("elapsed"))?;
            runs.push(ms as f64 * 1e3 / iters as f64);
        }
        Ok(median(runs))
    }

    /// `elems` random bf16 values in [-1, 1) (a 16 MiB random pattern, repeated).
    fn random(&self, elems: usize) -> Result<Buf> {
        let buf = self.dev.alloc_owned(elems * 2)?;
        let chunk: Vec<half::bf16> = (0..elems.min(8 << 20))
            .map(|i| {
                let x = (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 40;
                half::bf16::from_f32(x as f32 / (1u64 << 23) as f32 - 1.0)
            })
            .collect();
        let mut off = 0;
        while off < elems {
            let n = chunk.len().min(elems - off);
            self.dev.htod(buf.ptr() + off as u64 * 2, &chunk[..n])?;
            off += n;
        }
        Ok(Buf::Owned(buf))
    }

    fn random_tensor(&self, rows: usize, cols: usize) -> Result<CudaTensor> {
        Ok(CudaTensor {
            rows,
            cols,
            buf: self.random(rows * cols)?,
        })
    }

    /// Measures the two ceilings.
    pub fn bench_ceilings(&self) -> Result<Ceilings> {
        self.dev.bind()?;
        let bytes = 1usize << 31;
        let (a, b) = (self.dev.alloc_owned(bytes)?, self.random(bytes / 2)?);
        let us = self.time(5, || self.dev.dtod(a.ptr(), b.ptr(), bytes))?;
        let copy_gbs = 2.0 * bytes as f64 / us / 1e3;
        let n = 8192;
        let (x, w) = (self.random(n * n)?, self.random(n * n)?);
        let out = self.dev.alloc_owned(n * n * 2)?;
        let us = self.time(5, || {
            self.gemm
                .matmul(&self.dev, out.ptr(), x.ptr(), w.ptr(), n, n, n)
        })?;
        let gemm_tflops = 2.0 * (n * n * n) as f64 / us / 1e6;
        Ok(Ceilings {
            copy_gbs,
            gemm_tflops,
        })
    }

    /// Every kernel at Qwen3-32B shapes on one rank of `tp` (1 or 2).
    pub fn bench_kernels(&self, tp: usize, c: Ceilings) -> Result<Vec<BenchRow>> {
        self.dev.bind()?;
        let s = Shape::qwen3_32b(tp);
        let mut rows = Vec::new();
        let tag = format!("TP{tp}");
        let mut push = |kernel: &str, shape: String, us: f64, bytes: f64, flops: f64| {
            // Compute-bound when the intensity is above the ridge point of the two ceilings.
            let ridge = c.gemm_tflops * 1e12 / (c.copy_gbs * 1e9);
            let (achieved, unit, fraction) = if flops > 0.0 && flops / bytes.max(1.0) > ridge {
                let t = flops / us / 1e6;
                (t, "TFLOP/s", t / c.gemm_tflops)
            } else {
                let g = bytes / us / 1e3;
                (g, "GB/s", g / c.copy_gbs)
            };
            rows.push(BenchRow {
                kernel: kernel.into(),
                shape: format!("{tag} {shape}"),
                us,
                achieved,
                unit,
                fraction,
            });
        };
        let h = s.hidden;
        for t in [256usize, 8192] {
            let x = self.random_tensor(t, h)?;
            let mut r = self.random_tensor(t, h)?;
            let w = self.random_tensor(1, h)?;
            let us = self.time(20, || self.rms_norm(&x, &w, 1e-6).map(drop))?;
            push(
                "rms_norm",
                format!("T={t} H={h}"),
                us,
                (2 * t * h * 2) as f64,
                0.0,
            );
            let us = self.time(20, || self.add_rms_norm(&x, &mut r, &w, 1e-6).map(drop))?;
            push(
                "add_rms_norm",
                format!("T={t} H={h}"),
                us,
                (4 * t * h * 2) as f64,
                0.0,
            );
            let table = self.random_tensor(s.vocab, h)?;
            let ids: Vec<u32> = (0..t as u32)
                .map(|i| i.wrapping_mul(2_654_435_761) % s.vocab as u32)
                .collect();
            let us = self.time(20, || self.embedding(&table, &ids, 0).map(drop))?;
            push(
                "embedding",
                format!("T={t} H={h}"),
                us,
                (2 * t * h * 2) as f64,
                0.0,
            );

            let dims = s.dims();
            let mut qkv = self.random_tensor(t, dims.qkv_width())?;
            let (qn, kn) = (
                self.random_tensor(1, s.head_dim)?,
                self.random_tensor(1, s.head_dim)?,
            );
            let rope = self.random_tensor(40960, s.head_dim)?;
            let pos: Vec<u32> = (0..t as u32).map(|i| i % 40960).collect();
            let us = self.time(20, || {
                self.qk_norm_rope(&mut qkv, dims, &qn, &kn, 1e-6, &rope, &pos)
            })?;
            let heads = s.q_heads + s.kv_heads;
            push(
                "qk_norm_rope",
                format!("T={t} heads={heads}"),
                us,
                (t * heads * s.head_dim * 2 * 2) as f64,
                0.0,
            );

            let gu = self.random_tensor(t, 2 * s.inter)?;
            let us = self.time(20, || self.silu_mul(&gu).map(drop))?;
            push(
                "silu_mul",
                format!("T={t} I={}", s.inter),
                us,
                (t * 3 * s.inter * 2) as f64,
                0.0,
            );

            let spec = KvCacheSpec {
                num_blocks: t.div_ceil(64) + 1,
                block_size: 64,
                kv_heads: s.kv_heads,
                head_dim: s.head_dim,
            };
            let mut cache = self.alloc_kv_cache(&spec)?;
            let slots: Vec<u32> = (0..t as u32).collect();
            let us = self.time(20, || self.write_kv(&mut cache, &qkv, dims, &slots))?;
            push(
                "write_kv",
                format!("T={t}"),
                us,
                (t * 4 * s.kv_heads * s.head_dim * 2) as f64,
                0.0,
            );
        }
        // GEMMs of one layer, decode to prefill sizes.
        let gemms = [
            ("qkv_proj", (s.q_heads + 2 * s.kv_heads) * s.head_dim, h),
            ("o_proj", h, s.q_heads * s.head_dim),
            ("gate_up_proj", 2 * s.inter, h),
            ("down_proj", h, s.inter),
            ("lm_head", s.vocab, h),
        ];
        for (name, m, k) in gemms {
            let w = self.random_tensor(m, k)?;
            for t in [1usize, 64, 256, 2048, 8192] {
                if name == "lm_head" && t > 256 {
                    continue; // logits are computed for sampled rows only
                }
                let x = self.random_tensor(t, k)?;
                let us = self.time(10, || self.linear(&x, &w).map(drop))?;
                let bytes = ((m * k + t * k + t * m) * 2) as f64;
                push(
                    name,
                    format!("T={t} {m}x{k}"),
                    us,
                    bytes,
                    (2 * t * m * k) as f64,
                );
            }
        }
        self.bench_attention(s, &mut push)?;
        for r in [1usize, 256] {
            let logits = self.random_tensor(r, s.vocab)?;
            let us = self.time(10, || self.argmax(&logits).map(drop))?;
            push(
                "argmax",
                format!("rows={r} V={}", s.vocab),
                us,
                (r * s.vocab * 2) as f64,
                0.0,
            );
            let ones = vec![1.0f32; r];
            let u = vec![0.5f32; r];
            let us = self.time(3, || {
                self.sample(&logits, &ones, &vec![50; r], &vec![0.9; r], &u)
                    .map(drop)
            })?;
            push(
                "sample_top_k_top_p",
                format!("rows={r} V={} k=50 p=0.9", s.vocab),
                us,
                (r * s.vocab * 2) as f64,
                0.0,
            );
        }
        rows.extend(self.bench_host_tier(s, &tag)?);
        Ok(rows)
    }

    /// The host KV tier's copies (64 blocks of 64 tokens, every layer, on the copy stream: one
    /// copy per block, layer and K/V) against one copy of the same bytes between the same
    /// pinned memory and the device; the fraction is of that copy.
    fn bench_host_tier(&self, s: Shape, tag: &str) -> Result<Vec<BenchRow>> {
        use super::host_tier::PinnedTier;
        use crate::kv::KvCopy;
        let (blocks, layers) = (64usize, 64usize);
        let spec = KvCacheSpec {
            num_blocks: blocks,
            block_size: 64,
            kv_heads: s.kv_heads,
            head_dim: s.head_dim,
        };
        let caches: Vec<CudaKvCache> = (0..layers)
            .map(|_| self.random_cache(spec))
            .collect::<Result<_>>()?;
        let slot_bytes = layers * self.kv_block_bytes(&spec);
        let bytes = blocks * slot_bytes;
        let tier = PinnedTier::new(&self.dev, bytes)?;
        let plain = self.dev.alloc_owned(bytes)?;
        let ids = 0..blocks as u32;
        let offloads: Vec<KvCopy> = ids
            .clone()
            .map(|i| KvCopy::Offload { block: i, slot: i })
            .collect();
        let onboards: Vec<KvCopy> = ids.map(|i| KvCopy::Onboard { slot: i, block: i }).collect();
        let shape = format!(
            "{tag} {blocks} blocks x {layers} layers ({} MiB)",
            bytes >> 20
        );
        let mut out = Vec::new();
        for (kernel, copies, to_host) in [
            ("host_tier_offload", &offloads, true),
            ("host_tier_onboard", &onboards, false),
        ] {
            let us = self.time(1, || tier.copy(&self.dev, &caches, copies, slot_bytes))?;
            let one = self.time(1, || tier.copy_whole(&self.dev, plain.ptr(), to_host))?;
            let (got, ceiling) = (bytes as f64 / us / 1e3, bytes as f64 / one / 1e3);
            for (k, us, g) in [
                (kernel.to_string(), us, got),
                (format!("{kernel}_one_memcpy"), one, ceiling),
            ] {
                out.push(BenchRow {
                    kernel: k,
                    shape: shape.clone(),
                    us,
                    achieved: g,
                    unit: "GB/s",
                    fraction: g / ceiling,
                });
            }
        }
        Ok(out)
    }

    fn bench_attention(
        &self,
        s: Shape,
        push: &mut impl FnMut(&str, String, f64, f64, f64),
    ) -> Result<()> {
        let dims = s.dims();
        let bs = 64;
        let kv_w = s.kv_heads * s.head_dim;
        // Decode: batch x context, every sequence at full context.
        for (b, ctx) in [(1usize, 8192usize), (64, 2048), (256, 1024), (256, 8192)] {
            let per = ctx.div_ceil(bs);
            let spec = KvCacheSpec {
                num_blocks: b * per,
                block_size: bs,
                kv_heads: s.kv_heads,
                head_dim: s.head_dim,
            };
            let cache = self.random_cache(spec)?;
            let qkv = self.random_tensor(b, dims.qkv_width())?;
            let meta = AttentionMeta {
                block_size: bs,
                seqs: (0..b)
                    .map(|i| AttnSeq {
                        query_start: i,
                        query_len: 1,
                        context_len: ctx,
                        // Interleaved blocks: sequences do not sit in contiguous memory.
                        block_table: (0..per).map(|j| (j * b + i) as u32).collect(),
                    })
                    .collect(),
            };
            let us = self.time(10, || {
                self.paged_attention(&qkv, dims, &cache, &meta).map(drop)
            })?;
            let bytes = (b * ctx * kv_w * 2 * 2) as f64;
            let flops = (4 * b * ctx * s.q_heads * s.head_dim) as f64;
            push(
                "attention_decode",
                format!("B={b} ctx={ctx}"),
                us,
                bytes,
                flops,
            );
        }
        // Prefill: one long prompt, and a chunk after a cached prefix.
        for (prefix, new) in [(0usize, 4096usize), (0, 8192), (8192, 2048)] {
            let ctx = prefix + new;
            let per = ctx.div_ceil(bs);
            let spec = KvCacheSpec {
                num_blocks: per,
                block_size: bs,
                kv_heads: s.kv_heads,
                head_dim: s.head_dim,
            };
            let cache = self.random_cache(spec)?;
            let qkv = self.random_tensor(new, dims.qkv_width())?;
            let meta = AttentionMeta {
                block_size: bs,
                seqs: vec![AttnSeq {
                    query_start: 0,
                    query_len: new,
                    context_len: ctx,
                    block_table: (0..per as u32).collect(),
                }],
            };
            let us = self.time(3, || {
                self.paged_attention(&qkv, dims, &cache, &meta).map(drop)
            })?;
            // Causal: query i sees prefix + i + 1 keys; QK^T and PV are 2 FLOPs per MAC each.
            let pairs = (new * prefix + new * (new + 1) / 2) as f64;
            let flops = 4.0 * pairs * (s.q_heads * s.head_dim) as f64;
            let bytes = ((ctx * kv_w * 2 + new * dims.qkv_width() + new * s.q_heads * s.head_dim)
                * 2) as f64;
            push(
                "attention_prefill",
                format!("prefix={prefix} new={new}"),
                us,
                bytes,
                flops,
            );
        }
        Ok(())
    }

    fn random_cache(&self, spec: KvCacheSpec) -> Result<CudaKvCache> {
        let n = spec.num_blocks * spec.block_elems();
        let (k, v) = (self.random(n)?, self.random(n)?);
        match (k, v) {
            (Buf::Owned(k), Buf::Owned(v)) => Ok(CudaKvCache { spec, k, v }),
            _ => Err(crate::error::Error::Backend("bench cache not owned".into())),
        }
    }
}

/// The rows as a markdown table.
pub fn table(c: Ceilings, rows: &[BenchRow]) -> String {
    let mut out = format!(
        "Ceilings: device copy {:.0} GB/s, cuBLASLt bf16 GEMM {:.1} TFLOP/s\n\n\
         | kernel | shape | time (us) | achieved | of ceiling |\n|---|---|---:|---:|---:|\n",
        c.copy_gbs, c.gemm_tflops
    );
    for r in rows {
        out.push_str(&format!(
            "| {} | {} | {:.1} | {:.1} {} | {:.0}% |\n",
            r.kernel,
            r.shape,
            r.us,
            r.achieved,
            r.unit,
            100.0 * r.fraction
        ));
    }
    out
}
