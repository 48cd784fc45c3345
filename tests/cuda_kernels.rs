//! Every CUDA backend op against the CPU reference on random inputs (several shapes, ragged
//! batches, block-table edge cases). Inputs are rounded to bf16 first so that both backends
//! see the same numbers; outputs must agree to bf16 precision (error < 1e-2 of the scale).
//!
//! Without a GPU every test prints "SKIPPED: no CUDA device" and passes; with
//! TANDEM_REQUIRE_GPU=1 (the GPU suite) a missing device fails instead.
#![cfg(feature = "cuda")]

mod cuda_common;

use cuda_common::{Rng, gpu, rel};
use tandem::backend::cuda::CudaBackend;
use tandem::backend::{
    AttentionMeta, AttnSeq, Backend, CpuBackend, HeadDims, HostTensor, KvCacheSpec,
};

const TOL: f32 = 1e-2;

/// Uploads the same host tensor to both backends.
fn both(
    cpu: &CpuBackend,
    gpu: &CudaBackend,
    t: &HostTensor,
) -> (
    <CpuBackend as Backend>::Tensor,
    <CudaBackend as Backend>::Tensor,
) {
    (cpu.upload(t).unwrap(), gpu.upload(t).unwrap())
}

fn check(name: &str, g: &CudaBackend, gt: &<CudaBackend as Backend>::Tensor, c: &HostTensor) {
    let h = g.to_host(gt).unwrap();
    assert_eq!(h.shape, c.shape, "{name}: shape");
    let e = rel(&h.data, &c.data);
    assert!(e < TOL, "{name}: relative error {e}");
}

#[test]
fn embedding_and_gather_rows() {
    let Some(g) = gpu("embedding_and_gather_rows") else {
        return;
    };
    let c = CpuBackend::new();
    let mut rng = Rng(1);
    for (rows, cols, offset) in [(300, 64, 0), (1000, 512, 500), (77, 5120, 3)] {
        let table = rng.tensor(vec![rows, cols], 1.0);
        let (ct, gt) = both(&c, &g, &table);
        // Ids below, inside and above this rank's shard.
        let ids: Vec<u32> = (0..37)
            .map(|i| (i * 53 % (rows + 2 * offset + 5)) as u32)
            .collect();
        let want = c.to_host(&c.embedding(&ct, &ids, offset).unwrap()).unwrap();
        check(
            "embedding",
            &g,
            &g.embedding(&gt, &ids, offset).unwrap(),
            &want,
        );
        let pick = [5usize, 0, 36, 36, 17];
        let x = c.embedding(&ct, &ids, offset).unwrap();
        let gx = g.embedding(&gt, &ids, offset).unwrap();
        let want = c.to_host(&c.gather_rows(&x, &pick).unwrap()).unwrap();
        check(
            "gather_rows",
            &g,
            &g.gather_rows(&gx, &pick).unwrap(),
            &want,
        );
        assert!(g.gather_rows(&gx, &[37]).is_err());
    }
}

#[test]
fn rms_norm_and_fused_residual_add() {
    let Some(g) = gpu("rms_norm_and_fused_residual_add") else {
        return;
    };
    let c = CpuBackend::new();
    let mut rng = Rng(2);
    for (rows, cols) in [(1, 64), (5, 1024), (130, 5120), (3, 8)] {
        let x = rng.tensor(vec![rows, cols], 2.0);
        let r = rng.tensor(vec![rows, cols], 2.0);
        let w = rng.tensor(vec![cols], 1.0);
        let ((cx, gx), (mut cr, mut gr), (cw, gw)) =
            (both(&c, &g, &x), both(&c, &g, &r), both(&c, &g, &w));
        let want = c.to_host(&c.rms_norm(&cx, &cw, 1e-6).unwrap()).unwrap();
        check("rms_norm", &g, &g.rms_norm(&gx, &gw, 1e-6).unwrap(), &want);
        let want = c
            .to_host(&c.add_rms_norm(&cx, &mut cr, &cw, 1e-6).unwrap())
            .unwrap();
        check(
            "add_rms_norm",
            &g,
            &g.add_rms_norm(&gx, &mut gr, &gw, 1e-6).unwrap(),
            &want,
        );
        check("residual", &g, &gr, &c.to_host(&cr).unwrap());
    }
}

