//! The host KV tier in real processes on loopback: demo-model workers whose device cache
//! holds 39 blocks of 16 tokens and whose host tier holds ~330. A prompt pushed out of the
//! device tier by others is onboarded from the host tier when asked again: same greedy answer,
//! its hit counted in `cached_tokens` and in the worker's per-tier metrics, and its host
//! blocks in the KV router's index from the worker's events (medium "CPU"). Aggregated and
//! disaggregated; and a failed onboard computes the prefix again instead of failing.

mod common;

use std::time::Duration;

use common::http::{completion, wait_health};
use common::procs::{Proc, disagg_frontend, free_port, spawn};
use serde_json::{Value, json};
use tandem::kv::hash::extend_sequence_hashes;
use tandem::router::WorkerPool;

/// Demo-model settings of a small device tier (39 blocks of 16) and a host tier (~330).
const TIERS: &[&str] = &[
    "--max-model-len",
    "512",
    "--block-size",
    "16",
    "--kv-cache-gib",
    "0.0012",
    "--host-kv-cache-gib",
    "0.01",
];

/// A demo worker with a small device tier and a host tier, its metrics on `metrics_port`.
fn worker(metrics_port: u16, extra: &[&str]) -> Proc {
    let port = metrics_port.to_string();
    let mut args = vec!["worker", "--metrics-port", &port];
    args.extend_from_slice(TIERS);
    args.extend_from_slice(extra);
    spawn(&args)
}

/// A 300-token prompt of family `f` (distinct families share nothing).
fn prompt(f: u32) -> Vec<u32> {
    (0..300).map(|i| (i * 31 + f * 577) % 2000 + 1).collect()
}

async fn ask(base: &str, p: &[u32]) -> (String, u64) {
    let body = json!({"model": "tandem-demo", "prompt": p, "max_tokens": 8,
        "temperature": 0, "ignore_eos": true});
    let v: Value = completion(base, &body).await;
    let tokens = v["choices"][0]["text"].as_str().unwrap().to_string();
    let cached = v["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap();
    (tokens, cached)
}

/// The value of series `name` with label text `labels` in a worker's /metrics.
async fn metric(port: u16, name: &str, labels: &str) -> f64 {
    let text = reqwest::get(format!("http://127.0.0.1:{port}/metrics"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .find(|l| l.starts_with(name) && l.contains(labels))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
        .unwrap_or_else(|| panic!("no {name}{{{labels}}} in\n{text}"))
}

/// Asks `a`, then three unrelated prompts that push it out of the device tier, then `a` again:
/// the answers must agree and the second must find (at least) `min_cached` tokens cached.
async fn evict_and_ask_again(base: &str, min_cached: u64) {
    let a = prompt(0);
    let (first, cached) = ask(base, &a).await;
    assert_eq!(cached, 0);
    for f in 1..4 {
        ask(base, &prompt(f)).await;
    }
    let (again, cached) = ask(base, &a).await;
    assert_eq!(again, first, "the onboarded prefix changes the answer");
    assert!(cached >= min_cached, "{cached} tokens cached");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_evicted_prompt_is_onboarded_from_the_host_tier() {
    let mp = free_port();
    let w = worker(mp, &[]);
    let fe = spawn(&["frontend", "--port", "0", "--workers", &w.addr]);
    let base = format!("http://{}", fe.addr);
    wait_health(&base, 200).await;
    // The router follows the worker's events, both tiers.
    let pool = WorkerPool::new(std::slice::from_ref(&w.addr)).unwrap();
    pool.start(true);

    evict_and_ask_again(&base, 256).await;
    assert!(metric(mp, "tandem:prefix_cache_tier_hits_total", "tier=\"host\"").await >= 256.0);
    assert!(
        metric(
            mp,
            "tandem:kv_tier_copy_bytes_total",
            "direction=\"onboard\""
        )
        .await
            > 0.0
    );
    assert!(
        metric(
            mp,
            "tandem:kv_tier_copy_bytes_total",
            "direction=\"offload\""
        )
        .await
            > 0.0
    );
    assert!(metric(mp, "tandem:kv_tier_blocks", "state=\"total\",tier=\"host\"").await > 300.0);
    assert_eq!(
        metric(mp, "tandem:kv_tier_copy_failures_total", "").await,
        0.0
    );

    // The third flush prompt's blocks are on the device; the first's went to the host.
    let mut hashes = Vec::new();
    extend_sequence_hashes(&mut hashes, &prompt(1), 16);
    for _ in 0..500 {
        let o = pool.index.read().unwrap().overlaps(&hashes)[0];
        if o.host > 0 {
            assert_eq!(o.blocks(), hashes.len(), "{o:?}");
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "the router's index never saw host-tier blocks: {:?}",
        pool.index.read().unwrap().overlaps(&hashes)[0]
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefill_worker_onboards_from_its_host_tier() {
    let (pm, dm) = (free_port(), free_port());
    let p = worker(pm, &["--role", "prefill"]);
    let d = spawn(&[
        "worker",
        "--role",
        "decode",
        "--no-prefix-caching",
        "--max-model-len",
        "512",
        "--block-size",
        "16",
        "--kv-cache-gib",
        "0.05",
        "--metrics-port",
        &dm.to_string(),
    ]);
    let fe = disagg_frontend(&[&p.addr], &d.addr, &[]);
    let base = format!("http://{}", fe.addr);
    wait_health(&base, 200).await;
    evict_and_ask_again(&base, 256).await;
    assert!(metric(pm, "tandem:prefix_cache_tier_hits_total", "tier=\"host\"").await >= 256.0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_onboard_computes_the_prefix_again() {
    let mp = free_port();
    let w = worker(mp, &["--debug-fail-onboards", "1"]);
    let fe = spawn(&["frontend", "--port", "0", "--workers", &w.addr]);
    let base = format!("http://{}", fe.addr);
    wait_health(&base, 200).await;
    // The failed copies' blocks are forgotten: the request is admitted again and computes
    // what it cannot find.
    evict_and_ask_again(&base, 0).await;
    assert_eq!(
        metric(mp, "tandem:kv_tier_copy_failures_total", "").await,
        1.0
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_gives_its_prefill_workers_the_host_tier() {
    // Decode workers keep no prefix cache, so serve starts them without the tier.
    let mut args = vec!["serve", "--port", "0", "--prefill", "1", "--decode", "1"];
    args.extend_from_slice(TIERS);
    let s = spawn(&args);
    let base = format!("http://{}", s.addr);
    wait_health(&base, 200).await;
    evict_and_ask_again(&base, 256).await;
}

#[test]
fn a_host_tier_beyond_free_memory_is_refused_with_both_figures() {
    let (ok, _, stderr) = common::procs::run(&[
        "generate",
        "--host-kv-cache-gib",
        "1000000",
        "--prompt",
        "hi",
    ]);
    assert!(!ok);
    assert!(
        stderr.contains("host KV tier of 1000000.00 GiB") && stderr.contains("GiB of memory"),
        "{stderr}"
    );
    let (ok, _, stderr) = common::procs::run(&[
        "generate",
        "--host-kv-cache-gib",
        "1",
        "--no-prefix-caching",
        "--prompt",
        "hi",
    ]);
    assert!(!ok && stderr.contains("needs prefix caching"), "{stderr}");
}
