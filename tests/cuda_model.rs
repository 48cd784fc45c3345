//! The whole model on the GPU: the tiny fixtures (random Qwen3s) and the trained demo model,
//! eager and with decode graphs, against transformers' logits and tokens within what bf16
//! storage explains (common/bf16.rs), and decode graphs against eager steps exactly.
//!
//! Skips without a GPU (see cuda_common::gpu).
#![cfg(feature = "cuda")]

mod common;
mod cuda_common;

use std::collections::HashMap;

use common::bf16::{BF16_LOGIT_TOL, check_tokens};
use common::{DEMO_FIXTURE, Setup, engine_on, expected, run_greedy, step_logits};
use cuda_common::{gpu, gpus, rel};
use tandem::engine::RequestId;

#[test]
fn tiny_qwen3_on_gpu_matches_cpu_and_transformers() {
    let test = "tiny_qwen3_on_gpu_matches_cpu_and_transformers";
    if gpu(test).is_none() {
        return;
    }
    for name in ["tiny-qwen3", "tiny-qwen3-yarn", DEMO_FIXTURE] {
        let exp = expected(name);
        let setup = Setup::default();
        let reqs: Vec<_> = exp
            .prompts
            .iter()
            .enumerate()
            .map(|(i, p)| (i as RequestId, p.clone(), exp.greedy[i].len()))
            .collect();
        // Eager, then with decode graphs (captured for 1, 2, 4, ... rows, padded replays).
        let graphs = gpu(test).expect("the GPU found above");
        graphs.enable_decode_graphs(8, setup.max_model_len, setup.block_size);
        let mut gg = engine_on(name, &setup, graphs);
        let graph_out = run_greedy(&mut gg, &reqs);
        assert!(
            !gg.executor().backend().captured_graphs().is_empty(),
            "{name}: no decode graph was captured"
        );
        let mut g = engine_on(name, &setup, gpu(test).expect("the GPU found above"));
        let gpu_out = run_greedy(&mut g, &reqs);
        let mut compared = 0;
        let mut worst = 0f32;
        for (id, prompt, _) in &reqs {
            let i = *id as usize;
            compared += check_tokens(
                &format!("{name} prompt {id} vs transformers"),
                &gpu_out[id],
                &exp.greedy[i],
                &exp.logits[i],
                BF16_LOGIT_TOL,
            );
            assert_eq!(
                graph_out[id], gpu_out[id],
                "{name}: graphs vs eager, prompt {id}"
            );
            // Every step's logits, along transformers' tokens.
            for (s, l) in step_logits(&mut g, prompt, &exp.greedy[i], setup.block_size)
                .iter()
                .enumerate()
            {
                let e = rel(l, &exp.logits[i][s]);
                assert!(
                    e < BF16_LOGIT_TOL,
                    "{name}: prompt {i} step {s}: logit error {e} vs transformers"
                );
                worst = worst.max(e);
            }
        }
        // The comparison with transformers must not stop at once everywhere.
        let total: usize = exp.greedy.iter().map(Vec::len).sum();
        eprintln!(
            "{name}: logit error vs transformers {worst:.4}; {compared} of {total} tokens \
             compared with transformers"
        );
        assert!(
            compared * 2 >= total,
            "{name}: only {compared} of {total} tokens compared with transformers"
        );
    }
}

