//! Workers and servers on a GPU (the emulated device in CI), as real processes: aggregated
//! and disaggregated generation (prefill on one worker, decode on another pulling the KV
//! over the KV socket from and into device memory) give the same greedy tokens exactly, and
//! transformers' to bf16 tolerance; the KV cache is sized from --gpu-memory-utilization
//! against the device's memory; `tandem serve` and `tandem generate` answer alike.
//!
//! Skips without a GPU (see cuda_common::gpu). Each worker process has the GPU to itself
//! (on the emulator: its own device of TANDEM_EMU_MEMORY_GIB).
#![cfg(feature = "cuda")]

mod common;
mod cuda_common;

use common::bf16::{BF16_LOGIT_TOL, check_tokens};
use common::grpc::{client, greedy, load, request, used_when_idle};
use common::http::{completion, wait_health};
use common::procs::{Proc, run, spawn_with_env};
use common::{expected, fixture};
use cuda_common::gpu;
use serde_json::json;
use tandem::wire::proto::worker_client::WorkerClient;
use tandem::wire::proto::*;
use tonic::transport::Channel;

/// Each worker's device: 1 GiB (the emulator's; a GPU ignores it).
const DEVICE: &[(&str, &str)] = &[("TANDEM_EMU_MEMORY_GIB", "1")];

/// A CUDA worker on a fixture model using `util` of its GPU.
fn cuda_worker(model: &str, util: &str, extra: &[&str]) -> Proc {
    let dir = fixture(model).display().to_string();
    let mut args = vec![
        "worker",
        "--device",
        "cuda",
        "--model",
        dir.as_str(),
        "--block-size",
        "16",
        "--max-model-len",
        "256",
        "--gpu-memory-utilization",
        util,
    ];
    args.extend_from_slice(extra);
    spawn_with_env(&args, DEVICE)
}

async fn generate(c: &mut WorkerClient<Channel>, req: GenerateRequest) -> Vec<u32> {
    let mut s = c.generate(req).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(r) = s.message().await.unwrap() {
        out.extend(r.token_id);
    }
    out
}

