//! Prefill and decode workers as real processes: Prefill holds the prompt's KV, Decode pulls
//! it over the source's KV socket (TCP), releases it at the source and streams the rest.

mod common;

use std::io::{Read, Write};
use std::time::Duration;

use common::grpc::{client, greedy, request, used_when_idle};
use common::procs::demo_worker;
use tandem::wire::proto::worker_client::WorkerClient;
use tandem::wire::proto::*;
use tonic::Code;
use tonic::transport::Channel;

async fn generate(c: &mut WorkerClient<Channel>, req: GenerateRequest) -> Vec<u32> {
    let mut s = c.generate(req).await.unwrap().into_inner();
    let mut out = Vec::new();
    while let Some(r) = s.message().await.unwrap() {
        out.extend(r.token_id);
    }
    out
}

/// One pull over the raw KV socket of the worker at `addr` (its layout's `kv_port`), as a
/// decode worker makes it: the reply, and every byte that follows it.
async fn raw_pull(addr: &str, port: u32, req: PullKvRequest) -> (PullKvReply, Vec<u8>) {
    use prost::Message;
    let host = addr.rsplit_once(':').unwrap().0.to_string();
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect((host.as_str(), port as u16)).unwrap();
        let body = req.encode_to_vec();
        s.write_all(&(body.len() as u32).to_le_bytes()).unwrap();
        s.write_all(&body).unwrap();
        let mut len = [0u8; 4];
        s.read_exact(&mut len).unwrap();
        let mut frame = vec![0; u32::from_le_bytes(len) as usize];
        s.read_exact(&mut frame).unwrap();
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).unwrap();
        (PullKvReply::decode(&frame[..]).unwrap(), rest)
    })
    .await
    .unwrap()
}

