//! Busy is not dead, overload queues before it fails, and SIGTERM drains: real workers and
//! frontends on loopback, slowed through the test hook where a test needs a busy engine.

mod common;

use std::process::Command;
use std::time::{Duration, Instant};

use common::grpc::{client, used_when_idle};
use common::http::wait_health;
use common::procs::{Proc, demo_worker, spawn};
use serde_json::{Value, json};

fn frontend(workers: &[&str], extra: &[&str]) -> (Proc, String) {
    let list = workers.join(",");
    let mut args = vec!["frontend", "--port", "0", "--workers", &list];
    if !extra.contains(&"--router") {
        args.extend(["--router", "round-robin"]);
    }
    args.extend_from_slice(extra);
    let p = spawn(&args);
    let base = format!("http://{}", p.addr);
    (p, base)
}

async fn health(base: &str) -> (u16, Value) {
    let r = reqwest::get(format!("{base}/health")).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

fn body(max_tokens: u32) -> Value {
    json!({"model": "tandem-demo", "prompt": [1, 2, 3, 4], "max_tokens": max_tokens,
        "temperature": 0, "ignore_eos": true})
}

async fn post(base: &str, b: &Value) -> (u16, Option<String>, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}/v1/completions"))
        .json(b)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (status, retry, r.json().await.unwrap_or(Value::Null))
}

