//! KV events over ZMQ in vLLM's wire format, read by a real pyzmq + msgpack subscriber.

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Command, Stdio};

use common::procs::demo_worker;
use common::python::python;
use tandem::server::proto::worker_client::WorkerClient;
use tandem::server::proto::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_vllm_style_subscriber_decodes_block_stored() {
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let endpoint = format!("tcp://127.0.0.1:{port}");
    let w = demo_worker(&[
        "--kv-events-endpoint",
        &format!("tcp://*:{port}"),
        "--kv-events-topic",
        "kv@demo",
    ]);
    let script = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/tests/python/zmq_subscriber.py"
    );
    let mut sub = Command::new(python())
        .arg(script)
        .arg(&endpoint)
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(sub.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "ready");
    // ZMQ drops messages published before the subscription reaches the socket: keep sending
    // fresh prompts until the subscriber reports one.
    let mut c = WorkerClient::connect(format!("http://{}", w.addr))
        .await
        .unwrap();
    let reader = std::thread::spawn(move || lines.next().unwrap().unwrap());
    let mut prompts = Vec::new();
    for round in 0..50u32 {
        let prompt: Vec<u32> = (0..32).map(|i| (i * 3 + round * 11) % 256).collect();
        prompts.push(prompt.clone());
        let sampling = SamplingParams {
            top_p: 1.0,
            repetition_penalty: 1.0,
            max_tokens: 1,
            ..Default::default()
        };
        let req = GenerateRequest {
            request_id: format!("r{round}"),
            prompt_token_ids: prompt,
            sampling: Some(sampling),
        };
        let mut s = c.generate(req).await.unwrap().into_inner();
        while s.message().await.unwrap().is_some() {}
        if reader.is_finished() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let line = reader.join().unwrap();
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["topic"], "kv@demo");
    assert_eq!(v["block_size"], 16);
    assert_eq!(v["medium"], "GPU");
    assert_eq!(v["dp_rank"], 0);
    assert!(v["parent"].is_null());
    let tokens: Vec<u32> = v["token_ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_u64().unwrap() as u32)
        .collect();
    let prompt = prompts
        .iter()
        .find(|p| p[..tokens.len()] == tokens[..])
        .expect("the event carries a prompt's tokens");
    let mut hashes = Vec::new();
    tandem::kv::hash::extend_sequence_hashes(&mut hashes, prompt, 16);
    let got: Vec<u64> = v["block_hashes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h.as_u64().unwrap())
        .collect();
    assert_eq!(
        got, hashes,
        "hashes are Dynamo's XXH3 chain over the prompt"
    );
    let _ = sub.wait();
}
