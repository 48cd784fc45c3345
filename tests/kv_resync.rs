//! A KV event subscriber that falls too far behind is cut off with DATA_LOSS, and the
//! frontend's pool then resubscribes and resyncs by snapshot, so that its index ends up
//! exactly what the worker caches. A real worker service (the demo engine, a hub that keeps
//! only 8 batches) on loopback, followed by a real WorkerPool over gRPC.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::grpc::client;
use tandem::engine::EngineHandle;
use tandem::kv::KvEvent;
use tandem::loader::{ModelSpec, load_cpu};
use tandem::router::WorkerPool;
use tandem::wire::proto::worker_server::WorkerServer;
use tandem::wire::proto::*;
use tandem::worker::kv_hub::KvEventHub;
use tandem::worker::service::WorkerService;
use tonic::Code;

/// One batch of 64 blocks, numbered from `first`: large enough that a reader who stops
/// reading fills the connection's flow-control window and the hub's 8 batches.
fn batch(first: u64) -> Vec<KvEvent> {
    let hashes: Vec<u64> = (first..first + 64).collect();
    vec![KvEvent::BlockStored {
        token_ids: vec![7; 64 * 16],
        block_hashes: hashes,
        parent_block_hash: None,
        block_size: 16,
        medium: tandem::kv::Medium::Gpu,
    }]
}

async fn worker(hub: Arc<KvEventHub>) -> String {
    let spec = ModelSpec {
        block_size: 16,
        kv_cache_bytes: 1 << 22,
        max_model_len: Some(256),
        ..ModelSpec::default()
    };
    let engine = Arc::new(EngineHandle::spawn(load_cpu(&spec).unwrap().engine).unwrap());
    let info = ModelInfoResponse {
        model: "tandem-demo".into(),
        block_size: 16,
        max_model_len: 256,
        ..Default::default()
    };
    let svc = WorkerService::new(engine, hub, info, KvLayout::default(), String::new());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(WorkerServer::new(svc))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    addr
}

async fn wait_indexed(pool: &WorkerPool, blocks: usize) {
    for _ in 0..500 {
        if pool.index.read().unwrap().num_blocks(0) == blocks {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "the index holds {} blocks, not {blocks}",
        pool.index.read().unwrap().num_blocks(0)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lagging_subscriber_is_cut_off_and_the_pool_resyncs() {
    let hub = Arc::new(KvEventHub::with_capacity(8));
    let addr = worker(hub.clone()).await;

    // A subscriber that stops reading is cut off with DATA_LOSS, after what it did read.
    let mut c = client(&addr).await;
    let mut sub = c
        .subscribe_kv_events(SubscribeKvEventsRequest { resume_after: None })
        .await
        .unwrap()
        .into_inner();
    assert!(sub.message().await.unwrap().unwrap().snapshot);
    for i in 0..400 {
        hub.publish(batch(1_000_000 + i * 64));
    }
    let mut read = 0;
    let err = loop {
        match sub.message().await {
            Ok(Some(_)) => read += 1,
            Ok(None) => panic!("the stream ended without an error after {read} batches"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.code(), Code::DataLoss, "{err:?}");
    assert!(read < 400, "read {read} of 400 batches");

    // The pool follows the worker; while its index is locked (its follower stalls), 400
    // batches go by, far more than the hub keeps. It is cut off, resubscribes, finds its
    // position gone from the ring, and takes a snapshot: every block, none missing.
    let pool = WorkerPool::new(std::slice::from_ref(&addr)).unwrap();
    pool.start(true);
    wait_indexed(&pool, 400 * 64).await;
    let (p, h) = (pool.clone(), hub.clone());
    tokio::task::spawn_blocking(move || {
        let _stalled = p.index.write().unwrap();
        for i in 0..400 {
            h.publish(batch(2_000_000 + i * 64));
        }
        std::thread::sleep(Duration::from_millis(300));
    })
    .await
    .unwrap();
    wait_indexed(&pool, 800 * 64).await;
}