fn sigterm(p: &Proc) {
    // SAFETY: kill(2) on a child of this test.
    unsafe {
        libc::kill(p.child.id() as libc::pid_t, libc::SIGTERM);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_engine_stays_in_the_pool_and_a_killed_worker_leaves() {
    // Steps of 3 s: the engine thread is busy for seconds at a time.
    let (stalled, mut quick) = (
        demo_worker(&["--debug-step-delay-ms", "3000"]),
        demo_worker(&[]),
    );
    let (_fe, base) = frontend(&[&stalled.addr, &quick.addr], &[]);
    wait_health(&base, 200).await;
    // Round-robin: the first request goes to the stalled worker, and takes two steps.
    let b = base.clone();
    let slow = tokio::spawn(async move { post(&b, &body(2)).await });
    let started = Instant::now();
    while started.elapsed() < Duration::from_millis(4500) {
        let (status, h) = health(&base).await;
        assert_eq!(status, 200, "a busy worker left the pool: {h}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(slow.await.unwrap().0, 200);
    // A killed worker refuses the next health check's connection: out within a second.
    quick.child.kill().unwrap();
    quick.child.wait().unwrap();
    let killed = Instant::now();
    loop {
        let (_, h) = health(&base).await;
        if h["workers"][1]["healthy"] == false {
            break;
        }
        assert!(
            killed.elapsed() < Duration::from_secs(2),
            "the dead worker is still in the pool"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(health(&base).await.1["workers"][0]["healthy"], true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn overload_queues_within_its_bounds_and_refuses_past_them_with_retry_after() {
    // Two sequences at a time, 30 ms a step: 12 requests of 10 tokens are far beyond capacity.
    let w = demo_worker(&["--max-num-seqs", "2", "--debug-step-delay-ms", "30"]);
    let (_fe, base) = frontend(&[&w.addr], &["--max-queued-requests", "16"]);
    wait_health(&base, 200).await;
    let b10 = body(10);
    let all = futures::future::join_all((0..12).map(|_| post(&base, &b10))).await;
    for (status, _, v) in &all {
        assert_eq!(
            *status, 200,
            "within the queue bound every request completes: {v}"
        );
        assert_eq!(v["usage"]["completion_tokens"], 10);
    }
    // Past the bound: a 503 that names it, with Retry-After; the rest complete.
    let (_fe2, tight) = frontend(&[&w.addr], &["--max-queued-requests", "3"]);
    wait_health(&tight, 200).await;
    let all = futures::future::join_all((0..10).map(|_| post(&tight, &b10))).await;
    let refused: Vec<_> = all.iter().filter(|r| r.0 == 503).collect();
    assert!(!refused.is_empty() && refused.len() < 10, "{all:?}");
    for (status, retry, v) in &all {
        match status {
            200 => assert_eq!(v["usage"]["completion_tokens"], 10),
            503 => {
                assert_eq!(v["error"]["param"], "max_queued_requests", "{v}");
                assert_eq!(retry.as_deref(), Some("1"));
            }
            other => panic!("{other}: {v}"),
        }
    }
    // A request no worker begins within --queue-timeout gets a 503 naming it, and is
    // cancelled on its worker: nothing is left running there.
    let stalled = demo_worker(&["--debug-step-delay-ms", "2000"]);
    let (_fe3, timed) = frontend(&[&stalled.addr], &["--queue-timeout", "0.5"]);
    wait_health(&timed, 200).await;
    let b = timed.clone();
    let blocker = tokio::spawn(async move { post(&b, &body(3)).await });
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, retry, v) = post(&timed, &body(3)).await;
    assert_eq!((status, retry.as_deref()), (503, Some("1")), "{v}");
    assert_eq!(v["error"]["param"], "queue_timeout", "{v}");
    let _ = blocker.await;
    assert_eq!(used_when_idle(&mut client(&stalled.addr).await, 0).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_drains_a_worker_that_exits_and_frees_its_port() {
    // 50 ms steps: a 200-token stream outlives the 1 s shutdown timeout.
    let (w, other) = (
        demo_worker(&["--debug-step-delay-ms", "50", "--shutdown-timeout", "1"]),
        demo_worker(&[]),
    );
    let port = w.addr.rsplit(':').next().unwrap().to_string();
    let (_fe, base) = frontend(&[&w.addr, &other.addr], &["--router", "kv"]);
    wait_health(&base, 200).await;
    // A long stream on the worker that will be stopped (its frontend also follows its events).
    let mut c = client(&w.addr).await;
    let mut stream = c
        .generate(common::grpc::request(
            "long",
            vec![9; 8],
            common::grpc::greedy(200),
        ))
        .await
        .unwrap()
        .into_inner();
    stream.message().await.unwrap().unwrap();
    let mut w = w;
    let t = Instant::now();
    sigterm(&w);
    // While it drains, the frontend routes around it: no request fails.
    for _ in 0..6 {
        let (status, _, v) = post(&base, &body(4)).await;
        assert_eq!(status, 200, "{v}");
    }
    // The stream ends (aborted at the timeout), the process exits 0 within it.
    let mut last = String::new();
    while let Ok(Some(r)) = stream.message().await {
        last = r.finish_reason;
    }
    assert_eq!(last, "abort");
    let status = w.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        t.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t.elapsed()
    );
    // The port is free at once: a new worker takes it and the frontend takes it back.
    let again = spawn(&[
        "worker",
        "--port",
        &port,
        "--max-model-len",
        "512",
        "--kv-cache-gib",
        "0.05",
        "--block-size",
        "16",
    ]);
    assert!(again.addr.ends_with(&port));
    wait_health(&base, 200).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_stops_serve_with_its_workers() {
    let (mut s, base) = common::procs::serve(&["--workers", "2", "--shutdown-timeout", "1"]);
    wait_health(&base, 200).await;
    let h = health(&base).await.1;
    let pids: Vec<String> = Command::new("pgrep")
        .args(["-P", &s.child.id().to_string()])
        .output()
        .map(|o| {
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .map(str::to_string)
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(pids.len(), 2, "{h}");
    let t = Instant::now();
    sigterm(&s);
    let status = s.child.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        t.elapsed() < Duration::from_secs(6),
        "took {:?}",
        t.elapsed()
    );
    // Its workers are gone too.
    for pid in pids {
        let alive = std::path::Path::new(&format!("/proc/{pid}")).exists();
        assert!(!alive, "worker {pid} outlived serve");
    }
}
