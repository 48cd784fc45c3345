//! The disaggregated deployment through the frontend: prefill workers behind the KV router,
//! decode workers pulling the KV, all real processes on loopback.

mod common;

use std::time::Duration;

use common::http::{completion, wait_health, wait_indexed};
use common::procs::{demo_worker, serve, spawn};
use serde_json::{Value, json};

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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefill_failures_fail_over_and_decode_workers_serve_alone() {
    let (mut p1, p2, d) = (
        demo_worker(&["--role", "prefill"]),
        demo_worker(&["--role", "prefill"]),
        demo_worker(&["--role", "decode", "--no-prefix-caching"]),
    );
    let fe = spawn(&[
        "frontend",
        "--port",
        "0",
        "--prefill-workers",
        &format!("{},{}", p1.addr, p2.addr),
        "--decode-workers",
        &d.addr,
    ]);
    let base = format!("http://{}", fe.addr);
    wait_health(&base, 200).await;
    let prompt: Vec<u32> = (0..30).collect();
    let want = tokens(&complete(&base, &prompt).await);
    // A prefill worker dies: requests keep succeeding on the other one.
    p1.child.kill().unwrap();
    p1.child.wait().unwrap();
    for _ in 0..4 {
        assert_same(
            &tokens(&complete(&base, &prompt).await),
            &want,
            "after a prefill worker died",
        );
    }
    // With no prefill worker at all, the decode worker serves whole requests.
    drop(p2);
    wait_health(&base, 503).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_same(
        &tokens(&complete(&base, &prompt).await),
        &want,
        "decode workers alone",
    );
}
