//! `tandem serve` and `tandem frontend` as real processes on loopback: the openai client,
//! KV-aware versus round-robin routing, a worker killed mid-stream, a client that disconnects,
//! and malformed requests.

mod common;

use std::time::{Duration, Instant};

use common::grpc::load;
use common::http::{indexed_blocks, metrics_text, post_stream, wait_health, wait_indexed};
use common::procs::{self, Proc, demo_worker, spawn};
use common::python::run_script;
use futures::StreamExt;
use serde_json::{Value, json};

fn serve(workers: usize, router: &str) -> Proc {
    procs::serve(&["--workers", &workers.to_string(), "--router", router]).0
}

async fn post(base: &str, path: &str, body: Value) -> (u16, Value) {
    let r = reqwest::Client::new()
        .post(format!("{base}{path}"))
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap_or(Value::Null))
}

fn completion(prompt: Vec<u32>, max_tokens: u32) -> Value {
    json!({"model": "tandem-demo", "prompt": prompt, "max_tokens": max_tokens, "temperature": 0, "ignore_eos": true})
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openai_client_streams_chat_and_completions() {
    let s = serve(2, "kv");
    let base = format!("http://{}", s.addr);
    wait_health(&base, 200).await;
    let out = tokio::task::spawn_blocking(move || {
        run_script("openai_client.py", &[&base, "tandem-demo"])
    })
    .await
    .unwrap();
    let v: Value = serde_json::from_str(out.trim()).unwrap();
    assert!(v["chat_chunks"].as_u64().unwrap() >= 3, "{v}");
    assert_eq!(v["chat_finish"], json!(["length"]));
    assert_eq!(v["chat_usage"], 8);
    assert!(v["completion_chunks"].as_u64().unwrap() >= 2, "{v}");
    assert_eq!(
        v["completion_text"], v["full_text"],
        "streamed and whole greedy text agree"
    );
    assert_eq!(
        (v["full_logprobs"].as_u64(), v["full_usage"].as_u64()),
        (Some(6), Some(6))
    );
    assert!(v["chat_logprobs"].as_u64().unwrap() >= 1);
    assert!(
        v["bad_request"].as_str().unwrap().contains("temperature"),
        "{v}"
    );
}

/// Cached prompt tokens reported for a request that shares `prefix` with an earlier one.
async fn cached_after(base: &str, prefix: &[u32], suffix: u32) -> u64 {
    let mut p = prefix.to_vec();
    p.extend([suffix, suffix + 1, suffix + 2]);
    let (status, v) = post(base, "/v1/completions", completion(p, 1)).await;
    assert_eq!(status, 200, "{v}");
    v["usage"]["prompt_tokens_details"]["cached_tokens"]
        .as_u64()
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kv_routing_follows_the_prefix_and_round_robin_rotates() {
    let kv = serve(2, "kv");
    let kv_base = format!("http://{}", kv.addr);
    let rr = serve(2, "round-robin");
    let rr_base = format!("http://{}", rr.addr);
    wait_health(&kv_base, 200).await;
    wait_health(&rr_base, 200).await;
    for round in 0..4u32 {
        let prefix: Vec<u32> = (0..96).map(|i| (i * 5 + round * 41) % 256).collect();
        // KV: after the first request's blocks are indexed, every follow-up lands on its worker.
        let before = indexed_blocks(&kv_base).await;
        assert_eq!(cached_after(&kv_base, &prefix, 200).await, 0);
        wait_indexed(&kv_base, before + 6).await;
        for k in 0..3 {
            assert_eq!(
                cached_after(&kv_base, &prefix, 210 + k).await,
                96,
                "kv round {round} follow-up {k}"
            );
        }
    }
    // Round-robin: the second request goes to the other worker (no hit), the third comes back.
    let prefix: Vec<u32> = (0..96).map(|i| (i * 3 + 7) % 256).collect();
    let hits = [
        cached_after(&rr_base, &prefix, 200).await,
        cached_after(&rr_base, &prefix, 210).await,
        cached_after(&rr_base, &prefix, 220).await,
    ];
    assert_eq!(hits, [0, 0, 96]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_generation_moves_to_another_and_it_is_routed_around() {
    // Slow steps: the long request is surely running when its worker is killed.
    let slow = ["--debug-step-delay-ms", "20"];
    let mut workers = vec![demo_worker(&slow), demo_worker(&slow)];
    let addrs = format!("{},{}", workers[0].addr, workers[1].addr);
    let fe = spawn(&[
        "frontend",
        "--port",
        "0",
        "--workers",
        &addrs,
        "--router",
        "round-robin",
    ]);
    let base = format!("http://{}", fe.addr);
    wait_health(&base, 200).await;
    let mut body = completion((0..20).collect(), 200);
    body["stream"] = json!(true);
    body["stream_options"] = json!({"include_usage": true});
    let mut stream = Box::pin(post_stream(&base, "/v1/completions", &body).await);
    stream.next().await.unwrap().unwrap();
    // Find the worker running it and kill it.
    let mut victim = None;
    for (i, w) in workers.iter().enumerate() {
        if load(&w.addr).await.running == 1 {
            victim = Some(i);
        }
    }
    let victim = victim.expect("one worker runs the request");
    let mut dead = workers.remove(victim);
    dead.child.kill().unwrap();
    dead.child.wait().unwrap();
    let started = Instant::now();
    let mut rest = String::new();
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(20), stream.next())
        .await
        .expect("the stream hangs")
    {
        match chunk {
            Ok(b) => rest.push_str(&String::from_utf8_lossy(&b)),
            Err(_) => break,
        }
    }
    // The generation went on, on the other worker, from the tokens the client had: every
    // token asked for arrives, and the frontend counts the move.
    let tail = &rest[rest.len().saturating_sub(600)..];
    assert!(!rest.contains("\"error\""), "{tail}");
    assert!(rest.contains("\"finish_reason\":\"length\""), "{tail}");
    assert!(rest.contains("\"completion_tokens\":200"), "{tail}");
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        metrics_text(&base)
            .await
            .contains("tandem:failovers_total{path=\"retry\"} 1"),
        "the move is counted"
    );
    // New requests go to the survivor, and /health says a worker is down.
    for _ in 0..4 {
        let (status, v) = post(&base, "/v1/completions", completion(vec![1, 2, 3], 2)).await;
        assert_eq!(status, 200, "{v}");
    }
    let health = reqwest::get(format!("{base}/health"))
        .await
        .unwrap()
        .status();
    assert_eq!(health, 503);
    // A worker that comes back on the same address rejoins the pool and takes requests.
    let port = dead.addr.rsplit(':').next().unwrap().to_string();
    drop(dead);
    let back = demo_worker(&["--port", &port]);
    wait_health(&base, 200).await;
    for _ in 0..4 {
        let (status, v) = post(
            &base,
            "/v1/completions",
            completion((100..120).collect(), 2),
        )
        .await;
        assert_eq!(status, 200, "{v}");
    }
    assert!(
        load(&back.addr).await.cached_blocks >= 1,
        "round-robin sent the revived worker nothing"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_disconnects_frees_its_blocks() {
    // 50 ms a step: the 400 tokens asked for would take 20 s; the abort must end it at once.
    let w = demo_worker(&["--debug-step-delay-ms", "50"]);
    let fe = spawn(&["frontend", "--port", "0", "--workers", &w.addr]);
    let base = format!("http://{}", fe.addr);
    wait_health(&base, 200).await;
    let mut body = json!({"model": "tandem-demo", "messages": [{"role": "user", "content": "tell me everything"}],
        "max_tokens": 400, "stream": true, "ignore_eos": true});
    body["temperature"] = json!(0.5);
    let mut stream = Box::pin(post_stream(&base, "/v1/chat/completions", &body).await);
    // The first chunk opens the assistant's turn; wait for generated text.
    let mut seen = String::new();
    while !seen.contains("\"content\":\"") || seen.matches("data:").count() < 3 {
        seen.push_str(&String::from_utf8_lossy(
            &stream.next().await.unwrap().unwrap(),
        ));
    }
    assert_eq!(load(&w.addr).await.running, 1);
    drop(stream);
    for _ in 0..100 {
        let l = load(&w.addr).await;
        if l.running == 0 && l.waiting == 0 {
            assert_eq!(l.used_blocks, 0);
            assert_eq!(l.aborted_requests, 1, "the worker aborted the request");
            assert!(
                l.generated_tokens < 100,
                "{} of 400 tokens were generated",
                l.generated_tokens
            );
            let metrics = metrics_text(&base).await;
            assert!(
                metrics
                    .lines()
                    .any(|m| m.starts_with("tandem:requests_total")
                        && m.contains("outcome=\"abort\"")
                        && m.ends_with(" 1")),
                "{metrics}"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("the request kept running after its client left");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_openai_errors() {
    let s = serve(1, "kv");
    let base = format!("http://{}", s.addr);
    wait_health(&base, 200).await;
    let chat = |extra: Value| {
        let mut b =
            json!({"model": "tandem-demo", "messages": [{"role": "user", "content": "hi"}]});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        b
    };
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "/v1/chat/completions",
            json!({"model": "nope", "messages": [{"role": "user", "content": "hi"}]}),
            "model",
        ),
        (
            "/v1/chat/completions",
            json!({"model": "tandem-demo", "messages": []}),
            "messages",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"max_tokens": 0})),
            "max_tokens",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"temperature": -0.5})),
            "temperature",
        ),
        ("/v1/chat/completions", chat(json!({"top_p": 0})), "top_p"),
        ("/v1/chat/completions", chat(json!({"top_p": 1.5})), "top_p"),
        ("/v1/chat/completions", chat(json!({"n": 0})), "n"),
        (
            "/v1/completions",
            json!({"model": "tandem-demo", "prompt": vec!["x"; 20], "n": 64, "temperature": 1}),
            "generations",
        ),
        // The extension fields, out of range.
        ("/v1/chat/completions", chat(json!({"top_k": -3})), "top_k"),
        ("/v1/chat/completions", chat(json!({"min_p": 1.5})), "min_p"),
        (
            "/v1/chat/completions",
            chat(json!({"repetition_penalty": 0})),
            "repetition_penalty",
        ),
        (
            "/v1/completions",
            json!({"model": "tandem-demo", "prompt": "x", "presence_penalty": 2.5}),
            "presence_penalty",
        ),
        (
            "/v1/completions",
            json!({"model": "tandem-demo", "prompt": "x", "frequency_penalty": -3}),
            "frequency_penalty",
        ),
        (
            "/v1/completions",
            json!({"model": "tandem-demo", "prompt": "x", "top_k": "many"}),
            "malformed",
        ),
        (
            "/v1/chat/completions",
            chat(json!({"n": 2, "temperature": 0})),
            "greedy",
        ),
        (
            "/v1/completions",
            json!({"model": "tandem-demo", "prompt": vec![5; 600]}),
            "maximum context length",
        ),
        (
            "/v1/completions",
            json!({"model": "tandem-demo", "prompt": [1, 2], "max_tokens": 600}),
            "(600 > 512 - 2)",
        ),
        (
            "/v1/completions",
            json!({"model": "tandem-demo", "prompt": ""}),
            "empty",
        ),
        (
            "/v1/completions",
            json!({"model": "tandem-demo", "prompt": [1, 99999]}),
            "vocabulary",
        ),
        (
            "/v1/completions",
            json!({"model": "tandem-demo"}),
            "malformed",
        ),
    ];
    for (path, body, want) in cases {
        let (status, v) = post(&base, path, body.clone()).await;
        assert_eq!(status, 400, "{body}: {v}");
        assert_eq!(v["error"]["type"], "invalid_request_error", "{v}");
        let msg = format!("{} {}", v["error"]["message"], v["error"]["param"]);
        assert!(msg.contains(want), "{body}: {msg} should mention {want}");
    }
    let http = reqwest::Client::new();
    let r = http
        .post(format!("{base}/v1/completions"))
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let v: Value = r.json().await.unwrap();
    assert!(
        v["error"]["message"]
            .as_str()
            .unwrap()
            .contains("malformed")
    );
    let huge = format!(
        "{{\"model\": \"tandem-demo\", \"prompt\": \"{}\"}}",
        "a".repeat(9 << 20)
    );
    let r = http
        .post(format!("{base}/v1/completions"))
        .header("content-type", "application/json")
        .body(huge)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 413);
    // The server is still fine.
    let (status, _) = post(&base, "/v1/completions", completion(vec![1, 2], 2)).await;
    assert_eq!(status, 200);
    // The limit is --max-request-body-bytes.
    let (_small, small) = common::procs::serve(&["--max-request-body-bytes", "1000"]);
    wait_health(&small, 200).await;
    let (status, _) = post(&small, "/v1/completions", completion(vec![1; 100], 2)).await;
    assert_eq!(status, 200, "a 300-byte body passes");
    let (status, _) = post(&small, "/v1/completions", completion(vec![1; 600], 2)).await;
    assert_eq!(status, 413, "a 1,300-byte body does not");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_strings_end_the_text_and_metrics_count_it() {
    let s = serve(1, "round-robin");
    let base = format!("http://{}", s.addr);
    wait_health(&base, 200).await;
    // A seeded request's text is deterministic: learn it, then stop inside it.
    let ask = |stop: Option<&str>| {
        let mut b = json!({"model": "tandem-demo", "prompt": "The quick brown fox", "max_tokens": 24, "temperature": 1, "seed": 7, "ignore_eos": true});
        if let Some(st) = stop {
            b["stop"] = json!([st]);
        }
        b
    };
    let (status, full) = post(&base, "/v1/completions", ask(None)).await;
    assert_eq!(status, 200, "{full}");
    let text = full["choices"][0]["text"].as_str().unwrap().to_string();
    let chars: Vec<char> = text.chars().collect();
    assert!(chars.len() >= 6, "{text:?}");
    let stop: String = chars[3..5].iter().collect();
    let cut = text.find(&stop).unwrap();
    let (status, v) = post(&base, "/v1/completions", ask(Some(&stop))).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["choices"][0]["text"].as_str().unwrap(), &text[..cut]);
    assert_eq!(v["choices"][0]["finish_reason"], "stop");
    let metrics = metrics_text(&base).await;
    for want in [
        "tandem:time_to_first_token_seconds_count{model=\"tandem-demo\"} 2",
        "tandem:e2e_request_latency_seconds_count{model=\"tandem-demo\"} 2",
        "tandem:requests_total{model=\"tandem-demo\",outcome=\"stop\"} 1",
        "tandem:requests_total{model=\"tandem-demo\",outcome=\"length\"} 1",
    ] {
        assert!(metrics.contains(want), "/metrics lacks {want}:\n{metrics}");
    }
    assert!(metrics.contains("tandem:inter_token_latency_seconds_bucket"));
}
