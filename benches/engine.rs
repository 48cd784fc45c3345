//! Engine benchmarks (CPU): scheduler + block manager per step, prefix-cache lookup per block,
//! decode tokens/s of the CPU backend, and a step whose prefix comes from the host KV tier.
//! Run: `cargo bench --bench engine` (`-- host_tier` for the last alone).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use tandem::backend::{Backend, CpuBackend, HostTensor};
use tandem::config::EngineConfig;
use tandem::engine::sampler::Sampled;
use tandem::engine::{EngineCore, Executor, Request, SamplingParams, StepBatch};
use tandem::kv::{BlockTable, EventDetail, KvCacheManager};
use tandem::loader::{ModelSpec, load_cpu};

/// Returns a token at once: what is left of a step is the engine's own bookkeeping.
struct NoModel;

impl Executor for NoModel {
    fn execute(&mut self, batch: &StepBatch<'_>) -> tandem::Result<Vec<Sampled>> {
        Ok(batch
            .samples
            .iter()
            .map(|_| Sampled {
                token: 7,
                logprob: None,
                top_logprobs: vec![],
            })
            .collect())
    }
}

fn forever(prompt_len: usize, salt: u32) -> (Vec<u32>, SamplingParams) {
    let prompt = (0..prompt_len as u32)
        .map(|i| (i * 31 + salt * 977) % 150_000)
        .collect();
    (
        prompt,
        SamplingParams {
            ignore_eos: true,
            ..SamplingParams::greedy(1 << 30)
        },
    )
}

/// 256 sequences decoding at 2k tokens of context, block size 64 (the reference geometry).
fn scheduler_step(c: &mut Criterion) {
    let cfg = EngineConfig {
        block_size: 64,
        num_blocks: 16_384,
        max_model_len: 131_072,
        max_num_seqs: 256,
        max_num_batched_tokens: 8192,
        long_prefill_token_threshold: 0,
        enable_prefix_caching: true,
        vocab_size: 151_936,
        kv_hold_timeout: std::time::Duration::from_secs(30),
        host_kv_blocks: 0,
    };
    let mut engine = EngineCore::new(cfg, NoModel, vec![]).unwrap();
    for i in 0..256u64 {
        let (prompt, params) = forever(2048, i as u32);
        engine
            .add_request(Request {
                id: i,
                prompt,
                params,
            })
            .unwrap();
    }
    while engine.num_requests().1 > 0 || engine.step().unwrap().len() < 256 {
        engine.step().map_err(|f| f.error).unwrap();
    }
    let mut g = c.benchmark_group("scheduler");
    g.throughput(Throughput::Elements(256));
    g.bench_function("decode_step_256_seqs_2k_ctx", |b| {
        b.iter(|| black_box(engine.step().unwrap().len()))
    });
    g.finish();
}