#[test]
fn host_tier_onboards_on_gpu_give_transformers_tokens() {
    // 48 device blocks of 8 tokens: unrelated prompts between two rounds push the first
    // round's blocks into a pinned host tier of 96 slots; the second round onboards them on
    // the copy stream. Decode graphs on: their steps offload too. Every round must give the
    // tokens of a GPU engine that never offloads.
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
    let plain_setup = Setup {
        num_blocks: 256,
        host_blocks: 0,
        ..setup
    };
    let plain_backend = gpu(test).expect("the GPU found above");
    plain_backend.enable_decode_graphs(8, setup.max_model_len, setup.block_size);
    let mut plain = engine_on(name, &plain_setup, plain_backend);
    let mut want: HashMap<usize, Vec<u32>> = HashMap::new();
    for (p, prompt) in exp.prompts.iter().enumerate() {
        let out = run_greedy(
            &mut plain,
            &[(p as RequestId, prompt.clone(), exp.greedy[p].len())],
        );
        check_tokens(
            &format!("prompt {p} vs transformers"),
            &out[&(p as RequestId)],
            &exp.greedy[p],
            &exp.logits[p],
            BF16_LOGIT_TOL,
        );
        want.insert(p, out[&(p as RequestId)].clone());
    }
    backend.enable_decode_graphs(8, setup.max_model_len, setup.block_size);
    let mut g = engine_on(name, &setup, backend);
    for round in 0..2u64 {
        for (p, prompt) in exp.prompts.iter().enumerate() {
            let id = round * 100 + p as u64;
            let out = run_greedy(&mut g, &[(id, prompt.clone(), exp.greedy[p].len())]);
            assert_eq!(out[&id], want[&p], "prompt {p} round {round}");
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

#[test]
fn tensor_parallel_2_over_nccl_matches_transformers() {
    // Two ranks on two GPUs (emulated devices in CI): the vocabulary-parallel embedding and
    // logits (259 = 130 + 129 columns: unequal shards), row-parallel all-reduces, NCCL
    // inside captured decode graphs.
    let test = "tensor_parallel_2_over_nccl_matches_transformers";
    for name in ["tiny-qwen3", DEMO_FIXTURE] {
        let Some(ranks) = gpus(test, 2) else {
            return;
        };
        let exp = expected(name);
        let setup = Setup {
            tp: 2,
            ..Setup::default()
        };
        for b in &ranks {
            b.enable_decode_graphs(8, setup.max_model_len, setup.block_size);
        }
        let mut g = tp_engine(name, &setup, ranks);
        let reqs: Vec<_> = exp
            .prompts
            .iter()
            .enumerate()
            .map(|(i, p)| (i as RequestId, p.clone(), exp.greedy[i].len()))
            .collect();
        let out = run_greedy(&mut g, &reqs);
        let mut compared = 0;
        for (id, _, _) in &reqs {
            let i = *id as usize;
            compared += check_tokens(
                &format!("{name} TP2 prompt {id}"),
                &out[id],
                &exp.greedy[i],
                &exp.logits[i],
                BF16_LOGIT_TOL,
            );
        }
        assert!(
            !g.executor().backend().captured_graphs().is_empty(),
            "{name}: TP2 captured no decode graph"
        );
        for (i, prompt) in exp.prompts.iter().enumerate() {
            for (s, l) in step_logits(&mut g, prompt, &exp.greedy[i], setup.block_size)
                .iter()
                .enumerate()
            {
                let e = rel(l, &exp.logits[i][s]);
                assert!(
                    e < BF16_LOGIT_TOL,
                    "{name} TP2: prompt {i} step {s}: error {e}"
                );
            }
        }
        let total: usize = exp.greedy.iter().map(Vec::len).sum();
        assert!(
            compared * 2 >= total,
            "{name} TP2: {compared} of {total} tokens compared"
        );
    }
}

/// An engine with one rank per backend of `ranks`.
fn tp_engine(
    name: &str,
    s: &Setup,
    ranks: Vec<tandem::backend::cuda::CudaBackend>,
) -> tandem::engine::EngineCore<tandem::engine::ModelExecutor<tandem::backend::cuda::CudaBackend>> {
    let (cfg, src) = common::model_source(name);
    let tp = ranks.len();
    let slots = std::sync::Mutex::new(ranks.into_iter().map(Some).collect::<Vec<_>>());
    let exec = tandem::engine::ModelExecutor::load(
        &cfg,
        std::sync::Arc::new(src),
        tandem::engine::ExecutorConfig {
            tp_size: tp,
            num_blocks: s.num_blocks,
            block_size: s.block_size,
            max_model_len: s.max_model_len,
            host_blocks: s.host_blocks,
            progress: false,
        },
        move |rank| slots.lock().unwrap()[rank].take().expect("each rank once"),
    )
    .unwrap_or_else(|e| panic!("loading {name} at TP{tp}: {e}"));
    let mut ecfg = tandem::config::EngineConfig::for_model(&cfg, s.num_blocks);
    ecfg.block_size = s.block_size;
    ecfg.max_model_len = s.max_model_len;
    ecfg.max_num_batched_tokens = s.budget;
    ecfg.enable_prefix_caching = s.prefix_caching;
    tandem::engine::EngineCore::new(ecfg, exec, cfg.eos_token_ids.clone()).unwrap()
}