#[test]
fn linear_matches_at_decode_and_prefill_sizes() {
    let Some(g) = gpu("linear_matches_at_decode_and_prefill_sizes") else {
        return;
    };
    let c = CpuBackend::new();
    let mut rng = Rng(3);
    for (n, k, m) in [
        (1, 64, 96),
        (7, 256, 384),
        (16, 1024, 259),
        (600, 512, 1000),
    ] {
        let x = rng.tensor(vec![n, k], 1.0);
        let w = rng.tensor(vec![m, k], 0.05);
        let ((cx, gx), (cw, gw)) = (both(&c, &g, &x), both(&c, &g, &w));
        let want = c.to_host(&c.linear(&cx, &cw).unwrap()).unwrap();
        check("linear", &g, &g.linear(&gx, &gw).unwrap(), &want);
    }
}

#[test]
fn qk_norm_rope_and_silu_mul() {
    let Some(g) = gpu("qk_norm_rope_and_silu_mul") else {
        return;
    };
    let c = CpuBackend::new();
    let mut rng = Rng(4);
    for (q_heads, kv_heads, head_dim, rows) in [(4, 2, 24, 3), (8, 2, 128, 9), (16, 8, 64, 33)] {
        let dims = HeadDims {
            q_heads,
            kv_heads,
            head_dim,
        };
        let qkv = rng.tensor(vec![rows, dims.qkv_width()], 3.0);
        let rope = rng.tensor(vec![100, head_dim], 1.0);
        let qn = rng.tensor(vec![head_dim], 1.0);
        let kn = rng.tensor(vec![head_dim], 1.0);
        let positions: Vec<u32> = (0..rows).map(|i| (i * 7 % 100) as u32).collect();
        let ((mut cq, mut gq), (cr, gr)) = (both(&c, &g, &qkv), both(&c, &g, &rope));
        let ((cqn, gqn), (ckn, gkn)) = (both(&c, &g, &qn), both(&c, &g, &kn));
        c.qk_norm_rope(&mut cq, dims, &cqn, &ckn, 1e-6, &cr, &positions)
            .unwrap();
        g.qk_norm_rope(&mut gq, dims, &gqn, &gkn, 1e-6, &gr, &positions)
            .unwrap();
        check("qk_norm_rope", &g, &gq, &c.to_host(&cq).unwrap());
        let bad = vec![100u32; rows];
        assert!(
            g.qk_norm_rope(&mut gq, dims, &gqn, &gkn, 1e-6, &gr, &bad)
                .is_err()
        );
    }
    for (rows, inter) in [(1, 8), (5, 160), (70, 3200)] {
        let x = rng.tensor(vec![rows, 2 * inter], 4.0);
        let (cx, gx) = both(&c, &g, &x);
        let want = c.to_host(&c.silu_mul(&cx).unwrap()).unwrap();
        check("silu_mul", &g, &g.silu_mul(&gx).unwrap(), &want);
    }
}

/// One step's sequence: `prefix` tokens already cached, `new` computed now.
struct Seq {
    prefix: usize,
    new: usize,
}

