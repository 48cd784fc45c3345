//! The whole model on the GPU against the CPU backend and transformers on the tiny-qwen3
//! fixture: greedy tokens equal, logits within bf16 tolerance. Skips without a GPU (see
//! cuda_common::gpu).
#![cfg(feature = "cuda")]

mod common;
mod cuda_common;

use std::sync::Arc;

use common::{Setup, expected, fixture, fixture_engine, run_greedy};
use cuda_common::{gpu, rel};
use tandem::backend::cuda::CudaBackend;
use tandem::config::{EngineConfig, ModelConfig};
use tandem::engine::{EngineCore, ExecutorConfig, ModelExecutor};
use tandem::model::WeightSource;

fn gpu_engine(
    name: &str,
    s: &Setup,
    backend: CudaBackend,
) -> EngineCore<ModelExecutor<CudaBackend>> {
    let dir = fixture(name);
    let cfg = ModelConfig::from_dir(&dir).unwrap();
    let slot = std::sync::Mutex::new(Some(backend));
    let exec = ModelExecutor::load(
        &cfg,
        Arc::new(WeightSource::open(&dir).unwrap()),
        ExecutorConfig {
            tp_size: 1,
            num_blocks: s.num_blocks,
            block_size: s.block_size,
            max_model_len: s.max_model_len,
            host_blocks: s.host_blocks,
            progress: false,
        },
        move |_| slot.lock().unwrap().take().expect("one rank"),
    );
    let exec = match exec {
        Ok(e) => e,
        Err(e) => panic!("loading on the GPU: {e}"),
    };
    let mut ecfg = EngineConfig::for_model(&cfg, s.num_blocks);
    ecfg.block_size = s.block_size;
    ecfg.max_model_len = s.max_model_len;
    ecfg.max_num_batched_tokens = s.budget;
    ecfg.enable_prefix_caching = s.prefix_caching;
    ecfg.host_kv_blocks = s.host_blocks;
    EngineCore::new(ecfg, exec, cfg.eos_token_ids.clone()).unwrap()
}

#[test]
fn tiny_qwen3_on_gpu_matches_cpu_and_transformers() {
    let test = "tiny_qwen3_on_gpu_matches_cpu_and_transformers";
    if gpu(test).is_none() {
        return;
    }
    for name in ["tiny-qwen3", "tiny-qwen3-yarn"] {
        let exp = expected(name);
        let setup = Setup::default();
        let reqs: Vec<_> = exp
            .prompts
            .iter()
            .enumerate()
            .map(|(i, p)| (i as u64, p.clone(), exp.greedy[i].len()))
            .collect();
        let mut cpu = fixture_engine(name, setup);
        let cpu_out = run_greedy(&mut cpu, &reqs);
        // Eager, then with decode graphs (captured for 1, 2, 4, ... rows, padded replays).
        let graphs = gpu(test).expect("the GPU found above");
        graphs.enable_decode_graphs(8, setup.max_model_len, setup.block_size);
        let mut gg = gpu_engine(name, &setup, graphs);
        let graph_out = run_greedy(&mut gg, &reqs);
        assert!(
            !gg.executor().backend().captured_graphs().is_empty(),
            "{name}: no decode graph was captured"
        );
        let backend = gpu(test).expect("the GPU found above");
        let mut g = gpu_engine(name, &setup, backend);
        let gpu_out = run_greedy(&mut g, &reqs);
        for (id, _, _) in &reqs {
            assert_eq!(
                gpu_out[id], cpu_out[id],
                "{name}: greedy tokens of prompt {id}"
            );
            assert_eq!(
                gpu_out[id], exp.greedy[*id as usize],
                "{name}: vs transformers"
            );
            assert_eq!(
                graph_out[id], gpu_out[id],
                "{name}: graphs vs eager, prompt {id}"
            );
        }
        // Prefill logits of each prompt, GPU vs transformers.
        for (i, p) in exp.prompts.iter().enumerate() {
            let input = tandem::model::ModelInput {
                tokens: p.clone(),
                positions: (0..p.len() as u32).collect(),
                slots: (0..p.len() as u32).collect(),
                attn: tandem::backend::AttentionMeta {
                    block_size: setup.block_size,
                    seqs: vec![tandem::backend::AttnSeq {
                        query_start: 0,
                        query_len: p.len(),
                        context_len: p.len(),
                        block_table: (0..p.len().div_ceil(setup.block_size) as u32).collect(),
                    }],
                },
                logit_rows: vec![p.len() - 1],
            };
            let logits = g.executor_mut().forward_logits(&input, &[]).unwrap();
            let e = rel(&logits.data, &exp.logits[i][0]);
            assert!(e < 2e-2, "{name}: prompt {i} logits relative error {e}");
        }
    }
}

#[test]
fn host_tier_onboards_on_gpu_give_transformers_tokens() {
    // 48 device blocks of 8 tokens: unrelated prompts between two rounds push the first
    // round's blocks into a pinned host tier of 96 slots; the second round onboards them on
    // the copy stream. Decode graphs on: their steps offload too.
    let test = "host_tier_onboards_on_gpu_give_transformers_tokens";
    let Some(backend) = gpu(test) else {
        return;
    };
    let name = "tiny-qwen3";
    let exp = expected(name);
    let setup = Setup {
        block_size: 8,
        num_blocks: 48,
        max_model_len: 256,
        host_blocks: 96,
        ..Setup::default()
    };
    backend.enable_decode_graphs(8, setup.max_model_len, setup.block_size);
    let mut g = gpu_engine(name, &setup, backend);
    for round in 0..2u64 {
        for (p, prompt) in exp.prompts.iter().enumerate() {
            let id = round * 100 + p as u64;
            let out = run_greedy(&mut g, &[(id, prompt.clone(), exp.greedy[p].len())]);
            assert_eq!(out[&id], exp.greedy[p], "prompt {p} round {round}");
        }
        if round == 0 {
            for f in 0..3u32 {
                let other: Vec<u32> = (0..128).map(|i| (i * 7 + f * 13) % 97 + 3).collect();
                run_greedy(&mut g, &[(900 + f as u64, other, 1)]);
            }
        }
    }
    let stats = g.kv_stats();
    assert!(
        stats.host_hit_tokens >= 8 * 12 && stats.onboarded_blocks >= 12,
        "the second round should hit the host tier: {stats:?}"
    );
    assert_eq!(g.num_copy_failures(), 0);
}
