//! The workers behind a frontend: gRPC clients, health, load, and the KV event feed of the
//! index. A worker that fails a health check or a call leaves the pool until it answers again.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::Duration;

use tonic::transport::{Channel, Endpoint};

use super::index::KvIndex;
use crate::kv::KvEvent;
use crate::server::proto::{self, kv_event::Event, worker_client::WorkerClient};

/// How often health and load are polled.
pub const POLL_INTERVAL: Duration = Duration::from_millis(250);

/// One worker as the router sees it.
pub struct WorkerHandle {
    /// Its gRPC address (host:port).
    pub addr: String,
    /// A client (cheap to clone).
    pub client: WorkerClient<Channel>,
    healthy: AtomicBool,
    /// Requests the router sent it that have not finished.
    pub in_flight: AtomicUsize,
    /// KV blocks those requests hold, by the router's own count.
    pub active_blocks: AtomicUsize,
    /// Its last reported load.
    pub load: Mutex<proto::LoadResponse>,
    info: OnceLock<proto::ModelInfoResponse>,
    last_event: AtomicU64,
}

impl WorkerHandle {
    /// Whether it answered its last health check and call.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Acquire)
    }

    /// Takes it out of the pool until a health check succeeds.
    pub fn mark_dead(&self) {
        if self.healthy.swap(false, Ordering::AcqRel) {
            tracing::warn!(worker = %self.addr, "worker left the pool");
        }
    }

    /// Puts it (back) into the pool.
    pub fn mark_healthy(&self) {
        if !self.healthy.swap(true, Ordering::AcqRel) {
            tracing::info!(worker = %self.addr, "worker joined the pool");
        }
    }

    /// Records its model info (the first answer wins: a worker's model does not change).
    pub fn set_info(&self, info: proto::ModelInfoResponse) {
        let _ = self.info.set(info);
    }

    /// Its model info, once it has answered.
    pub fn info(&self) -> Option<&proto::ModelInfoResponse> {
        self.info.get()
    }
}

/// All workers, and the KV index their events feed.
pub struct WorkerPool {
    /// The workers, in the order given.
    pub workers: Vec<Arc<WorkerHandle>>,
    /// Which worker holds which block.
    pub index: RwLock<KvIndex>,
}

impl WorkerPool {
    /// Clients for `addrs` (connected lazily: a worker may come up later).
    pub fn new(addrs: &[String]) -> Result<Arc<Self>, String> {
        if addrs.is_empty() || addrs.len() > super::index::MAX_WORKERS {
            return Err(format!(
                "give between 1 and {} workers",
                super::index::MAX_WORKERS
            ));
        }
        let mut workers = Vec::new();
        for a in addrs {
            let ep = Endpoint::from_shared(format!("http://{a}"))
                .map_err(|e| format!("bad worker address {a}: {e}"))?
                .connect_timeout(Duration::from_secs(2));
            workers.push(Arc::new(WorkerHandle {
                addr: a.clone(),
                client: WorkerClient::new(ep.connect_lazy()),
                healthy: AtomicBool::new(false),
                in_flight: AtomicUsize::new(0),
                active_blocks: AtomicUsize::new(0),
                load: Mutex::new(proto::LoadResponse::default()),
                info: OnceLock::new(),
                last_event: AtomicU64::new(0),
            }));
        }
        Ok(Arc::new(WorkerPool {
            index: RwLock::new(KvIndex::new(workers.len())),
            workers,
        }))
    }

    /// Starts the health/load poller of every worker, and their KV event feeds when `track_kv`.
    pub fn start(self: &Arc<Self>, track_kv: bool) {
        for (i, w) in self.workers.iter().enumerate() {
            tokio::spawn(poll_health(w.clone()));
            if track_kv {
                tokio::spawn(follow_events(self.clone(), i));
            }
        }
    }

    /// Whether every worker is healthy.
    pub fn all_healthy(&self) -> bool {
        self.workers.iter().all(|w| w.is_healthy())
    }

    /// The block size the workers hash with (from the first that answered).
    pub fn block_size(&self) -> Option<usize> {
        self.workers
            .iter()
            .find_map(|w| w.info())
            .map(|i| i.block_size as usize)
    }
}

async fn poll_health(w: Arc<WorkerHandle>) {
    loop {
        let mut c = w.client.clone();
        let ok = tokio::time::timeout(POLL_INTERVAL * 4, async {
            let ready = c
                .health(proto::HealthRequest {})
                .await
                .ok()?
                .into_inner()
                .ready;
            if w.info.get().is_none() {
                let info = c
                    .model_info(proto::ModelInfoRequest {})
                    .await
                    .ok()?
                    .into_inner();
                let _ = w.info.set(info);
            }
            let load = c.load(proto::LoadRequest {}).await.ok()?.into_inner();
            *w.load.lock().ok()? = load;
            ready.then_some(())
        })
        .await
        .ok()
        .flatten()
        .is_some();
        if ok {
            w.mark_healthy();
        } else {
            w.mark_dead();
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// Converts a gRPC event to the engine's.
fn event_of(e: proto::KvEvent) -> Option<KvEvent> {
    Some(match e.event? {
        Event::Stored(s) => KvEvent::BlockStored {
            block_hashes: s.block_hashes,
            parent_block_hash: s.parent_block_hash,
            token_ids: s.token_ids,
            block_size: s.block_size as usize,
        },
        Event::Removed(r) => KvEvent::BlockRemoved {
            block_hashes: r.block_hashes,
        },
        Event::Cleared(_) => KvEvent::AllBlocksCleared,
    })
}

/// Keeps worker `i`'s part of the index current, resubscribing (and resyncing) after errors.
async fn follow_events(pool: Arc<WorkerPool>, i: usize) {
    let w = pool.workers[i].clone();
    loop {
        let resume = match w.last_event.load(Ordering::Acquire) {
            0 => None,
            n => Some(n),
        };
        let mut c = w.client.clone();
        if let Ok(resp) = c
            .subscribe_kv_events(proto::SubscribeKvEventsRequest {
                resume_after: resume,
            })
            .await
        {
            let mut stream = resp.into_inner();
            while let Ok(Some(batch)) = stream.message().await {
                let mut index = match pool.index.write() {
                    Ok(ix) => ix,
                    Err(_) => return,
                };
                if batch.snapshot {
                    index.clear(i);
                }
                for e in batch.events.into_iter().filter_map(event_of) {
                    index.apply(i, &e);
                }
                w.last_event.store(batch.sequence, Ordering::Release);
            }
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}