/// Prefill on `p`, decode on `d`; returns all tokens.
async fn disaggregated(
    p: &mut WorkerClient<Channel>,
    d: &mut WorkerClient<Channel>,
    req: GenerateRequest,
) -> Result<Vec<u32>, tonic::Status> {
    let pre = p.prefill(req.clone()).await?.into_inner();
    assert!(pre.finish_reason.is_empty());
    let decode = DecodeRequest {
        request: Some(req),
        first_token: pre.first_token,
        source_addr: pre.transfer_addr.clone(),
        source_engine_id: pre.engine_id.clone(),
        source_block_ids: pre.block_ids.clone(),
    };
    let mut s = d.decode(decode).await?.into_inner();
    let mut out = vec![pre.first_token];
    while let Some(r) = s.message().await? {
        out.extend(r.token_id);
    }
    Ok(out)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn disaggregated_output_equals_aggregated_and_the_source_is_freed() {
    let (a, p, d) = (
        demo_worker(&[]),
        demo_worker(&["--kv-hold-timeout", "1"]),
        demo_worker(&["--no-prefix-caching"]),
    );
    let (mut ac, mut pc, mut dc) = (
        client(&a.addr).await,
        client(&p.addr).await,
        client(&d.addr).await,
    );
    let base: Vec<u32> = (0..70).map(|i| (i * 11) % 256).collect();
    for (i, extra) in [0u32, 5, 9].iter().enumerate() {
        // The later prompts share the first's 64-token prefix: prefix hits on the prefill worker.
        let mut prompt = base.clone();
        prompt.truncate(64 + *extra as usize);
        prompt.extend((0..*extra).map(|t| 200 + t));
        let want = generate(
            &mut ac,
            request(&format!("a{i}"), prompt.clone(), greedy(9)),
        )
        .await;
        let got = disaggregated(
            &mut pc,
            &mut dc,
            request(&format!("x{i}"), prompt, greedy(9)),
        )
        .await
        .unwrap();
        assert_eq!(got, want, "prompt {i}");
    }
    // Source blocks are released after the pull; nothing stays in use anywhere.
    assert_eq!(used_when_idle(&mut dc, 0).await, 0);
    assert_eq!(used_when_idle(&mut pc, 0).await, 0);

    // A prefill nobody pulls is freed after the hold timeout (1 s here).
    let pre = pc
        .prefill(request("orphan", (0..40).collect(), greedy(5)))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(pre.block_ids.len(), 3);
    assert_eq!(used_when_idle(&mut pc, 3).await, 3);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    // Read once, not polled: freed by now, not some time later.
    let load = pc.load(LoadRequest {}).await.unwrap().into_inner();
    assert_eq!((load.running, load.waiting, load.used_blocks), (0, 0, 0));
    // ... and a pull that comes too late finds nothing, leaking nothing on the decode side.
    let late = DecodeRequest {
        request: Some(request("orphan", (0..40).collect(), greedy(5))),
        first_token: pre.first_token,
        source_addr: pre.transfer_addr,
        source_engine_id: pre.engine_id,
        source_block_ids: pre.block_ids,
    };
    // The source's hold expired: DATA_LOSS from the source (the frontend prefills again).
    let err = dc.decode(late).await.err().unwrap();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    assert!(
        err.message().starts_with(tandem::wire::KV_SOURCE_LOST)
            && err.message().contains("no KV is held"),
        "{err:?}"
    );
    assert_eq!(used_when_idle(&mut dc, 0).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_prefill_worker_or_a_layout_mismatch_fails_cleanly() {
    let (mut p, d) = (demo_worker(&[]), demo_worker(&[]));
    let (mut pc, mut dc) = (client(&p.addr).await, client(&d.addr).await);
    let req = request("r", (0..50).collect(), greedy(6));
    let pre = pc.prefill(req.clone()).await.unwrap().into_inner();
    // The prefill worker dies before the pull: the decode request ends with an error, and the
    // decode worker's reservation goes back to its pool.
    p.child.kill().unwrap();
    p.child.wait().unwrap();
    let decode = DecodeRequest {
        request: Some(req),
        first_token: pre.first_token,
        source_addr: pre.transfer_addr,
        source_engine_id: pre.engine_id,
        source_block_ids: pre.block_ids,
    };
    let err = dc.decode(decode).await.err().unwrap();
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    assert!(err.message().contains("Unavailable"), "{err:?}");
    assert_eq!(used_when_idle(&mut dc, 0).await, 0);

    // A decode worker whose block size differs is refused by the handshake.
    let p2 = demo_worker(&[]);
    let odd = common::procs::spawn(&[
        "worker",
        "--max-model-len",
        "512",
        "--kv-cache-gib",
        "0.05",
        "--block-size",
        "32",
    ]);
    let (mut pc2, mut oc) = (client(&p2.addr).await, client(&odd.addr).await);
    let req = request("m", (0..64).collect(), greedy(4));
    let pre = pc2.prefill(req.clone()).await.unwrap().into_inner();
    let decode = DecodeRequest {
        request: Some(req),
        first_token: pre.first_token,
        source_addr: pre.transfer_addr,
        source_engine_id: pre.engine_id,
        source_block_ids: pre.block_ids,
    };
    let err = oc.decode(decode).await.err().unwrap();
    assert!(err.message().contains("blocks here"), "{err:?}");
    assert_eq!(used_when_idle(&mut oc, 0).await, 0);
    // The transfer handshake itself refuses a puller whose layout differs, naming the field.
    let theirs = oc
        .get_kv_layout(KvLayoutRequest {})
        .await
        .unwrap()
        .into_inner();
    let source = pc2
        .get_kv_layout(KvLayoutRequest {})
        .await
        .unwrap()
        .into_inner();
    let pull = PullKvRequest {
        request_id: "m".into(),
        block_ids: vec![0],
        layout: Some(theirs),
    };
    let (reply, rest) = raw_pull(&p2.addr, source.kv_port, pull).await;
    assert_eq!(reply.status(), pull_kv_reply::Status::Mismatch);
    assert!(
        reply.message.contains("layout mismatch") && reply.message.contains("block size 16 vs 32"),
        "{reply:?}"
    );
    assert!(rest.is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tensor_parallel_workers_move_each_ranks_shard() {
    let tp2 = ["--tensor-parallel-size", "2"];
    let (a, p, d) = (demo_worker(&tp2), demo_worker(&tp2), demo_worker(&tp2));
    let (mut ac, mut pc, mut dc) = (
        client(&a.addr).await,
        client(&p.addr).await,
        client(&d.addr).await,
    );
    let layout = pc
        .get_kv_layout(KvLayoutRequest {})
        .await
        .unwrap()
        .into_inner();
    assert_eq!((layout.tp_size, layout.kv_heads_per_rank), (2, 1));
    let prompt: Vec<u32> = (0..45).map(|i| (i * 5) % 256).collect();
    let want = generate(&mut ac, request("a", prompt.clone(), greedy(7))).await;
    let got = disaggregated(&mut pc, &mut dc, request("x", prompt, greedy(7)))
        .await
        .unwrap();
    assert_eq!(got, want);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_transfers_full_caches_and_bad_addresses_are_refused_cleanly() {
    // A decode worker of 32 blocks of 16 tokens, its steps slowed so that a long request
    // holds most of them while the others arrive.
    let p = demo_worker(&[]);
    let d = common::procs::spawn(&[
        "worker",
        "--max-model-len",
        "512",
        "--block-size",
        "16",
        "--kv-cache-gib",
        "0.001",
        "--debug-step-delay-ms",
        "50",
    ]);
    let (mut pc, mut dc) = (client(&p.addr).await, client(&d.addr).await);

    // The KV socket serves held blocks only: whole, to a puller of the same layout.
    let req = request("dl", (0..40).collect(), greedy(4));
    let pre = pc.prefill(req.clone()).await.unwrap().into_inner();
    let source = pc
        .get_kv_layout(KvLayoutRequest {})
        .await
        .unwrap()
        .into_inner();
    let pull = |id: &str, blocks: Vec<u32>| PullKvRequest {
        request_id: id.into(),
        block_ids: blocks,
        layout: Some(source.clone()),
    };
    let (reply, _) = raw_pull(
        &pre.transfer_addr,
        source.kv_port,
        pull("nobody", pre.block_ids.clone()),
    )
    .await;
    assert_eq!(reply.status(), pull_kv_reply::Status::NotHeld, "{reply:?}");
    let (reply, _) = raw_pull(
        &pre.transfer_addr,
        source.kv_port,
        pull("dl", vec![pre.block_ids[0], 999]),
    )
    .await;
    assert_eq!(reply.status(), pull_kv_reply::Status::Invalid, "{reply:?}");
    assert!(reply.message.contains("block 999 is not held"), "{reply:?}");
    let (reply, rest) = raw_pull(
        &pre.transfer_addr,
        source.kv_port,
        pull("dl", pre.block_ids.clone()),
    )
    .await;
    assert_eq!(reply.status(), pull_kv_reply::Status::Ok, "{reply:?}");
    let want = pre.block_ids.len() as u64 * u64::from(source.num_layers) * source.block_bytes;
    assert_eq!((reply.bytes, rest.len() as u64), (want, want));
    assert!(
        rest.iter().any(|&b| b != 0),
        "the KV of a computed prompt is not all zeros"
    );
    // Garbage on the socket closes that connection only.
    let host_port = format!("127.0.0.1:{}", source.kv_port);
    tokio::task::spawn_blocking(move || {
        let mut s = std::net::TcpStream::connect(host_port).unwrap();
        s.write_all(&[0xff; 64]).unwrap();
        let mut rest = Vec::new();
        let _ = s.read_to_end(&mut rest);
    })
    .await
    .unwrap();
    assert!(
        pc.release_kv(ReleaseKvRequest {
            request_id: "dl".into()
        })
        .await
        .unwrap()
        .into_inner()
        .released
    );
    // Released: the socket no longer serves it.
    let (reply, _) = raw_pull(
        &pre.transfer_addr,
        source.kv_port,
        pull("dl", pre.block_ids.clone()),
    )
    .await;
    assert_eq!(reply.status(), pull_kv_reply::Status::NotHeld, "{reply:?}");

    // Resource exhausted: a 400-token prompt holds 25 of the decode worker's 32 blocks; a
    // 200-token prompt (13 blocks) finds no room, and nothing leaks on either side.
    let mut long = dc
        .generate(request("long", (0..400).collect(), greedy(100)))
        .await
        .unwrap()
        .into_inner();
    long.message().await.unwrap().unwrap();
    let req = request("full", (0..200).collect(), greedy(4));
    let pre = pc.prefill(req.clone()).await.unwrap().into_inner();
    let decode = DecodeRequest {
        request: Some(req),
        first_token: pre.first_token,
        source_addr: pre.transfer_addr.clone(),
        source_engine_id: pre.engine_id.clone(),
        source_block_ids: pre.block_ids.clone(),
    };
    let err = dc.decode(decode.clone()).await.err().unwrap();
    assert_eq!(err.code(), Code::ResourceExhausted, "{err:?}");
    drop(long);
    assert_eq!(used_when_idle(&mut dc, 0).await, 0);

    // Bad addresses: one that does not parse, one where nothing listens.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    for (addr, code) in [
        ("not an address at all", Code::InvalidArgument),
        (&*format!("127.0.0.1:{port}"), Code::DataLoss),
    ] {
        let bad = DecodeRequest {
            source_addr: addr.to_string(),
            ..decode.clone()
        };
        let err = dc.decode(bad).await.err().unwrap();
        assert_eq!(err.code(), code, "{addr}: {err:?}");
        assert_eq!(
            used_when_idle(&mut dc, 0).await,
            0,
            "{addr}: the reservation is freed"
        );
    }
    // The source still holds the prompt's blocks until the pull it waits for, or its timeout.
    assert!(
        pc.release_kv(ReleaseKvRequest {
            request_id: "full".into()
        })
        .await
        .unwrap()
        .into_inner()
        .released
    );
    assert_eq!(used_when_idle(&mut pc, 0).await, 0);
}