/// Fills both caches with each sequence's prefix, then runs one step (write_kv + attention)
/// over `seqs` and compares; block tables are shuffled so that blocks are not in order.
fn attention_case(g: &CudaBackend, dims: HeadDims, block_size: usize, seqs: &[Seq], seed: u64) {
    let c = CpuBackend::new();
    let mut rng = Rng(seed);
    let blocks_needed: usize = seqs
        .iter()
        .map(|s| (s.prefix + s.new).div_ceil(block_size))
        .sum();
    let spec = KvCacheSpec {
        num_blocks: blocks_needed + 3,
        block_size,
        kv_heads: dims.kv_heads,
        head_dim: dims.head_dim,
    };
    let mut order: Vec<u32> = (0..spec.num_blocks as u32).collect();
    rng.shuffle(&mut order);
    let (mut cc, mut gc) = (
        c.alloc_kv_cache(&spec).unwrap(),
        g.alloc_kv_cache(&spec).unwrap(),
    );
    let mut next = 0;
    let tables: Vec<Vec<u32>> = seqs
        .iter()
        .map(|s| {
            let n = (s.prefix + s.new).div_ceil(block_size);
            next += n;
            order[next - n..next].to_vec()
        })
        .collect();
    let slot =
        |t: &[u32], pos: usize| t[pos / block_size] * block_size as u32 + (pos % block_size) as u32;
    // The cached prefixes, written as an earlier step would have.
    let slots: Vec<u32> = seqs
        .iter()
        .zip(&tables)
        .flat_map(|(s, t)| (0..s.prefix).map(|p| slot(t, p)).collect::<Vec<_>>())
        .collect();
    if !slots.is_empty() {
        let old = rng.tensor(vec![slots.len(), dims.qkv_width()], 1.0);
        let (co, go) = both(&c, g, &old);
        c.write_kv(&mut cc, &co, dims, &slots).unwrap();
        g.write_kv(&mut gc, &go, dims, &slots).unwrap();
    }
    let mut meta = AttentionMeta {
        block_size,
        seqs: Vec::new(),
    };
    let mut slots = Vec::new();
    for (s, t) in seqs.iter().zip(&tables) {
        meta.seqs.push(AttnSeq {
            query_start: slots.len(),
            query_len: s.new,
            context_len: s.prefix + s.new,
            block_table: t.clone(),
        });
        slots.extend((s.prefix..s.prefix + s.new).map(|p| slot(t, p)));
    }
    let qkv = rng.tensor(vec![slots.len(), dims.qkv_width()], 2.0);
    let (cq, gq) = both(&c, g, &qkv);
    c.write_kv(&mut cc, &cq, dims, &slots).unwrap();
    g.write_kv(&mut gc, &gq, dims, &slots).unwrap();
    let want = c
        .to_host(&c.attention(&cq, dims, &cc, &meta).unwrap())
        .unwrap();
    let got = g.attention(&gq, dims, &gc, &meta).unwrap();
    check(
        &format!("attention {dims:?} bs {block_size}"),
        g,
        &got,
        &want,
    );
    // The cache itself, block by block, through the transfer path.
    let all: Vec<u32> = (0..spec.num_blocks as u32).collect();
    let cb = c.read_kv_blocks(&cc, &all).unwrap();
    let gb = g.read_kv_blocks(&gc, &all).unwrap();
    let cf: Vec<f32> = cb
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect();
    let gf: Vec<f32> = gb
        .chunks_exact(2)
        .map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32())
        .collect();
    assert!(rel(&gf, &cf) < TOL, "KV cache contents differ");
}

#[test]
fn attention_decode_prefill_and_prefix_hits() {
    let Some(g) = gpu("attention_decode_prefill_and_prefix_hits") else {
        return;
    };
    let shapes = [
        (4, 2, 24, 16),   // tiny-qwen3: head_dim padded to 32
        (8, 2, 64, 16),   // GQA group 4
        (64, 8, 128, 64), // Qwen3-32B TP1 heads
        (16, 1, 128, 32), // group 16: two decode head chunks
    ];
    for (i, &(q_heads, kv_heads, head_dim, block_size)) in shapes.iter().enumerate() {
        let dims = HeadDims {
            q_heads,
            kv_heads,
            head_dim,
        };
        // Decode only: short, exactly one block, partial last block, long (split-K).
        let decode = [
            Seq { prefix: 0, new: 1 },
            Seq {
                prefix: block_size - 1,
                new: 1,
            },
            Seq {
                prefix: 3 * block_size + 4,
                new: 1,
            },
            Seq {
                prefix: 1500,
                new: 1,
            },
        ];
        attention_case(&g, dims, block_size, &decode, 10 + i as u64);
        // Ragged mixed batch: fresh prefill, prefix hit ending mid-block, prefix on a block
        // boundary, a chunk longer than one query tile, and decodes in between.
        let mixed = [
            Seq {
                prefix: 0,
                new: 130,
            },
            Seq {
                prefix: 200,
                new: 1,
            },
            Seq {
                prefix: block_size + block_size / 2,
                new: 37,
            },
            Seq {
                prefix: 2 * block_size,
                new: 5,
            },
            Seq { prefix: 77, new: 1 },
            Seq {
                prefix: 300,
                new: 200,
            },
        ];
        attention_case(&g, dims, block_size, &mixed, 20 + i as u64);
    }
}