async fn disaggregated(
    p: &mut WorkerClient<Channel>,
    d: &mut WorkerClient<Channel>,
    req: GenerateRequest,
) -> Vec<u32> {
    let pre = p.prefill(req.clone()).await.unwrap().into_inner();
    let decode = DecodeRequest {
        request: Some(req),
        first_token: pre.first_token,
        source_addr: pre.transfer_addr.clone(),
        source_engine_id: pre.engine_id.clone(),
        source_block_ids: pre.block_ids.clone(),
    };
    let mut s = d.decode(decode).await.unwrap().into_inner();
    let mut out = vec![pre.first_token];
    while let Some(r) = s.message().await.unwrap() {
        out.extend(r.token_id);
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disaggregated_gpu_workers_give_the_aggregated_tokens() {
    let test = "disaggregated_gpu_workers_give_the_aggregated_tokens";
    if gpu(test).is_none() {
        return;
    }
    let name = "tiny-qwen3";
    let exp = expected(name);
    let (a, p, d) = (
        cuda_worker(name, "0.5", &[]),
        cuda_worker(name, "0.5", &["--role", "prefill"]),
        cuda_worker(name, "0.5", &["--role", "decode", "--no-prefix-caching"]),
    );
    let (mut ac, mut pc, mut dc) = (
        client(&a.addr).await,
        client(&p.addr).await,
        client(&d.addr).await,
    );
    for (i, prompt) in exp.prompts.iter().enumerate() {
        let n = exp.greedy[i].len() as u32;
        let agg = generate(
            &mut ac,
            request(&format!("a{i}"), prompt.clone(), greedy(n)),
        )
        .await;
        let dis = disaggregated(
            &mut pc,
            &mut dc,
            request(&format!("d{i}"), prompt.clone(), greedy(n)),
        )
        .await;
        assert_eq!(dis, agg, "prompt {i}: disaggregated vs aggregated");
        check_tokens(
            &format!("prompt {i}"),
            &agg,
            &exp.greedy[i],
            &exp.logits[i],
            BF16_LOGIT_TOL,
        );
    }
    // Every held prompt was released after its pull; the decode worker pulled device KV.
    assert_eq!(used_when_idle(&mut pc, 0).await, 0);
    let l = load(&d.addr).await;
    assert_eq!(l.kv_pulls, exp.prompts.len() as u64);
    assert!(l.kv_pulled_bytes > 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_kv_cache_is_sized_from_gpu_memory_utilization() {
    let test = "the_kv_cache_is_sized_from_gpu_memory_utilization";
    if gpu(test).is_none() {
        return;
    }
    let name = "tiny-qwen3";
    let blocks = |w: &Proc| {
        let addr = w.addr.clone();
        async move { load(&addr).await.total_blocks }
    };
    let (low, high) = (cuda_worker(name, "0.3", &[]), cuda_worker(name, "0.6", &[]));
    let (bl, bh) = (blocks(&low).await, blocks(&high).await);
    // tiny-qwen3: 3 layers x K and V x 16 tokens x 2 KV heads x 24 dims x 2 bytes per block.
    let block_bytes = 3 * 2 * 16 * 2 * 24 * 2;
    let want = (0.3 * (1u64 << 30) as f64 / block_bytes as f64) as u64;
    assert!(
        (bh - bl).abs_diff(want) <= 1,
        "0.3 GiB more gives {} blocks more, not {want}",
        bh - bl
    );
    // Nothing left for a KV cache: refused at start-up, saying why.
    let dir = fixture(name).display().to_string();
    let (ok, _, err) = run(&[
        "generate",
        "--device",
        "cuda",
        "--model",
        &dir,
        "--gpu-memory-utilization",
        "0.001",
        "--prompt-ids",
        "1,2,3",
    ]);
    assert!(!ok && err.contains("gpu-memory-utilization"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_and_generate_on_the_gpu_answer_alike() {
    let test = "serve_and_generate_on_the_gpu_answer_alike";
    if gpu(test).is_none() {
        return;
    }
    let cuda = [
        "--device",
        "cuda",
        "--gpu-memory-utilization",
        "0.5",
        "--max-model-len",
        "512",
    ];
    let start = |layout: &[&str]| {
        let mut args = vec!["serve", "--port", "0"];
        args.extend_from_slice(layout);
        args.extend_from_slice(&cuda);
        let p = spawn_with_env(&args, DEVICE);
        let base = format!("http://{}", p.addr);
        (p, base)
    };
    let (_agg, agg) = start(&["--workers", "1"]);
    let (_dis, dis) = start(&["--prefill", "1", "--decode", "1"]);
    wait_health(&agg, 200).await;
    wait_health(&dis, 200).await;
    let prompt = "And the LORD said unto Moses,";
    let body = json!({"model": "tandem-demo", "prompt": prompt, "max_tokens": 12, "temperature": 0,
        "ignore_eos": true});
    let text = |v: serde_json::Value| v["choices"][0]["text"].as_str().unwrap().to_string();
    let (a, d) = (
        text(completion(&agg, &body).await),
        text(completion(&dis, &body).await),
    );
    assert_eq!(a, d, "aggregated vs disaggregated");
    let out = tokio::task::spawn_blocking(move || {
        std::process::Command::new(env!("CARGO_BIN_EXE_tandem"))
            .args([
                "generate",
                "--prompt",
                prompt,
                "--max-tokens",
                "12",
                "--temperature",
                "0",
                "--ignore-eos",
            ])
            .args(cuda)
            .envs(DEVICE.iter().copied())
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim_end(),
        a.trim_end(),
        "tandem generate"
    );
}

#[test]
fn timing_tools_refuse_the_emulated_device() {
    let test = "timing_tools_refuse_the_emulated_device";
    if gpu(test).is_none() {
        return;
    }
    if !tandem::backend::cuda::is_emulated(0).unwrap() {
        // A real GPU: scripts/gpu-suite.sh runs bench-kernels and profile there.
        return;
    }
    for args in [
        &["bench-kernels", "--tp", "1"][..],
        &["profile", "--device", "cuda", "--points", "2"][..],
    ] {
        let (ok, _, err) = run(args);
        assert!(
            !ok && err.contains("emulated") && err.contains("meaningless"),
            "{args:?}: {err}"
        );
    }
}
