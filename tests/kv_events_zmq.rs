//! KV events over ZMQ in vLLM's wire format: a real pyzmq + msgpack subscriber reads every
//! kind (BlockStored, BlockRemoved on eviction, AllBlocksCleared on a prefix-cache reset) with
//! increasing sequence numbers; and NVIDIA Dynamo's own KV router, following the same stream,
//! computes the prefix overlap the worker itself reports, for hits, misses and evictions.

mod common;

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::grpc::{client, greedy, request};
use common::procs::{Proc, free_port, spawn};
use common::python::python;
use serde_json::Value;
use tandem::wire::proto::worker_client::WorkerClient;
use tandem::wire::proto::*;
use tonic::transport::Channel;

/// A demo worker publishing on `port`, with a cache of `gib`.
fn worker(port: u16, block_size: &str, gib: &str, topic: &str) -> Proc {
    worker_with(port, block_size, gib, topic, &[])
}

fn worker_with(port: u16, block_size: &str, gib: &str, topic: &str, extra: &[&str]) -> Proc {
    let endpoint = format!("tcp://*:{port}");
    let mut args = vec![
        "worker",
        "--max-model-len",
        "512",
        "--block-size",
        block_size,
        "--kv-cache-gib",
        gib,
        "--kv-events-endpoint",
        &endpoint,
        "--kv-events-topic",
        topic,
    ];
    args.extend_from_slice(extra);
    spawn(&args)
}