#[test]
fn collectives_of_one_rank_and_kv_transfer() {
    let Some(g) = gpu("collectives_of_one_rank_and_kv_transfer") else {
        return;
    };
    let mut rng = Rng(5);
    let x = rng.tensor(vec![3, 259], 1.0);
    let mut gx = g.upload(&x).unwrap();
    g.all_reduce(&mut gx).unwrap();
    check("all_reduce", &g, &gx, &x);
    check("all_gather_cols", &g, &g.all_gather_cols(&gx).unwrap(), &x);

    let spec = KvCacheSpec {
        num_blocks: 5,
        block_size: 4,
        kv_heads: 2,
        head_dim: 16,
    };
    let dims = HeadDims {
        q_heads: 2,
        kv_heads: 2,
        head_dim: 16,
    };
    let mut src = g.alloc_kv_cache(&spec).unwrap();
    let qkv = rng.tensor(vec![20, dims.qkv_width()], 1.0);
    let slots: Vec<u32> = (0..20).collect();
    g.write_kv(&mut src, &g.upload(&qkv).unwrap(), dims, &slots)
        .unwrap();
    let bytes = g.read_kv_blocks(&src, &[3, 1]).unwrap();
    assert_eq!(bytes.len(), 2 * g.kv_block_bytes(&spec));
    let mut dst = g.alloc_kv_cache(&spec).unwrap();
    g.write_kv_blocks(&mut dst, &[0, 4], &bytes).unwrap();
    assert_eq!(g.read_kv_blocks(&dst, &[0, 4]).unwrap(), bytes);
    assert!(g.read_kv_blocks(&src, &[5]).is_err());
    assert!(g.write_kv_blocks(&mut dst, &[0], &bytes).is_err());
    assert!(
        g.write_kv(&mut dst, &g.upload(&qkv).unwrap(), dims, &[20; 20])
            .is_err()
    );
}

#[test]
fn device_sampling() {
    let Some(g) = gpu("device_sampling") else {
        return;
    };
    let mut rng = Rng(6);
    for vocab in [259, 151_936] {
        let logits = rng.tensor(vec![4, vocab], 5.0);
        let gl = g.upload(&logits).unwrap();
        let host = g.to_host(&gl).unwrap();
        let want: Vec<u32> = (0..4)
            .map(|r| {
                let row = host.row(r);
                let mut best = 0;
                for (i, &v) in row.iter().enumerate() {
                    if v > row[best] {
                        best = i;
                    }
                }
                best as u32
            })
            .collect();
        assert_eq!(g.argmax(&gl).unwrap(), want, "argmax");
        // top_k 1 and a tiny top_p both leave only the row's largest value. The kernel keeps
        // ties at a threshold together, and bf16 rows of 151936 values in [-5, 5) hold
        // hundreds of copies of their maximum, so compare values, not the argmax index.
        let ones = [1.0f32; 4];
        let u = [0.1f32, 0.5, 0.9, 0.999];
        let is_max = |got: Vec<u32>, what: &str| {
            for (r, &t) in got.iter().enumerate() {
                let row = host.row(r);
                assert_eq!(row[t as usize], row[want[r] as usize], "{what}: row {r}");
            }
        };
        is_max(g.sample(&gl, &ones, &[1; 4], &ones, &u).unwrap(), "top_k 1");
        is_max(
            g.sample(&gl, &ones, &[0; 4], &[1e-6; 4], &u).unwrap(),
            "top_p",
        );
        // top_k 5: every draw is one of the row's 5 largest.
        let got = g.sample(&gl, &ones, &[5; 4], &ones, &u).unwrap();
        for (r, &t) in got.iter().enumerate() {
            let row = host.row(r);
            let above = row.iter().filter(|&&v| v > row[t as usize]).count();
            assert!(above < 5, "row {r}: token {t} is not in the top 5");
        }
    }
}
