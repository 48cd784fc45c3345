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
use cuda_common::{gpu, rel};
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
        let out = run_greedy(&mut plain, &[(p as RequestId, prompt.clone(), exp.greedy[p].len())]);
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
