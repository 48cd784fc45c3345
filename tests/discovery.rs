//! Worker discovery through DNS, as in a Kubernetes deployment (a headless Service): real
//! worker and frontend processes on loopback, the frontend given `dns:localhost:PORT` entries
//! before any worker runs; also the workers' standard gRPC health service that the probes call.

mod common;

use common::http::{completion, wait_health};
use common::procs::{Proc, demo_worker, free_port, spawn};
use serde_json::{Value, json};
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

async fn health(base: &str) -> (u16, Value) {
    let r = reqwest::get(format!("{base}/health")).await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap())
}

async fn complete(base: &str) -> Value {
    let body = json!({"model": "tandem-demo", "prompt": "Hello there", "max_tokens": 4,
        "temperature": 0, "ignore_eos": true});
    completion(base, &body).await
}

fn worker_on(port: u16, extra: &[&str]) -> Proc {
    let port = port.to_string();
    let mut args = vec!["--port", port.as_str()];
    args.extend_from_slice(extra);
    demo_worker(&args)
}

#[tokio::test]
async fn the_frontend_finds_workers_by_name_and_keeps_their_slot() {
    let port = free_port();
    // The second name never resolves: a failing lookup must not hold up the others.
    let workers = format!("dns:localhost:{port},dns:tandem-no-such-worker.invalid:50051");
    let fe = spawn(&[
        "frontend",
        "--port",
        "0",
        "--router",
        "kv",
        "--workers",
        &workers,
    ]);
    let base = format!("http://{}", fe.addr);
    let (status, body) = health(&base).await;
    assert_eq!(status, 503, "no worker yet: {body}");

    // A worker comes up at the name's address: its health check puts it in the pool. (Adding
    // and retiring addresses as a name's answer changes is src/router/discovery.rs's tests.)
    let worker = worker_on(port, &[]);
    wait_health(&base, 200).await;
    let text = complete(&base).await["choices"][0]["text"].clone();
    assert!(text.is_string());

    // The standard health service answers what Kubernetes' grpc probe asks.
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{}", worker.addr))
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut hc = HealthClient::new(channel);
    let s = hc
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(s.status, ServingStatus::Serving as i32);

    // The worker dies: out of the pool. Restarted at the same address: back in its slot.
    drop(worker);
    wait_health(&base, 503).await;
    let _worker = worker_on(port, &[]);
    wait_health(&base, 200).await;
    let (_, body) = health(&base).await;
    let listed = body["workers"].as_array().unwrap();
    assert_eq!(listed.len(), 1, "one slot for one address: {body}");
    assert_eq!(listed[0]["addr"], format!("127.0.0.1:{port}"));
    assert_eq!(complete(&base).await["choices"][0]["text"], text);
}

#[tokio::test]
async fn disaggregated_pools_are_discovered_too() {
    let (p, d) = (free_port(), free_port());
    let fe = spawn(&[
        "frontend",
        "--port",
        "0",
        "--prefill-workers",
        &format!("dns:localhost:{p}"),
        "--decode-workers",
        &format!("dns:localhost:{d}"),
    ]);
    let base = format!("http://{}", fe.addr);
    let _prefill = worker_on(p, &["--role", "prefill"]);
    let _decode = worker_on(d, &["--role", "decode", "--no-prefix-caching"]);
    wait_health(&base, 200).await;
    let (_, body) = health(&base).await;
    let roles: Vec<&str> = body["workers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["role"].as_str().unwrap_or(""))
        .collect();
    assert_eq!(roles, ["prefill", "decode"], "{body}");
    let out = complete(&base).await;
    assert_eq!(out["usage"]["completion_tokens"], 4);
}