/// Hashing and looking up a 64k-token prompt (1024 blocks of 64) that is fully cached.
fn prefix_lookup(c: &mut Criterion) {
    let bs = 64;
    let blocks = 1024;
    let mut kv = KvCacheManager::new(blocks + 1, bs, true, EventDetail::Off);
    let (tokens, _) = forever(blocks * bs + 1, 3);
    let mut held = BlockTable::default();
    assert!(kv.allocate_slots(&mut held, &tokens, &[], 0, tokens.len()));
    let mut g = c.benchmark_group("prefix_cache");
    g.throughput(Throughput::Elements(blocks as u64));
    g.bench_function("hash_and_lookup_per_block", |b| {
        b.iter_batched(
            BlockTable::default,
            |mut t| {
                let hits = kv.find_cached_prefix(&mut t, &tokens);
                assert_eq!(hits.len(), blocks);
                hits
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

/// Decode tokens/s of the CPU backend at batch 1 and 8 on the demo and fixture models
/// (contexts of 128 to 384 tokens; only decode steps are timed).
fn cpu_decode(c: &mut Criterion) {
    let fixture = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/tiny-qwen3");
    let mut g = c.benchmark_group("cpu_decode");
    g.measurement_time(Duration::from_secs(5));
    for (name, model) in [("demo", None), ("fixture", Some(fixture.into()))] {
        for batch in [1usize, 8] {
            let spec = ModelSpec {
                model: model.clone(),
                max_model_len: Some(512),
                kv_cache_bytes: 64 << 20,
                ..ModelSpec::default()
            };
            let mut engine = load_cpu(&spec).unwrap().engine;
            let mut next_id = 0u64;
            g.throughput(Throughput::Elements(batch as u64));
            g.bench_function(format!("{name}_batch{batch}"), |b| {
                b.iter_custom(|iters| {
                    let mut timed = Duration::ZERO;
                    for _ in 0..iters {
                        if engine.num_requests().0 < batch {
                            while engine.has_work() {
                                engine.step().map_err(|f| f.error).unwrap();
                            }
                            for _ in 0..batch {
                                let (prompt, mut params) = forever(128, next_id as u32);
                                params.max_tokens = 256;
                                let prompt = prompt.iter().map(|t| t % 256).collect();
                                engine
                                    .add_request(Request {
                                        id: next_id,
                                        prompt,
                                        params,
                                    })
                                    .unwrap();
                                next_id += 1;
                            }
                            engine.step().map_err(|f| f.error).unwrap();
                        }
                        let t = Instant::now();
                        black_box(engine.step().map_err(|f| f.error).unwrap());
                        timed += t.elapsed();
                    }
                    timed
                })
            });
        }
    }
    g.finish();
}

/// The ceiling the CPU numbers are compared with: a large f32 GEMM through the same backend.
fn cpu_gemm_ceiling(c: &mut Criterion) {
    let (m, k, n) = (512, 1024, 1024);
    let be = CpuBackend::new();
    let fill = |rows: usize, cols: usize| {
        HostTensor::new(
            vec![rows, cols],
            (0..rows * cols)
                .map(|i| ((i * 7919) % 1000) as f32 * 1e-3 - 0.5)
                .collect(),
        )
    };
    let x = be.upload(&fill(m, k)).unwrap();
    let w = be.upload(&fill(n, k)).unwrap();
    let mut g = c.benchmark_group("cpu_ceiling");
    g.throughput(Throughput::Elements((2 * m * k * n) as u64));
    g.bench_function("sgemm_512x1024x1024_flops", |b| {
        b.iter(|| black_box(be.linear(&x, &w).unwrap()))
    });
    g.finish();
}

/// A prefill step whose 1,024-token prefix is onboarded from the host tier, against the same
/// step with the prefix on the device and against the copies alone (the copy thread's own
/// time; the onboards, and the offloads of the blocks the step evicts for them): copies
/// beside the forward make the first close to the larger of the other two, not their sum. Two models: the demo (compute outweighs its small KV) and Qwen3-32B's KV
/// geometry with tiny layers (64 layers of 8 × 128 f32 K and V: the copies outweigh compute).
fn host_tier_step(_: &mut Criterion) {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/qwen3-32b-kv");
    let (bs, prefix, suffix, rounds) = (16usize, 1024usize, 16usize, 5usize);
    use tandem::loader::LoadFormat;
    for (name, model, load_format, token_bytes) in [
        ("demo", None, LoadFormat::Auto, 4 * 2 * 2 * 32 * 4),
        (
            "qwen3-32b-kv",
            Some(dir.clone()),
            LoadFormat::Dummy,
            64 * 2 * 8 * 128 * 4,
        ),
    ] {
        // Room on the device for the prefix and a block more: a prompt that fills the
        // device evicts all of it to the host tier.
        let device_blocks = prefix / bs + 2;
        let spec = ModelSpec {
            model,
            load_format,
            block_size: bs,
            kv_cache_bytes: device_blocks * bs * token_bytes,
            host_kv_cache_bytes: 8 * device_blocks * bs * token_bytes,
            max_model_len: Some(device_blocks * bs),
            ..ModelSpec::default()
        };
        let mut engine = load_cpu(&spec).unwrap().engine;
        let mut id = 0u64;
        let mut run = |engine: &mut EngineCore<_>, prompt: Vec<u32>| {
            let params = SamplingParams {
                ignore_eos: true,
                ..SamplingParams::greedy(1)
            };
            id += 1;
            engine.add_request(Request { id, prompt, params }).unwrap();
            let t = Instant::now();
            while engine.has_work() {
                engine.step().map_err(|f| f.error).unwrap();
            }
            t.elapsed().as_secs_f64()
        };
        let (mut host, mut device, mut copies) = (Vec::new(), Vec::new(), Vec::new());
        let mut copied_blocks = 0;
        for r in 0..rounds as u32 {
            let tokens = |salt: u32, n: usize| -> Vec<u32> {
                (0..n as u32).map(|i| (i * 31 + salt * 977) % 256).collect()
            };
            let base = tokens(2 * r, prefix);
            let with = |s: u32| [base.clone(), tokens(1000 + s, suffix)].concat();
            run(&mut engine, base.clone());
            // A prompt that fills the device pushes the first one's blocks into the host tier.
            run(&mut engine, tokens(2 * r + 1, device_blocks * bs - 1));
            let (before, secs) = (engine.kv_stats(), engine.copy_seconds());
            host.push(run(&mut engine, with(2 * r)));
            let after = engine.kv_stats();
            assert_eq!(
                after.host_hit_tokens - before.host_hit_tokens,
                prefix as u64,
                "the prefix came from the host tier"
            );
            copied_blocks = (after.onboarded_blocks + after.offloaded_blocks)
                - (before.onboarded_blocks + before.offloaded_blocks);
            copies.push(engine.copy_seconds() - secs);
            device.push(run(&mut engine, with(2 * r + 1)));
        }
        let median = |v: &mut Vec<f64>| {
            v.sort_by(f64::total_cmp);
            v[v.len() / 2] * 1e3
        };
        let (h, d, c) = (median(&mut host), median(&mut device), median(&mut copies));
        let bytes = (copied_blocks as usize * bs * token_bytes) as f64;
        println!(
            "host_tier_step/{name}: {prefix}-token prefix ({:.0} MiB) + {suffix} new tokens, \
             medians of {rounds}: onboarding step {h:.2} ms; same step with the prefix on the \
             device {d:.2} ms; the copies alone ({copied_blocks} blocks, {:.0} MiB) {c:.2} ms \
             ({:.2} GB/s); onboarding / (device + copies) = {:.2}, / max = {:.2}",
            (prefix * token_bytes) as f64 / (1 << 20) as f64,
            bytes / (1 << 20) as f64,
            bytes / c * 1e-6,
            h / (d + c),
            h / d.max(c),
        );
    }
}

criterion_group!(
    benches,
    scheduler_step,
    prefix_lookup,
    cpu_decode,
    cpu_gemm_ceiling,
    host_tier_step
);
criterion_main!(benches);
