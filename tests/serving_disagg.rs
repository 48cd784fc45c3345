//! The disaggregated deployment through the frontend: prefill workers behind the KV router,
//! decode workers pulling the KV, all real processes on loopback.

mod common;

use std::time::Duration;

use common::grpc::load;
use common::http::{completion, metrics_text, wait_health, wait_indexed};
use common::procs::{demo_worker, disagg_frontend, serve};
use serde_json::{Value, json};
use tandem::wire::proto::LoadResponse;

async fn complete(base: &str, prompt: &[u32]) -> Value {
    let body = json!({"model": "tandem-demo", "prompt": prompt, "max_tokens": 8, "temperature": 0,
        "ignore_eos": true, "logprobs": 1});
    completion(base, &body).await
}

fn tokens(v: &Value) -> (String, Vec<f64>) {
    let c = &v["choices"][0];
    let lps = c["logprobs"]["token_logprobs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect();
    (c["text"].as_str().unwrap().to_string(), lps)
}

/// Same text; logprobs equal up to f32 summation order (a cached prefix changes the shapes).
fn assert_same(a: &(String, Vec<f64>), b: &(String, Vec<f64>), what: &str) {
    assert_eq!(a.0, b.0, "{what}: text");
    assert_eq!(a.1.len(), b.1.len(), "{what}: token count");
    for (x, y) in a.1.iter().zip(&b.1) {
        assert!((x - y).abs() < 1e-4, "{what}: logprob {x} vs {y}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disaggregated_serving_equals_aggregated() {
    let (_agg, agg) = serve(&["--workers", "1"]);
    let (_dis, dis) = serve(&["--prefill", "2", "--decode", "1", "--router", "kv"]);
    wait_health(&agg, 200).await;
    wait_health(&dis, 200).await;
    let base: Vec<u32> = (0..80).map(|i| (i * 7 + 3) % 256).collect();
    for i in 0..4usize {
        let mut p = base[..48 + 8 * i].to_vec();
        p.extend([250, 251]);
        let (a, d) = (complete(&agg, &p).await, complete(&dis, &p).await);
        assert_same(&tokens(&a), &tokens(&d), &format!("prompt {i}"));
    }
    // The same prompt again hits the prefill worker's prefix cache (routed there by KV), once
    // the router has indexed what the prefill workers hold.
    wait_indexed(&dis, 4).await;
    let again = complete(&dis, &[base[..72].to_vec(), vec![250, 251]].concat()).await;
    assert_eq!(
        again["usage"]["prompt_tokens_details"]["cached_tokens"], 64,
        "{again}"
    );
    let health: Value = reqwest::get(format!("{dis}/health"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let roles: Vec<&str> = health["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["role"].as_str().unwrap())
        .collect();
    assert_eq!(roles, vec!["prefill", "prefill", "decode"]);
}

/// A failover counter of the frontend's /metrics (0 while it has not happened).
async fn failovers(base: &str, path: &str) -> u64 {
    let want = format!("tandem:failovers_total{{path=\"{path}\"}} ");
    metrics_text(base)
        .await
        .lines()
        .find_map(|l| l.strip_prefix(&want)?.parse().ok())
        .unwrap_or(0)
}

/// Waits until /health says which workers are healthy.
async fn wait_healthy(base: &str, want: &[bool]) {
    for _ in 0..500 {
        let h: Value = reqwest::get(format!("{base}/health"))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let got: Vec<bool> = h["workers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["healthy"].as_bool().unwrap())
            .collect();
        if got == want {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{base}/health never showed {want:?}");
}

/// A decode worker's and its prefill workers' transfer counters once the releases landed.
async fn settle(prefill: &[&str], decode: &str, pulls: u64) -> (LoadResponse, Vec<LoadResponse>) {
    for _ in 0..200 {
        let d = load(decode).await;
        let mut p = Vec::new();
        for a in prefill {
            p.push(load(a).await);
        }
        if d.kv_pulls == pulls && p.iter().map(|l| l.kv_released).sum::<u64>() == pulls {
            return (d, p);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("{pulls} pulls and releases never happened");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefill_call_to_a_dead_worker_is_retried_on_another() {
    let (p0, mut p1, d) = (
        demo_worker(&["--role", "prefill"]),
        demo_worker(&["--role", "prefill"]),
        demo_worker(&["--role", "decode", "--no-prefix-caching"]),
    );
    // Round-robin: request k goes to prefill worker k mod 2. Health is checked once a minute,
    // so the frontend learns of the kill only from the failed call.
    let fe = disagg_frontend(
        &[&p0.addr, &p1.addr],
        &d.addr,
        &["--router", "round-robin", "--health-check-interval", "60"],
    );
    let base = format!("http://{}", fe.addr);
    wait_health(&base, 200).await;
    let prompt: Vec<u32> = (0..30).collect();
    let want = tokens(&complete(&base, &prompt).await);
    p1.child.kill().unwrap();
    p1.child.wait().unwrap();
    assert_same(
        &tokens(&complete(&base, &prompt).await),
        &want,
        "retried on the live prefill worker",
    );
    assert_eq!(failovers(&base, "retry").await, 1);
    assert_eq!(failovers(&base, "decode_only").await, 0);
    // Both requests went through a KV pull from p0, which freed its blocks after each.
    let (dl, pl) = settle(&[&p0.addr], &d.addr, 2).await;
    assert!(
        dl.kv_pulled_bytes > 0 && dl.kv_pulled_bytes == pl[0].kv_served_bytes,
        "{dl:?} {pl:?}"
    );
    assert_eq!(pl[0].used_blocks, 0);
    assert_eq!(
        dl.generated_tokens,
        2 * 7,
        "the decode worker made all but the first tokens"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_prefill_workers_leave_the_pool_then_decode_workers_serve_alone() {
    let (mut p0, mut p1, d) = (
        demo_worker(&["--role", "prefill"]),
        demo_worker(&["--role", "prefill"]),
        demo_worker(&["--role", "decode", "--no-prefix-caching"]),
    );
    let fe = disagg_frontend(&[&p0.addr, &p1.addr], &d.addr, &[]);
    let base = format!("http://{}", fe.addr);
    wait_health(&base, 200).await;
    let prompt: Vec<u32> = (0..30).collect();
    let want = tokens(&complete(&base, &prompt).await);
    // The health checks take a killed worker out before any request is sent to it.
    p1.child.kill().unwrap();
    p1.child.wait().unwrap();
    wait_healthy(&base, &[true, false, true]).await;
    for _ in 0..4 {
        assert_same(
            &tokens(&complete(&base, &prompt).await),
            &want,
            "after a prefill worker died",
        );
    }
    assert_eq!(
        failovers(&base, "retry").await,
        0,
        "no request met the dead worker"
    );
    let (_, pl) = settle(&[&p0.addr], &d.addr, 5).await;
    assert!(pl[0].kv_served_bytes > 0);
    // With no prefill worker at all, the decode worker serves whole requests.
    p0.child.kill().unwrap();
    p0.child.wait().unwrap();
    wait_healthy(&base, &[false, false, true]).await;
    let before = load(&d.addr).await;
    assert_same(
        &tokens(&complete(&base, &prompt).await),
        &want,
        "decode workers alone",
    );
    assert_eq!(failovers(&base, "decode_only").await, 1);
    let after = load(&d.addr).await;
    assert_eq!(
        after.kv_pulls, before.kv_pulls,
        "no pull: the decode worker prefilled"
    );
    assert_eq!(after.generated_tokens - before.generated_tokens, 8);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_decode_worker_runs_no_more_than_max_num_seqs_pulled_requests() {
    let (p, d) = (
        demo_worker(&["--role", "prefill"]),
        demo_worker(&[
            "--role",
            "decode",
            "--no-prefix-caching",
            "--max-num-seqs",
            "2",
            "--debug-step-delay-ms",
            "20",
        ]),
    );
    let fe = disagg_frontend(&[&p.addr], &d.addr, &[]);
    let base = format!("http://{}", fe.addr);
    wait_health(&base, 200).await;
    let prompts: Vec<Vec<u32>> = (0..6u32)
        .map(|i| (0..30).map(|t| t * 3 + i).collect())
        .collect();
    let want: Vec<_> = {
        let mut v = Vec::new();
        for pr in &prompts {
            v.push(tokens(&complete(&base, pr).await));
        }
        v
    };
    let (watch, stop) = (
        d.addr.clone(),
        std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false)),
    );
    let stop2 = stop.clone();
    let most = tokio::spawn(async move {
        let mut most = 0;
        while !stop2.load(std::sync::atomic::Ordering::Relaxed) {
            most = most.max(load(&watch).await.running);
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        most
    });
    let got = futures::future::join_all(prompts.iter().map(|pr| complete(&base, pr))).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for (i, g) in got.iter().enumerate() {
        assert_same(&tokens(g), &want[i], &format!("request {i}"));
    }
    let most = most.await.unwrap();
    assert!(
        (1..=2).contains(&most),
        "the decode worker ran {most} at once"
    );
    assert_eq!(load(&d.addr).await.used_blocks, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefill_worker_lost_before_the_pull_is_replaced_by_another_prefill() {
    // The decode worker's steps take 400 ms, so a pull waits behind a step: time enough to
    // kill the prefill worker that holds the prompt's KV.
    let (mut p0, p1, d) = (
        demo_worker(&["--role", "prefill"]),
        demo_worker(&["--role", "prefill"]),
        demo_worker(&[
            "--role",
            "decode",
            "--no-prefix-caching",
            "--debug-step-delay-ms",
            "400",
        ]),
    );
    let fe = disagg_frontend(
        &[&p0.addr, &p1.addr],
        &d.addr,
        &["--router", "round-robin", "--health-check-interval", "60"],
    );
    let base = format!("http://{}", fe.addr);
    wait_health(&base, 200).await;
    let prompt: Vec<u32> = (0..30).map(|t| t * 5 + 1).collect();
    // Round-robin: request 0 (prefill worker 0) gives the expected tokens, request 1
    // (worker 1) keeps the decode worker stepping, request 2 goes to prefill worker 0.
    let want = tokens(&complete(&base, &prompt).await);
    let b = base.clone();
    let long = tokio::spawn(async move {
        let body = json!({"model": "tandem-demo", "prompt": [3, 4, 5], "max_tokens": 6,
            "temperature": 0, "ignore_eos": true});
        completion(&b, &body).await
    });
    tokio::time::sleep(Duration::from_millis(150)).await;
    let b = base.clone();
    let p = prompt.clone();
    let second = tokio::spawn(async move { complete(&b, &p).await });
    // Once prefill worker 0 holds the prompt (its KV pull waits behind the decode step), it dies.
    for _ in 0..200 {
        if load(&p0.addr).await.used_blocks > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    p0.child.kill().unwrap();
    p0.child.wait().unwrap();
    assert_same(
        &tokens(&second.await.unwrap()),
        &want,
        "decoded from the second prefill",
    );
    long.await.unwrap();
    assert_eq!(failovers(&base, "retry").await, 1);
    // Pulls: request 0 (from worker 0), request 1 and the second prefill (from worker 1),
    // which freed both its holds.
    for _ in 0..200 {
        let (dl, pl) = (load(&d.addr).await, load(&p1.addr).await);
        if dl.kv_pulls == 3 && pl.kv_released == 2 && pl.used_blocks == 0 {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the pulls and releases did not add up");
}