/// A Python helper of tests/python reading `endpoint`; its stdout lines arrive on the channel.
fn helper(script: &str, args: &[&str]) -> (Child, mpsc::Receiver<String>) {
    let path = format!("{}/tests/python/{script}", env!("CARGO_MANIFEST_DIR"));
    let mut child = Command::new(python())
        .arg(path)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    assert_eq!(
        lines.next().unwrap().unwrap(),
        "ready",
        "{script} did not start"
    );
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for l in lines.map_while(Result::ok) {
            if tx.send(l).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Runs `prompt` to completion (one token); returns the prompt tokens the worker had cached.
async fn run(c: &mut WorkerClient<Channel>, id: &str, prompt: Vec<u32>) -> u32 {
    let mut s = c
        .generate(request(id, prompt, greedy(1)))
        .await
        .unwrap()
        .into_inner();
    let mut cached = 0;
    while let Some(r) = s.message().await.unwrap() {
        cached = r.cached_tokens;
    }
    cached
}

fn prompt(len: usize, salt: u32) -> Vec<u32> {
    (0..len as u32)
        .map(|i| (i * 7 + salt * 131) % 2000)
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vllm_style_subscriber_reads_every_event_kind_in_order() {
    let port = free_port();
    // 32 blocks of 16 tokens: a few prompts evict each other's blocks.
    let w = worker(port, "16", "0.001", "kv@demo");
    let (mut sub, batches) = helper("zmq_subscriber.py", &[&format!("tcp://127.0.0.1:{port}")]);
    let mut c = client(&w.addr).await;
    // ZMQ drops what is published before the subscription reaches the socket: send fresh
    // prompts until the subscriber reports a batch.
    let mut first = None;
    for round in 0..50u32 {
        run(&mut c, &format!("warm{round}"), prompt(40, round)).await;
        if let Ok(b) = batches.recv_timeout(Duration::from_millis(100)) {
            first = Some(b);
            break;
        }
    }
    let first: Value = serde_json::from_str(&first.expect("no KV event arrived")).unwrap();
    // Prompts of 300 tokens in a 512-token cache: each evicts the one before it.
    for i in 0..4 {
        run(&mut c, &format!("big{i}"), prompt(300, 100 + i)).await;
    }
    let reset = c
        .reset_prefix_cache(ResetPrefixCacheRequest {})
        .await
        .unwrap()
        .into_inner();
    assert!(reset.reset, "an idle worker resets its prefix cache");
    let mut all = vec![first];
    let mut kinds = std::collections::BTreeSet::new();
    while kinds.len() < 3 {
        let line = batches
            .recv_timeout(Duration::from_secs(10))
            .unwrap_or_else(|_| panic!("event kinds seen: {kinds:?}"));
        let b: Value = serde_json::from_str(&line).unwrap();
        for e in b["events"].as_array().unwrap() {
            kinds.insert(e["kind"].as_str().unwrap().to_string());
        }
        all.push(b);
    }
    let seqs: Vec<u64> = all.iter().map(|b| b["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[1] > w[0]), "sequences {seqs:?}");
    for b in &all {
        assert_eq!(
            (b["topic"].as_str(), b["dp_rank"].as_u64()),
            (Some("kv@demo"), Some(0))
        );
        for e in b["events"].as_array().unwrap() {
            match e["kind"].as_str().unwrap() {
                "BlockStored" => {
                    assert_eq!(
                        (e["block_size"].as_u64(), e["medium"].as_str()),
                        (Some(16), Some("GPU"))
                    );
                    let n = e["block_hashes"].as_array().unwrap().len();
                    assert_eq!(e["token_ids"].as_array().unwrap().len(), 16 * n);
                }
                "BlockRemoved" => {
                    assert!(!e["block_hashes"].as_array().unwrap().is_empty());
                    assert_eq!(e["medium"], "GPU");
                }
                _ => {}
            }
        }
    }
    let _ = sub.kill();
}

/// Dynamo's router, asked for overlaps line by line.
struct Dynamo {
    child: Child,
    stdin: ChildStdin,
    answers: mpsc::Receiver<String>,
}

impl Dynamo {
    /// Dynamo's router following the worker that publishes on `port`, blocks of 64.
    fn follow(port: u16) -> Self {
        let (mut child, answers) = helper(
            "dynamo_router.py",
            &[&format!("tcp://127.0.0.1:{port}"), "64"],
        );
        let stdin = child.stdin.take().unwrap();
        Dynamo {
            child,
            stdin,
            answers,
        }
    }

    fn overlap(&mut self, tokens: &[u32]) -> u64 {
        self.tiers(tokens).0
    }

    /// Leading blocks on the worker's device, then the further ones in its host tier.
    fn tiers(&mut self, tokens: &[u32]) -> (u64, u64) {
        writeln!(self.stdin, "{}", serde_json::to_string(tokens).unwrap()).unwrap();
        let line = self
            .answers
            .recv_timeout(Duration::from_secs(20))
            .expect("Dynamo's router answers");
        let v = serde_json::from_str::<Value>(&line).unwrap();
        (v["overlap"].as_u64().unwrap(), v["host"].as_u64().unwrap())
    }
}

impl Drop for Dynamo {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs fresh fence prompts until Dynamo's index holds one: events come in order on one
/// socket, so then every event before the fence has been applied too (the first fences also
/// wait out ZMQ's slow joiner; a lost fence is never rerun, since a rerun stores nothing new).
async fn sync(dynamo: &mut Dynamo, c: &mut WorkerClient<Channel>, step: u32) {
    for attempt in 0..100 {
        let p = prompt(70, 10_000 + step * 100 + attempt);
        run(c, &format!("fence{step}-{attempt}"), p.clone()).await;
        tokio::time::sleep(Duration::from_millis(30)).await;
        if dynamo.overlap(&p) == 1 {
            return;
        }
    }
    panic!("Dynamo's router never saw a fence (step {step})");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamos_kv_router_agrees_with_the_worker_on_every_prefix() {
    let port = free_port();
    // 16 blocks of 64 tokens: a few 150-token prompts evict the oldest.
    let w = worker(port, "64", "0.002", "");
    let mut dynamo = Dynamo::follow(port);
    let mut c = client(&w.addr).await;
    let a = prompt(150, 1);
    let b: Vec<u32> = a[..64].iter().copied().chain(prompt(86, 2)).collect();
    let mut overlaps = Vec::new();
    for (step, (p, what)) in [
        (&a, "a miss"),
        (&a, "a hit of both full blocks"),
        (&b, "a hit of the first block"),
        (&a, "after its blocks were evicted"),
    ]
    .into_iter()
    .enumerate()
    {
        if step == 3 {
            for i in 0..6 {
                run(&mut c, &format!("evict{i}"), prompt(150, 50 + i)).await;
            }
        }
        sync(&mut dynamo, &mut c, step as u32).await;
        // Dynamo first, then the worker: the worker's answer is its cache before this request.
        let overlap = dynamo.overlap(p);
        let cached = run(&mut c, &format!("q{step}"), p.clone()).await;
        assert_eq!(
            overlap,
            u64::from(cached) / 64,
            "{what}: Dynamo says {overlap} blocks, the worker had {cached} tokens cached"
        );
        overlaps.push(overlap);
    }
    // The last question comes after an eviction: a's second block went (its first, shared
    // with b and used later, may stay).
    assert_eq!(overlaps[..3], [0, 2, 1]);
    assert!(overlaps[3] < 2, "{overlaps:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dynamos_kv_router_follows_blocks_into_the_host_tier_and_back() {
    let port = free_port();
    // 16 device blocks of 64 tokens behind a host tier of 81.
    let w = worker_with(port, "64", "0.002", "", &["--host-kv-cache-gib", "0.01"]);
    let mut dynamo = Dynamo::follow(port);
    let mut c = client(&w.addr).await;
    let a = prompt(150, 1);
    assert_eq!(run(&mut c, "a", a.clone()).await, 0);
    sync(&mut dynamo, &mut c, 0).await;
    assert_eq!(
        dynamo.tiers(&a),
        (2, 0),
        "a's two full blocks on the device"
    );
    // Eight more prompts of three blocks push a out of 16 device blocks: offloaded, so
    // BlockRemoved GPU and BlockStored CPU.
    for i in 0..8 {
        run(&mut c, &format!("evict{i}"), prompt(150, 50 + i)).await;
    }
    sync(&mut dynamo, &mut c, 1).await;
    assert_eq!(dynamo.tiers(&a), (0, 2), "a's blocks in the host tier");
    // Asked again, a is onboarded: served from the host tier, back on the device.
    assert_eq!(run(&mut c, "a-again", a.clone()).await, 128);
    sync(&mut dynamo, &mut c, 2).await;
    assert_eq!(dynamo.tiers(&a), (2, 0), "a's blocks back on the device");
}
